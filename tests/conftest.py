"""Shared fixtures: tiny CPU training runs and small data files written per test."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import seed, settings
from synthetic_data import make_tree, write_tiny_data

from datamodules import PACKAGED_DATA_DIR
from datamodules.cache import CACHE_ENV_VAR
from lightning_app.cli import run_cli
from lightning_app.fit import main as fit_main
from lightning_app.training import FitConfig, FitResult, fit
from lightning_app.warning_filters import HARMLESS_WARNINGS

REPO = Path(__file__).resolve().parents[1]

# Hypothesis profiles. The fast suite replays the same examples (a result should not hinge on a lucky draw, and a
# failure seen on CI reproduces locally). FUZZ_SEED=<n> (CI's slow stage sets the date, YYYYMMDD) draws new examples
# from that seed: the property tests then carry the ``slow`` mark, so ``-m slow`` runs them, and a failure report
# names the seed that reproduces it. FUZZ_EXAMPLES=2000 searches deeper; FUZZ_RANDOM=1 draws unseeded new examples
# (hypothesis' database then keeps the failures it finds).
FUZZ_SEED = os.environ.get("FUZZ_SEED") or None
settings.register_profile("replay", derandomize=True, database=None)
settings.register_profile("seeded", derandomize=False, database=None, print_blob=True)
settings.register_profile("random", derandomize=False)
settings.load_profile("seeded" if FUZZ_SEED else "random" if os.environ.get("FUZZ_RANDOM") == "1" else "replay")


def _is_property_test(item: pytest.Item) -> bool:
    return bool(getattr(getattr(item, "obj", None), "is_hypothesis_test", False))


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if FUZZ_SEED is None:
        return
    for item in items:
        if _is_property_test(item):
            seed(int(FUZZ_SEED))(item.obj)
            item.add_marker(pytest.mark.slow)


def pytest_report_header(config: pytest.Config) -> str:
    if FUZZ_SEED is None:
        return "fuzz: replaying the same examples (FUZZ_SEED=<n> draws new ones, run with -m slow)"
    return f"fuzz: new examples from FUZZ_SEED={FUZZ_SEED}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    report = yield
    if FUZZ_SEED is not None and report.failed and _is_property_test(item):
        reproduce = f"FUZZ_SEED={FUZZ_SEED} python -m pytest -m slow '{item.nodeid}'"
        report.sections.append(("fuzz seed", f"examples drawn from FUZZ_SEED={FUZZ_SEED}; reproduce: {reproduce}"))
    return report


@pytest.fixture(scope="session", autouse=True)
def shared_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One data cache for the whole session, under pytest's temporary folder: never the user's ``~/.cache``, and
    built once per session (a per-test cache would decode the bundled IMDB and CIFAR-2 data again in every test).
    Session fixtures (the shared trained runs) run with it and in a session working directory too."""
    cache = tmp_path_factory.mktemp("lightning_app_cache")
    outputs = [REPO / name for name in ("runs", "lightning_logs")]
    there_before = {path for path in outputs if path.exists()}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV_VAR, str(cache))
        patch.chdir(tmp_path_factory.mktemp("session_cwd"))
        yield cache
    written = [str(path) for path in outputs if path.exists() and path not in there_before]
    assert not written, f"the tests wrote {written} into the checkout"


