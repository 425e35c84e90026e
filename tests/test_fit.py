"""End-to-end training through ``lightning_app.fit``: checkpoints, logs, reload parity, resume, device flags."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from synthetic_data import make_tree, write_tiny_data
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_app import fit as fit_cli
from lightning_app.checkpoints import evaluate, load_checkpoint
from lightning_app.config import HardwareSettings
from lightning_app.registry import TASKS, get_task
from lightning_app.training import FitConfig, build_datamodule_and_module

SMALL_TASKS = ["titanic", "covid19"]


def event_tags(run_dir: str) -> set[str]:
    tags: set[str] = set()
    for event_file in Path(run_dir).glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(event_file))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"]) | set(accumulator.Tags()["tensors"])
    return tags


@pytest.mark.parametrize("task_name", SMALL_TASKS)
def test_fit_writes_checkpoint_and_logs_and_reload_reproduces_test_metrics(trained, task_name):
    result = trained[task_name]  # the shared two-epoch CPU run of the task
    best = Path(result.best_model_path)
    assert best.is_file() and best.parent.name == "checkpoints"
    assert Path(result.last_model_path).name == "last.ckpt"
    tags = event_tags(result.log_dir)
    assert {"train/loss", "val/loss", "test/loss"} <= tags
    assert f"{get_task(task_name).module.monitor}_best" in tags
    assert any(tag.startswith("hp/test_") for tag in tags), "hparams are logged with the final metrics"

    checkpoint = torch.load(best, weights_only=True)  # plain types only: no pickled objects
    task = get_task(task_name)
    module = task.module.load_from_checkpoint(best)
    assert module.preprocessing == checkpoint["preprocessing"] != {}
    datamodule = task.datamodule(**checkpoint["datamodule_hyper_parameters"])
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    reloaded = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    test_keys = {key for key in result.metrics if key.startswith("test/")}
    assert "test/loss" in test_keys and set(reloaded) == test_keys
    for key, value in reloaded.items():
        assert value == pytest.approx(result.metrics[key], rel=1e-5, abs=1e-6), key


@pytest.mark.parametrize(
    ("task_name", "variant"), [(name, variant) for name in SMALL_TASKS for variant in TASKS[name].variants]
)
def test_fast_dev_run_every_variant(tiny_fit, tmp_path, task_name, variant):
    result = tiny_fit(task_name, model=variant, fast_dev_run=1)
    assert result.model == variant
    assert {"test/loss"} <= set(result.metrics)
    assert not (tmp_path / "runs").exists(), "fast_dev_run writes no logs or checkpoints"


def _tiny_task_data(task_name: str, tmp_path: Path) -> dict[str, str]:
    """DataModule settings of a tiny data set for ``task_name`` (the small tasks use their bundled files)."""
    if task_name == "imdb":
        return {"data_dir": str(write_tiny_data(tmp_path / "data")), "cache_dir": str(tmp_path / "cache")}
    if task_name == "cifar2":
        tree = make_tree(tmp_path / "data", ["cat", "dog"], train_per_class=10, test_per_class=4)
        return {"data_dir": str(tree), "cache_dir": str(tmp_path / "cache")}
    return {}


# Every variant a user can pick trains (a couple of batches), writes a checkpoint that reloads through the entry
# that predict/test/export use, into the variant's network, and scores the test batches as the run did.
@pytest.mark.parametrize(
    ("task_name", "variant"), [(name, variant) for name in sorted(TASKS) for variant in TASKS[name].variants]
)
def test_every_variant_trains_a_few_batches_and_reloads_with_the_same_test_metrics(
    tiny_fit, tmp_path, task_name, variant
):
    data = _tiny_task_data(task_name, tmp_path)
    limits = {"limit_train_batches": 2, "limit_val_batches": 1, "limit_test_batches": 2}
    result = tiny_fit(task_name, model=variant, max_epochs=1, **limits, **data)
    assert result.model == variant

    loaded = load_checkpoint(result.best_model_path, task_name)
    default_net = inspect.signature(TASKS[task_name].module).parameters["net"].default
    assert loaded.module.hparams["net"] == TASKS[task_name].variants[variant].module_kwargs.get("net", default_net)
    reloaded = evaluate(loaded, hardware=HardwareSettings(accelerator="cpu"), data=data, limit_test_batches=2)
    tested = {key: value for key, value in result.metrics.items() if key.startswith("test/")}
    assert "test/loss" in tested and set(reloaded) == set(tested)
    assert reloaded == pytest.approx(tested, rel=1e-5, abs=1e-6, nan_ok=True)


def test_cli_prints_summary_and_tensorboard_command(tmp_path, capsys):
    log_dir = tmp_path / "logs"
    code = fit_cli.main(
        ["--task", "titanic", "--max-epochs", "1", "--log-dir", str(log_dir), "--no-progress-bar", "--seed", "3"]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "test/acc" in out and "best checkpoint:" in out
    assert f"tensorboard --logdir {log_dir / 'titanic'}\n" in out
    assert list(log_dir.glob("titanic/version_0/checkpoints/best-epoch*.ckpt"))


def test_cli_shows_persistence_beside_the_covid_model(tmp_path, capsys):
    assert (
        fit_cli.main(["--task", "covid19", "--max-epochs", "2", "--log-dir", str(tmp_path), "--no-progress-bar"]) == 0
    )
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("metric"))
    assert header.split() == ["metric", "value", "persistence"]
    mae_row = next(line for line in lines if line.startswith("test/mae"))
    assert len(mae_row.split()) == 3


def test_resume_from_last_continues_the_same_run(tiny_fit, tmp_path):
    first = tiny_fit("titanic", max_epochs=1)
    steps_per_epoch = torch.load(first.last_model_path, weights_only=True)["global_step"]
    resumed = tiny_fit("titanic", max_epochs=3, ckpt_path="last")
    assert resumed.log_dir == first.log_dir and resumed.last_model_path == first.last_model_path
    last = torch.load(resumed.last_model_path, weights_only=True)
    assert last["epoch"] == 2  # zero-based: three epochs in all
    assert last["global_step"] == 3 * steps_per_epoch


def test_ckpt_path_last_without_a_run_is_a_usage_error(tmp_path, capsys):
    code = fit_cli.run_cli(fit_cli.main, ["--task", "titanic", "--ckpt-path", "last", "--log-dir", str(tmp_path)])
    assert code == 2
    assert "train once without --ckpt-path first" in capsys.readouterr().err


def run_module(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lightning_app.fit", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_gpus_without_a_gpu_is_a_one_line_error(tmp_path):
    completed = run_module("--task", "titanic", "--gpus", "1", "--log-dir", str(tmp_path))
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    error_lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert error_lines == [
        "lightning_app: error: --gpus 1: no CUDA GPU is visible on this machine; drop --gpus to use the CPU"
    ]
    assert not any(tmp_path.iterdir()), "nothing is written before the error"


def test_tpu_cores_without_torch_xla_is_a_usage_error(tmp_path, capsys):
    pytest.importorskip("torch")
    if __import__("importlib").util.find_spec("torch_xla") is not None:
        pytest.skip("torch_xla is installed")
    assert fit_cli.run_cli(fit_cli.main, ["--task", "titanic", "--tpu-cores", "8", "--log-dir", str(tmp_path)]) == 2
    assert "--tpu-cores 8: torch_xla is not installed" in capsys.readouterr().err


def test_help_lists_every_task_and_variant(capsys):
    with pytest.raises(SystemExit) as exit_info:
        fit_cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for task in TASKS.values():
        assert f"{task.name}:" in out
        for variant in task.variants:
            assert variant in out
    for flag in ("--max-epochs", "--batch-size", "--data-dir", "--ckpt-path", "--gpus", "--tpu-cores", "--strategy"):
        assert flag in out


def test_unknown_model_variant_is_a_usage_error(tmp_path, capsys):
    assert fit_cli.run_cli(fit_cli.main, ["--task", "titanic", "--model", "nope", "--log-dir", str(tmp_path)]) == 2
    assert "has no model 'nope'" in capsys.readouterr().err


def test_compile_flag_compiles_the_network_in_place():
    args = fit_cli.build_parser().parse_args(["--task", "titanic", "--compile"])
    assert args.compile is True
    _, eager = build_datamodule_and_module(FitConfig(task="titanic"))
    _, compiled = build_datamodule_and_module(FitConfig(task="titanic", compile=True))
    assert eager.net._compiled_call_impl is None and compiled.net._compiled_call_impl is not None
    # In-place compilation keeps the parameter names, so checkpoints load into an eager module.
    assert list(compiled.state_dict()) == list(eager.state_dict())


@pytest.mark.slow
def test_compiled_fit_checkpoint_reloads_into_an_eager_module(tiny_fit):
    result = tiny_fit("titanic", compile=True, max_epochs=1)
    module = get_task("titanic").module.load_from_checkpoint(result.best_model_path)
    assert module.net._compiled_call_impl is None
    checkpoint = torch.load(result.best_model_path, weights_only=True)
    datamodule = get_task("titanic").datamodule(**checkpoint["datamodule_hyper_parameters"])
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    reloaded = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    assert reloaded["test/loss"] == pytest.approx(result.metrics["test/loss"], rel=1e-4)


def test_fit_config_holds_the_hardware_settings_as_declared():
    # FitConfig is flat (what config.yaml stores); its hardware fields are HardwareSettings', same types and defaults.
    fit_fields = {f.name: (f.type, f.default) for f in dataclasses.fields(FitConfig)}
    for f in dataclasses.fields(HardwareSettings):
        assert fit_fields[f.name] == (f.type, f.default), f.name
    assert FitConfig(task="titanic", gpus=0, precision="bf16-mixed").hardware == HardwareSettings(
        gpus=0, precision="bf16-mixed"
    )
