"""Ctrl-C during ``fit``: one line saying where the run is and the command that resumes it, exit code 130."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from lightning_app.cli import run_cli
from lightning_app.errors import TrainingInterrupted
from lightning_app.fit import main as fit_main

REPO = Path(__file__).resolve().parents[1]


def fit_process(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lightning_app.fit", "--no-progress-bar", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
        # A shell may start background jobs with SIGINT ignored; Python only turns SIGINT into KeyboardInterrupt
        # when it starts with the default handler.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def interrupt_once_written(process: subprocess.Popen, path: Path, timeout: float = 120) -> tuple[str, str]:
    """Send SIGINT (Ctrl-C) as soon as ``path`` exists; ``(stdout, stderr)`` once the process has stopped."""
    deadline = time.monotonic() + timeout
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, f"the process finished before {path.name} appeared; make its run longer"
    process.send_signal(signal.SIGINT)
    return process.communicate(timeout=60)


def test_ctrl_c_prints_the_epoch_and_the_resume_command_exits_130_and_the_command_resumes(tmp_path):
    log_dir = tmp_path / "my logs"  # a space: the printed command must still work in a shell
    args = ["--task", "titanic", "--model", "tutorial", "--max-epochs", "300", "--log-dir", str(log_dir)]
    checkpoints = log_dir / "titanic" / "version_0" / "checkpoints"
    process = fit_process(*args)
    _, err = interrupt_once_written(process, checkpoints / "last.ckpt")
    assert process.returncode == 130, err
    # Lightning's set-up lines come first; its own "Detected KeyboardInterrupt" notice is replaced by one line.
    lines = [line for line in err.splitlines() if line.strip()]
    assert [line for line in lines if "nterrupt" in line] == lines[-1:], err
    match = re.fullmatch(
        r"lightning_app: interrupted in epoch (\d+) of 300; (.+) holds the end of epoch (\d+); resume with: (.+)",
        lines[-1],
    )
    assert match, lines[-1]
    in_epoch, saved, done, command = int(match[1]), Path(match[2]), int(match[3]), match[4]
    assert saved == checkpoints / "last.ckpt" and done == torch.load(saved, weights_only=True)["epoch"] + 1
    assert done <= in_epoch < 300
    assert len(list(checkpoints.glob("best-*.ckpt"))) == 1, "both checkpoints are kept"
    config = log_dir / "titanic" / "version_0" / "config.yaml"
    assert command == f"python -m lightning_app.fit --config {shlex.quote(str(config))} --ckpt-path last"

    # The printed command resumes the same run (a few more epochs here, to keep the test short). It runs in this
    # process (``run_cli`` is what ``python -m lightning_app.fit`` runs): a second interpreter start costs seconds,
    # and the interrupted process above already checks the command line's own start.
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "lightning_app.fit"]
    target = done + 2
    assert run_cli(fit_main, [*argv[3:], "--max-epochs", str(target), "--no-progress-bar"]) == 0
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["epoch"] == target - 1
    assert not (log_dir / "titanic" / "version_1").exists(), "resuming continues the interrupted run's folder"


class CtrlCAt(pl.Callback):
    """Raises KeyboardInterrupt (what SIGINT raises) at the start of training batch ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"max_epochs": 3},
            r"interrupted in epoch 1 of 3, before its first checkpoint; start again with: .*config\.yaml",
        ),
        ({"fast_dev_run": 1, "step": 0}, r"interrupted in epoch 1 of 1 \(--fast-dev-run keeps no checkpoint\)"),
        (
            {"max_epochs": 3, "run_version": "tune-study/trial-0", "step": 80},
            r"in epoch 2 of 3; .*trial-0/checkpoints/last\.ckpt holds the end of epoch 1; resume with: .* --ckpt-path "
            r"\S+trial-0/checkpoints/last\.ckpt$",
        ),
    ],
)
def test_ctrl_c_in_the_library_raises_a_keyboard_interrupt_saying_how_to_go_on(tiny_fit, settings, message):
    step = settings.pop("step", 1)
    with pytest.raises(TrainingInterrupted, match=message):
        tiny_fit("titanic", model="tutorial", batch_size=8, callbacks=[CtrlCAt(step)], **settings)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "Ctrl-C works again after the fit"


class CtrlCWhileSaving(pl.Callback):
    """Sends SIGINT to this process while the first checkpoint is being written, then lets the save go on."""

    def __init__(self) -> None:
        self.sent_at_step: int | None = None
        self.batches_after: list[int] = []

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        if self.sent_at_step is None:
            self.sent_at_step = trainer.global_step
            signal.raise_signal(signal.SIGINT)
        checkpoint["written_to_the_end"] = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.sent_at_step is not None:
            self.batches_after.append(batch_idx)


def test_ctrl_c_while_a_checkpoint_is_written_stops_the_run_at_the_next_batch_with_the_checkpoint_whole(tiny_fit):
    sender = CtrlCWhileSaving()
    with pytest.raises(TrainingInterrupted, match=r"in epoch 2 of 3; (.+last\.ckpt) holds the end of epoch 1") as stop:
        tiny_fit("titanic", model="tutorial", batch_size=8, max_epochs=3, callbacks=[sender])
    assert sender.sent_at_step is not None and sender.batches_after == [], "no batch ran after Ctrl-C"
    saved = re.search(r"; (\S+last\.ckpt) holds", str(stop.value))[1]
    assert torch.load(saved, weights_only=True)["written_to_the_end"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "Ctrl-C works again after the fit"