@pytest.fixture(autouse=True)
def isolated_working_directory(
    tmp_path_factory: pytest.TempPathFactory, shared_cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Every test runs in its own empty working directory (a fresh folder beside ``tmp_path``, so that a test's
    listing of ``tmp_path`` is unchanged), with ``$LIGHTNING_APP_CACHE`` still the session's cache
    (:func:`shared_cache_dir` sets it for the whole session): a default ``--log-dir`` (``./runs``), Lightning's
    ``./lightning_logs`` or a default cache lands in temporary folders, never in the checkout or in ``~/.cache``.
    Tests reach repository files by ``REPO``."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    yield


def pytest_configure(config: pytest.Config) -> None:
    for message, category, _why in HARMLESS_WARNINGS:
        config.addinivalue_line("filterwarnings", f"ignore:{message}:{category.__module__}.{category.__qualname__}")


#: ``fit``'s keyword arguments besides the settings.
FIT_ARGUMENTS = ("callbacks", "trainer_kwargs", "test", "run_version")


@pytest.fixture
def tiny_fit(tmp_path: Path) -> Callable[..., FitResult]:
    """Train a task for a couple of epochs on the CPU, logging under ``tmp_path/runs``; ``overrides`` are
    ``FitConfig`` settings and ``fit``'s keyword arguments (``callbacks``, ``test``, ...)."""

    def run(task: str, **overrides) -> FitResult:
        settings = {
            "max_epochs": 2,
            "log_dir": str(tmp_path / "runs"),
            "accelerator": "cpu",
            "enable_progress_bar": False,
            **overrides,
        }
        arguments = {key: settings.pop(key) for key in FIT_ARGUMENTS if key in settings}
        return fit(FitConfig(task=task, **settings), **arguments)

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


@pytest.fixture(scope="session")
def trained_imdb(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One 3-epoch IMDB CLI run on tiny synthetic reviews (``<scratch>/data``, cache in ``<scratch>/cache``), shared
    by the tests that read it: (best checkpoint, printed summary); ``<scratch>`` is ``best.parents[4]``."""
    scratch = tmp_path_factory.mktemp("imdb_run")
    data = write_tiny_data(scratch / "data")
    argv = ["--task", "imdb", "--data-dir", str(data), "--cache-dir", str(scratch / "cache")]
    argv += ["--log-dir", str(scratch / "runs"), "--no-progress-bar", "--batch-size", "8", "--max-epochs", "3"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert run_cli(fit_main, argv) == 0
    return next((scratch / "runs" / "imdb").glob("version_*/checkpoints/best-*.ckpt")), printed.getvalue()


@pytest.fixture(scope="session")
def three_class_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, FitResult]:
    """One three-class cifar2 run on a tiny ImageFolder tree (cache in ``<tree>/../cache``), shared by the tests
    that only read its data and checkpoint: (tree, result)."""
    scratch = tmp_path_factory.mktemp("three_class")
    root = make_tree(scratch / "data", ["bird", "cat", "dog"], train_per_class=16, test_per_class=3)
    config = FitConfig(
        task="cifar2",
        data_dir=str(root),
        cache_dir=str(scratch / "cache"),
        log_dir=str(scratch / "runs"),
        max_epochs=1,
        batch_size=16,
        enable_progress_bar=False,
    )
    # The 5 validation images hold no dog: the metrics that need every class are NaN, with a warning.
    with pytest.warns(UserWarning, match=r"^val: .*val/auroc, val/f1, val/acc_dog cannot be computed"):
        return root, fit(config)


def kill_once_written(process: subprocess.Popen, path: Path, timeout: float = 120) -> None:
    """Kill ``process`` with SIGKILL as soon as ``path`` exists (a checkpoint, a trial's config), as a crash would."""
    deadline = time.monotonic() + timeout
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, f"the process finished before {path.name} appeared; make its run longer"
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)


@pytest.fixture
def kill_when_written() -> Callable[[subprocess.Popen, Path], None]:
    return kill_once_written


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
from lightning_app.checkpoints import load_checkpoint

def score(checkpoint, task, overrides):
    loaded = load_checkpoint(checkpoint, task)
    module, datamodule = loaded.module, loaded.datamodule(**overrides)
    datamodule.prepare_data()
    datamodule.setup("test")
    batches = [datamodule.on_after_batch_transfer(batch, 0) for batch in datamodule.test_dataloader()]

    def encoded():
        return torch.cat([module.predict_encoded(inputs) for inputs, _ in batches])

    if task == "covid19":
        from datamodules.count_series import daily_differences, read_counts
        _, _, values = read_counts(datamodule.require_file(datamodule.file_name), datamodule.hparams.counts)
        from lightning_app.models.covid import level_index
        daily = daily_differences(values) if datamodule.hparams.counts == "cumulative" else values
        windows = torch.cat([batch[0] for batch in batches])  # the test windows; a batch is (window, target, ...)
        with torch.no_grad(), module.eval_mode():
            medians = module.quantile_forecast(windows)[:, 0, :, level_index(0.5)]
        first_test_day = len(daily) - len(windows)
        raw = [module.forecast(1, daily[: first_test_day + i]).point[0].tolist() for i in range(len(windows))]
        ends = {"stored_end": module.forecast(3).point.tolist(), "file_end": module.forecast(3, daily).point.tolist()}
        return {"encoded": medians.tolist(), "raw": raw, **ends}
    if task == "titanic":
        from datamodules.titanic import read_passengers
        raw_inputs = read_passengers(datamodule.require_file("test.csv"), with_label=False)
    elif task == "imdb":
        from datamodules.text_files import read_labeled_texts
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
def scored_fresh(trained, trained_imdb, three_class_run) -> dict[str, dict[str, list]]:
    """The test split of each task's shared run scored both ways (``score_test_splits_in_fresh_process``), all in
    one fresh process: a Python start and Lightning import cost seconds."""
    imdb_scratch, (cifar2_tree, cifar2_run) = trained_imdb[0].parents[4], three_class_run
    imdb_data = {"data_dir": str(imdb_scratch / "data"), "cache_dir": str(imdb_scratch / "cache")}
    cifar2_data = {"data_dir": str(cifar2_tree), "cache_dir": str(cifar2_tree.parent / "cache")}
    jobs = {
        "titanic": (trained["titanic"].best_model_path, "titanic", {}),
        "covid19": (trained["covid19"].best_model_path, "covid19", {}),
        "imdb": (trained_imdb[0], "imdb", imdb_data),
        "cifar2": (cifar2_run.best_model_path, "cifar2", cifar2_data),
    }
    return dict(zip(jobs, score_test_splits_in_fresh_process(*jobs.values()), strict=True))


@pytest.fixture(scope="session")
def rows_match() -> Callable[..., None]:
    return assert_rows_match
