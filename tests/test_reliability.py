"""Crash-resume, reproducibility, non-finite losses, safe checkpoint loading and multi-process training."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
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


def test_run_killed_after_its_first_checkpoint_resumes_to_the_full_epoch_count(tmp_path):
    args = ["--task", "titanic", "--model", "tutorial", "--max-epochs", "12", "--log-dir", str(tmp_path)]
    last = tmp_path / "titanic" / "version_0" / "checkpoints" / "last.ckpt"
    process = fit_process(*args)
    deadline = time.monotonic() + 120
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be killed; make it longer"
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    killed_at = torch.load(last, weights_only=True)["epoch"]
    assert killed_at < 11

    resumed = fit_process(*args, "--ckpt-path", "last")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    final = torch.load(last, weights_only=True)
    assert final["epoch"] == 11, "the resumed run finishes the 12 epochs it was asked for"
    steps_per_epoch = -(-605 // 8)
    assert final["global_step"] == 12 * steps_per_epoch
    assert "test/acc" in out


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
    trainer = pl.Trainer(
        max_epochs=5,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[FiniteLossGuard(check_every_n_steps=1000), PoisonWeightsAtEpoch(2), checkpoint],
    )
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
