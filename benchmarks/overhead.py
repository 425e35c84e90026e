"""Lightning overhead: this project's ``fit`` against a plain PyTorch loop, per training epoch.

Both sides use the same LightningModule (its network, ``shared_step`` loss and
``configure_optimizers``), the same DataModule tensors and batches, the same
batch size and number of epochs. The Lightning side is the project's ``fit``
with its callbacks, metrics, TensorBoard logging and progress bar; only the
training part of each epoch is timed (validation is excluded on both sides).
The first epoch is warm-up and dropped.

    python -m benchmarks.overhead --task titanic --epochs 6 --repeats 3
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import pytorch_lightning as pl
import torch

from lightning_app.errors import UsageError
from lightning_app.registry import TASKS
from lightning_app.training import (
    FitConfig,
    build_datamodule_and_module,
    fit,
    resolve_accelerator,
    resolve_config,
    training_steps_per_epoch,
)
from lightning_app.warning_filters import silence_harmless_warnings


class TrainEpochTimer(pl.Callback):
    """Seconds from the start of each training epoch to its last batch (before validation)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._started = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._synchronize(pl_module)
        self._started = time.perf_counter()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._synchronize(pl_module)
            self.seconds.append(time.perf_counter() - self._started)

    @staticmethod
    def _synchronize(pl_module: pl.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)


def lightning_epoch_seconds(config: FitConfig) -> list[float]:
    """Per-epoch training seconds of a real ``fit`` run (progress bar and logs as users get them)."""
    timer = TrainEpochTimer()
    with tempfile.TemporaryDirectory() as scratch:
        fit(replace(config, log_dir=scratch), callbacks=[timer])
    return timer.seconds


#: Precisions the plain loop reproduces, with the autocast dtype each means (None: no autocast).
PLAIN_LOOP_AUTOCAST: dict[str, torch.dtype | None] = {"32-true": None, "32": None, "bf16-mixed": torch.bfloat16}


def plain_epoch_seconds(config: FitConfig) -> tuple[list[float], int]:
    """Per-epoch seconds of a hand-written loop over the same module, loss, optimizer and batches, on the
    device ``config`` trains on; returns them with the number of steps per epoch."""
    _, _, config = resolve_config(config)
    if config.precision not in PLAIN_LOOP_AUTOCAST:
        raise UsageError(f"the plain loop runs precision {sorted(PLAIN_LOOP_AUTOCAST)}, not {config.precision!r}")
    autocast_dtype = PLAIN_LOOP_AUTOCAST[config.precision]
    accelerator, _ = resolve_accelerator(config.hardware)
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    device = "cuda" if on_gpu else "cpu"
    pl.seed_everything(config.seed, verbose=False)
    datamodule, module = build_datamodule_and_module(config)
    module.to(device).train()
    # Without a Trainer every task's configure_optimizers returns a bare optimizer (no schedule to size).
    optimizer = module.configure_optimizers()
    loader = datamodule.train_dataloader()
    steps = training_steps_per_epoch(config, datamodule)
    seconds = []
    for _ in range(config.max_epochs):
        started = time.perf_counter()
        for batch in itertools.islice(loader, steps):
            batch = [tensor.to(device, non_blocking=True) for tensor in batch]
            # The DataModule's device-side preprocessing (e.g. cifar2's normalisation); without a Trainer it
            # skips training-only augmentation, which makes this loop slightly faster than fit's.
            batch = datamodule.on_after_batch_transfer(batch, 0)
            with torch.autocast(device, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                loss = module.shared_step(batch)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
    return seconds, steps


@dataclass
class OverheadResult:
    task: str
    model: str
    batch_size: int
    steps_per_epoch: int
    lightning: list[float]  # median seconds per epoch, one per repeat
    plain: list[float]

    @property
    def ratio(self) -> float:
        return statistics.median(self.lightning) / statistics.median(self.plain)

    @property
    def lightning_ms_per_step(self) -> float:
        return 1000 * statistics.median(self.lightning) / self.steps_per_epoch

    @property
    def plain_ms_per_step(self) -> float:
        return 1000 * statistics.median(self.plain) / self.steps_per_epoch


def measure_overhead(
    task: str, model: str | None = None, epochs: int = 6, repeats: int = 3, **config
) -> OverheadResult:
    """Median per-epoch seconds of both sides over ``repeats`` alternating runs (first epoch dropped)."""
    silence_harmless_warnings()
    base = FitConfig(task=task, model=model, max_epochs=epochs, **config)
    _, _, resolved = resolve_config(base)
    lightning, plain = [], []
    for _ in range(repeats):
        lightning.append(statistics.median(lightning_epoch_seconds(base)[1:]))
        plain_seconds, steps = plain_epoch_seconds(base)
        plain.append(statistics.median(plain_seconds[1:]))
    return OverheadResult(task, resolved.model, resolved.batch_size, steps, lightning, plain)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, choices=sorted(TASKS))
    parser.add_argument("--model", default=None)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    result = measure_overhead(args.task, args.model, args.epochs, args.repeats)
    print(f"{result.task}/{result.model} batch {result.batch_size}: lightning {result.lightning} s/epoch, "
          f"plain {result.plain} s/epoch, ratio {result.ratio:.3f}, {result.lightning_ms_per_step:.2f} vs "
          f"{result.plain_ms_per_step:.2f} ms/step")  # fmt: skip


if __name__ == "__main__":
    main()
