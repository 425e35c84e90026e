"""Shared fixtures: tiny CPU training runs and small data files written per test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hypothesis import settings

from datamodules import PACKAGED_DATA_DIR
from lightning_app.training import FitConfig, FitResult, fit
from lightning_app.warning_filters import HARMLESS_WARNINGS

REPO = Path(__file__).resolve().parents[1]

# One hypothesis profile for local runs and CI: every run replays the same examples (a result should not hinge on
# a lucky draw, and a failure seen on CI reproduces locally). FUZZ_EXAMPLES=2000 searches deeper (still replayable);
# FUZZ_RANDOM=1 draws new examples each run (hypothesis' database then keeps the failures it finds).
settings.register_profile("replay", derandomize=True, database=None)
settings.register_profile("random", derandomize=False)
settings.load_profile("random" if os.environ.get("FUZZ_RANDOM") == "1" else "replay")


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
    import onnxruntime  # in the dev extra: a missing install fails the ONNX tests rather than skipping them

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


# Run in a fresh interpreter: the checkpoint is all the module has (no state left over from training). The encoded
# side scores the DataModule's test batches (its own reading and encoding, built with the checkpoint's DataModule
# settings); the raw side reads the same test rows from the files and scores them through the user-facing entry.
_PARITY_SCRIPT = """
import json, sys
import torch
from lightning_app.inference import load_checkpoint

def score(checkpoint, task, overrides):
    loaded = load_checkpoint(checkpoint, task)
    module, datamodule = loaded.module, loaded.datamodule(**overrides)
    datamodule.prepare_data()
    datamodule.setup("test")
    batches = [datamodule.on_after_batch_transfer(batch, 0) for batch in datamodule.test_dataloader()]

    def encoded():
        return torch.cat([module.predict_encoded(inputs) for inputs, _ in batches])

    if task == "covid19":
        from datamodules.covid import daily_differences, read_counts
        _, _, values = read_counts(datamodule.require_file(datamodule.file_name), datamodule.hparams.counts)
        daily = daily_differences(values) if datamodule.hparams.counts == "cumulative" else values
        first_test_day = len(daily) - len(encoded())
        raw = [module.forecast(1, daily[: first_test_day + i]).point[0].tolist() for i in range(len(encoded()))]
        ends = {"stored_end": module.forecast(3).point.tolist(), "file_end": module.forecast(3, daily).point.tolist()}
        return {"encoded": encoded().tolist(), "raw": raw, **ends}
    if task == "titanic":
        from datamodules.titanic import read_passengers
        raw_inputs = read_passengers(datamodule.require_file("test.csv"), with_label=False)
    elif task == "imdb":
        from datamodules.imdb import read_labeled_texts
        texts = read_labeled_texts(datamodule.split_file("test"))[1]
        raw_inputs = [texts[i] for i in datamodule.test_order.tolist()]  # the DataModule's seeded test order
    else:
        raw_inputs = sorted((datamodule.image_root() / "test").glob("*/*"))

    def rows(records):
        return [[record["probabilities"][name] for name in module.class_names] for record in records]

    scored = {"encoded": rows(module.label_records(encoded())), "raw": rows(module.predict_raw(raw_inputs))}
    # The same with the network's outputs in place of probabilities: a saturated model (probabilities of exactly
    # 0 and 1) would hide a drift in the inputs.
    module.to_predictions = lambda outputs: outputs.squeeze(-1) if outputs.shape[-1:] == (1,) else outputs
    scored["encoded_outputs"] = rows(module.label_records(encoded()))
    scored["raw_outputs"] = rows(module.predict_raw(raw_inputs))
    return scored

print(json.dumps([score(*job) for job in json.loads(sys.argv[1])]))
"""


def score_test_splits_in_fresh_process(*jobs: tuple[str | Path, str, dict[str, str]]) -> list[dict[str, list]]:
    """For each ``(checkpoint, task, DataModule overrides)``: ``{"encoded": rows, "raw": rows, ...}``, the test split
    scored from the DataModule's encoded batches and from the raw files by the checkpoint reloaded in one new Python
    process (see ``_PARITY_SCRIPT``)."""
    env = {"PYTHONPATH": str(REPO), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OMP_NUM_THREADS": "1"}
    argument = json.dumps([[str(checkpoint), task, overrides] for checkpoint, task, overrides in jobs])
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_PARITY_SCRIPT), argument],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_rows_match(encoded: list[list[float]], raw: list[list[float]], tolerance: float = 1e-5) -> None:
    """Same number of rows and, row for row, the same values to ``tolerance`` (absolute, and relative for large
    values such as logits); names the first row that differs."""
    assert len(raw) == len(encoded) > 0
    for row, (from_batches, from_raw) in enumerate(zip(encoded, raw, strict=True)):
        assert from_raw == pytest.approx(from_batches, rel=tolerance, abs=tolerance), f"row {row}"


@pytest.fixture(scope="session")
def score_fresh() -> Callable[..., list[dict[str, list]]]:
    return score_test_splits_in_fresh_process


@pytest.fixture(scope="session")
def trained_scored_fresh(trained: dict[str, FitResult]) -> dict[str, dict[str, list]]:
    """The test splits of the shared Titanic and COVID-19 runs scored both ways in one fresh process."""
    tasks = ("titanic", "covid19")
    scored = score_test_splits_in_fresh_process(*((trained[task].best_model_path, task, {}) for task in tasks))
    return dict(zip(tasks, scored, strict=True))


@pytest.fixture(scope="session")
def rows_match() -> Callable[..., None]:
    return assert_rows_match
