"""Crash-resume, reproducibility, non-finite losses, safe checkpoint loading and multi-process training."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from datamodules import TitanicDataModule
from lightning_app import fit as fit_cli
from lightning_app.callbacks import FiniteLossGuard, NonFiniteLossError
from lightning_app.models import TitanicModule


def fit_process(*args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lightning_app.fit", "--no-progress-bar", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


# covid19's default net starts at zero and trains on one full batch, so it does not depend on the seed at all;
# its tutorial net (random initialisation) shows the seed at work.
@pytest.mark.parametrize(("task", "model"), [("titanic", None), ("covid19", "tutorial")])
def test_same_seed_gives_identical_metrics(tiny_fit, task, model):
    first = tiny_fit(task, model=model, seed=7, max_epochs=3)
    second = tiny_fit(task, model=model, seed=7, max_epochs=3)
    other = tiny_fit(task, model=model, seed=8, max_epochs=3)
    assert first.metrics == second.metrics
    assert first.metrics != other.metrics


EXPECTED_NAN_WARNING = "ignore:Encountered `nan` values in tensor:UserWarning"


@pytest.mark.filterwarnings(EXPECTED_NAN_WARNING)
def test_absurd_learning_rate_stops_with_a_clear_message(tmp_path, capsys):
    code = fit_cli.run_cli(
        fit_cli.main, ["--task", "titanic", "--lr", "1e30", "--log-dir", str(tmp_path), "--no-progress-bar"]
    )
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("lightning_app: training stopped: training loss became NaN at epoch 0, batch ")
    assert not list(tmp_path.rglob("*.ckpt")), "no checkpoint holds the damaged weights"


# A fresh process runs the fit command line once per kind of bad loss with its file descriptor 2 sent to a file of
# its own, so everything written to stderr (also by Lightning's loggers) is seen. The Titanic module's loss is made
# non-finite at one training step: epoch 1, batch 10 with 76 batches of 8 per epoch.
_BAD_LOSS_SCRIPT = """
import json, os, sys
from lightning_app.cli import run_cli
from lightning_app.fit import main
from lightning_app.models import TitanicModule

BAD_STEP = 86
original = TitanicModule.shared_step
codes = {}
for kind, log_dir, err_file in json.loads(sys.argv[1]):
    def shared_step(self, batch, kind=kind):
        out = original(self, batch)
        if self.training and self.trainer.global_step == BAD_STEP:
            out["loss"] = out["loss"] * float(kind)
        return out
    TitanicModule.shared_step = shared_step
    sys.stderr.flush()
    os.dup2(os.open(err_file, os.O_WRONLY | os.O_CREAT), 2)
    argv = ["--task", "titanic", "--max-epochs", "3", "--batch-size", "8", "--log-dir", log_dir, "--no-progress-bar"]
    codes[kind] = run_cli(main, argv)
    sys.stderr.flush()
print(json.dumps(codes))
"""


def test_nan_and_inf_losses_stop_the_fit_command_with_one_line_and_finite_checkpoints(tmp_path):
    jobs = [(kind, str(tmp_path / kind), str(tmp_path / f"{kind}.err")) for kind in ("nan", "inf")]
    done = subprocess.run(
        [sys.executable, "-c", _BAD_LOSS_SCRIPT, json.dumps(jobs)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"nan": 1, "inf": 1}
    for kind, word in (("nan", "NaN"), ("inf", "infinite")):
        err = [line for line in (tmp_path / f"{kind}.err").read_text().splitlines() if line.strip()]
        # Lightning's banner and model summary come first; the stop is one line, the last, with no traceback.
        assert [line for line in err if line.startswith("lightning_app:") or "Traceback" in line] == err[-1:], err
        assert not any("Error" in line for line in err), err
        assert err[-1].startswith(
            f"lightning_app: training stopped: training loss became {word} at epoch 1, batch 10 (global step 86); "
        ), err[-1]
        checkpoints = sorted((tmp_path / kind).rglob("*.ckpt"))
        assert any(path.name == "last.ckpt" for path in checkpoints), checkpoints
        for path in checkpoints:
            saved = torch.load(path, weights_only=True)
            assert saved["epoch"] == 0, path  # saved after the last good epoch; nothing after the bad step
            assert all(torch.isfinite(tensor).all() for tensor in saved["state_dict"].values()), path


class LossAtStep(pl.Callback):
    """Records the global step at which training stopped."""

    def __init__(self) -> None:
        self.stopped_at: int | None = None

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.stopped_at = trainer.global_step


class InfiniteLossAt(TitanicModule):
    """The Titanic module with an infinite training loss at one global step."""

    def __init__(self, bad_step: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.bad_step = bad_step

    def shared_step(self, batch):
        out = super().shared_step(batch)
        if self.training and self.trainer.global_step == self.bad_step:
            out["loss"] = out["loss"] * float("inf")
        return out


def quiet_trainer(max_epochs: int, callbacks: list[pl.Callback], **settings) -> pl.Trainer:
    """A CPU Trainer without logger, progress bar or model summary."""
    return pl.Trainer(
        max_epochs=max_epochs, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=callbacks, **settings,
    )  # fmt: skip


def test_periodic_check_stops_training_after_its_interval_not_at_the_epoch_end(tmp_path):
    datamodule = TitanicDataModule(batch_size=8)
    datamodule.setup("fit")
    model = InfiniteLossAt(12, **datamodule.model_kwargs(), preprocessing=datamodule.preprocessing_state())
    recorder = LossAtStep()
    trainer = quiet_trainer(
        1, [FiniteLossGuard(check_every_n_steps=5), recorder], enable_checkpointing=False, num_sanity_val_steps=0
    )
    with pytest.raises(NonFiniteLossError, match=r"infinite at epoch 0, batch 12 \(global step 12\)"):
        trainer.fit(model, datamodule=datamodule)
    # Checks after steps 5, 10 and 15: the third one finds step 12, long before the 76-step epoch ends.
    assert recorder.stopped_at == 15


class PoisonWeightsAtEpoch(pl.Callback):
    """Sets a weight to NaN at the start of one epoch, as a diverging optimiser would."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            with torch.no_grad():
                next(pl_module.parameters()).view(-1)[0] = float("nan")


