"""Shared fixtures: tiny CPU training runs and small data files written per test."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hypothesis import settings

from datamodules import PACKAGED_DATA_DIR
from lightning_app.training import FitConfig, FitResult, fit
from lightning_app.warning_filters import HARMLESS_WARNINGS

# CI replays the same examples on every run (a landing should not hinge on a lucky draw); locally hypothesis
# explores new ones each time, and FUZZ_EXAMPLES=2000 searches deeper.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")


def pytest_configure(config: pytest.Config) -> None:
    for message, category, _why in HARMLESS_WARNINGS:
        config.addinivalue_line("filterwarnings", f"ignore:{message}:{category.__module__}.{category.__qualname__}")


@pytest.fixture
def tiny_fit(tmp_path: Path) -> Callable[..., FitResult]:
    """Train a task for a couple of epochs on the CPU, logging under ``tmp_path/runs``."""

    def run(task: str, **overrides) -> FitResult:
        settings = {
            "max_epochs": 2,
            "log_dir": str(tmp_path / "runs"),
            "accelerator": "cpu",
            "enable_progress_bar": False,
            **overrides,
        }
        return fit(FitConfig(task=task, **settings))

    return run


@pytest.fixture
def titanic_dir(tmp_path: Path) -> Path:
    """A writable copy of the bundled Titanic CSVs."""
    target = tmp_path / "titanic"
    shutil.copytree(PACKAGED_DATA_DIR / "titanic", target)
    return target


@pytest.fixture
def covid_dir(tmp_path: Path) -> Path:
    """A writable copy of the bundled COVID-19 file."""
    target = tmp_path / "covid19"
    shutil.copytree(PACKAGED_DATA_DIR / "covid19", target)
    return target


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, FitResult]:
    """One tiny trained run per small task, shared by the tests of the predict / test / export CLIs."""
    log_dir = tmp_path_factory.mktemp("trained")
    return {
        task: fit(
            FitConfig(task=task, max_epochs=2, log_dir=str(log_dir), accelerator="cpu", enable_progress_bar=False)
        )
        for task in ("titanic", "covid19")
    }


def run_exported_model(target: Path, output_format: str, inputs: torch.Tensor) -> torch.Tensor:
    """Outputs of the model ``lightning_app.export`` wrote to ``target`` (TorchScript, or ONNX via onnxruntime)."""
    if output_format == "torchscript":
        return torch.jit.load(str(target / "model.pt"))(inputs)
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(str(target / "model.onnx"))
    return torch.from_numpy(session.run(None, {"inputs": inputs.numpy()})[0])


@pytest.fixture
def run_exported() -> Callable[[Path, str, torch.Tensor], torch.Tensor]:
    return run_exported_model


def _write_image_and_text_run(run_dir: Path, text: str = "a review the model got wrong") -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(run_dir)) as writer:
        for step in (0, 1):
            writer.add_scalar("train/loss", 1.0 - step / 4, step)
            writer.add_scalar("val/loss", 1.1 - step / 4, step)
        writer.add_image("val/predictions", torch.rand(3, 8, 8), 1)
        writer.add_text("val/examples", text, 1)


@pytest.fixture(scope="session")
def write_image_and_text_run() -> Callable[..., None]:
    """Writes a small run holding what the image and text tasks log (an image, a text), for the review checks."""
    return _write_image_and_text_run