@pytest.mark.filterwarnings(EXPECTED_NAN_WARNING)
def test_last_good_checkpoint_survives_a_non_finite_loss(tmp_path):
    datamodule = TitanicDataModule()
    datamodule.setup("fit")
    model = TitanicModule(**datamodule.model_kwargs(), preprocessing=datamodule.preprocessing_state())
    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor="val/loss", save_last=True)
    trainer = quiet_trainer(5, [FiniteLossGuard(check_every_n_steps=1000), PoisonWeightsAtEpoch(2), checkpoint])
    with pytest.raises(NonFiniteLossError, match=r"at epoch 2, batch 0 \(global step 10\)"):
        trainer.fit(model, datamodule=datamodule)
    last = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert last["epoch"] == 1
    assert all(torch.isfinite(tensor).all() for tensor in last["state_dict"].values())


class WritesAFileWhenUnpickled:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_crafted_pickle_is_refused_without_running_it(tmp_path, capsys, writer):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    payload = {"state_dict": {}, "hyper_parameters": WritesAFileWhenUnpickled(marker)}
    if writer == "torch.save":
        torch.save(payload, evil)
    else:
        evil.write_bytes(pickle.dumps(payload, protocol=2))  # the protocol torch.save uses
    code = fit_cli.run_cli(fit_cli.main, ["--task", "titanic", "--ckpt-path", str(evil), "--log-dir", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "evil.ckpt: refused" in err[0]
    assert not marker.exists(), "loading the checkpoint ran code"


def test_file_that_is_not_a_checkpoint_is_a_one_line_error(tmp_path, capsys):
    bogus = tmp_path / "notes.ckpt"
    bogus.write_text("just some text\n")
    assert fit_cli.run_cli(fit_cli.main, ["--task", "titanic", "--ckpt-path", str(bogus)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "notes.ckpt: not a PyTorch checkpoint" in err[0]


def test_checkpoint_of_another_task_is_a_one_line_error(trained, tmp_path, capsys):
    covid = trained["covid19"]
    code = fit_cli.run_cli(fit_cli.main, ["--task", "titanic", "--ckpt-path", covid.last_model_path])
    assert code == 2
    assert "a checkpoint of task 'covid19', not 'titanic'" in capsys.readouterr().err


@pytest.mark.slow  # two interpreters and a process group: 14 s; tests/test_distributed.py's DDP checks run there too
def test_two_cpu_processes_train_titanic_with_ddp(tmp_path):
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = fit_process(
        "--task", "titanic", "--max-epochs", "2", "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp",
        "--log-dir", str(tmp_path), env=environment,
    )  # fmt: skip
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert out.count("best checkpoint:") == 1, "only rank zero prints the summary"
    assert "test/acc" in out
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in err
    checkpoint = torch.load(next(tmp_path.glob("titanic/version_0/checkpoints/last.ckpt")), weights_only=True)
    # 605 training rows split over two processes at batch size 128: 3 steps per epoch each.
    assert checkpoint["global_step"] == 2 * 3
