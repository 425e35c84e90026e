"""CIFAR-2 benchmarks: ``PYTHONPATH=. python -m benchmarks.cifar2 [--quick]``.

(a) ``tutorial_pipeline_speed``: seconds per training epoch of the tutorial's
    Net at batch 50 (plain SGD, lr 0.01, no augmentation) on the CPU,

    * through this project's pipeline: ``Cifar2DataModule`` (images decoded once,
      batches sliced from memory, normalised after transfer) and ``Cifar2Module``
      under a Lightning ``Trainer`` (metrics included), as shipped (the Net in
      channels-last memory format) and with the tutorial's NCHW layout, which
      isolates the gain of decoding once;
    * through the tutorial's own pipeline: ``torchvision.datasets.ImageFolder``
      with ``ToTensor()`` (every JPEG decoded again every epoch) and a plain
      PyTorch loop (no metrics), over the same number of training images.

    Epochs of the two alternate, after one warm-up epoch of each; the table
    reports medians and their ratio.

(b) ``default_model_run``: ``lightning_app.training.fit`` of the cifar2 task
    with its registry defaults; reports the wall time of ``fit`` (training,
    validation after each epoch and the final test; the decoded cache is built
    beforehand and timed separately) and the test metrics.

Every function returns plain data, so a harness can import and call them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from datamodules.cache import default_cache_dir
from datamodules.cifar2 import Cifar2DataModule
from lightning_app.models import Cifar2Module
from lightning_app.nets import TutorialCifarNet
from lightning_app.registry import get_task
from lightning_app.training import FitConfig, fit

TUTORIAL_BATCH_SIZE = 50
TUTORIAL_LR = 0.01


@dataclass
class PipelineSpeed:
    """Seconds per training epoch of the tutorial's Net, this project's pipeline vs the tutorial's."""

    images_per_epoch: int
    #: wall seconds of each timed epoch: this project's pipeline with the Net in channels-last layout (as shipped)
    lightning_seconds: list[float] = field(default_factory=list)
    #: the same with the Net in the tutorial's NCHW layout
    lightning_nchw_seconds: list[float] = field(default_factory=list)
    tutorial_seconds: list[float] = field(default_factory=list)
    threads: int = 0

    @property
    def lightning_median(self) -> float:
        return statistics.median(self.lightning_seconds)

    @property
    def lightning_nchw_median(self) -> float:
        return statistics.median(self.lightning_nchw_seconds)

    @property
    def tutorial_median(self) -> float:
        return statistics.median(self.tutorial_seconds)

    @property
    def speedup(self) -> float:
        """How many times faster an epoch is through this project's pipeline, as shipped."""
        return self.tutorial_median / self.lightning_median

    @property
    def speedup_nchw(self) -> float:
        """The same with the tutorial's memory layout: the gain of decoding once alone."""
        return self.tutorial_median / self.lightning_nchw_median


@dataclass
class DefaultRun:
    """One ``fit`` of the default cifar2 model."""

    max_epochs: int
    batch_size: int
    fit_seconds: float
    cache_seconds: float
    metrics: dict[str, float]
    threads: int = 0


class _EpochTimer(pl.Callback):
    """Wall time of each training epoch."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def _lightning_epoch(model: Cifar2Module, datamodule: Cifar2DataModule, limit_batches: int | None) -> float:
    timer = _EpochTimer()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        limit_train_batches=limit_batches if limit_batches is not None else 1.0,
        callbacks=[timer],
    )
    trainer.fit(model, datamodule=datamodule)
    return timer.seconds[0]


def _tutorial_epoch(net: torch.nn.Module, loader: DataLoader, limit_batches: int | None) -> float:
    """One epoch of the tutorial's loop: decode JPEGs (in the DataLoader), forward, BCE, backward, SGD step."""
    optimizer = torch.optim.SGD(net.parameters(), lr=TUTORIAL_LR)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    net.train()
    start = time.perf_counter()
    for step, (images, labels) in enumerate(loader):
        if limit_batches is not None and step >= limit_batches:
            break
        optimizer.zero_grad()
        loss = loss_fn(net(images), labels.float())
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def tutorial_pipeline_speed(
    cache_dir: str | Path | None = None,
    repeats: int = 3,
    limit_batches: int | None = None,
    tutorial_workers: int = 0,
    seed: int = 42,
) -> PipelineSpeed:
    """Time training epochs of the tutorial's Net through both pipelines (see the module docstring).

    ``limit_batches`` caps each epoch (quick runs); ``tutorial_workers`` are the
    tutorial DataLoader's worker processes (0: decode in the training process,
    as this project's pipeline also runs in one process).
    """
    pl.seed_everything(seed, verbose=False)
    datamodule = Cifar2DataModule(
        cache_dir=cache_dir, batch_size=TUTORIAL_BATCH_SIZE, augment=False, seed=seed, num_workers=0
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    models = {
        channels_last: Cifar2Module(
            **datamodule.model_kwargs(),
            **{**get_task("cifar2").variant("tutorial").module_kwargs, "lr": TUTORIAL_LR},
            channels_last=channels_last,
            preprocessing=datamodule.preprocessing_state(),
        )
        for channels_last in (True, False)
    }
    images_per_epoch = len(datamodule.train_set)

    # The tutorial's pipeline over the same extracted JPEGs and the same number of training images.
    folder = datasets.ImageFolder(str(datamodule.image_root() / "train"), transform=transforms.ToTensor())
    chosen = torch.randperm(len(folder), generator=torch.Generator().manual_seed(seed))[:images_per_epoch]
    loader = DataLoader(
        Subset(folder, chosen.tolist()),
        batch_size=TUTORIAL_BATCH_SIZE,
        shuffle=True,
        num_workers=tutorial_workers,
        persistent_workers=tutorial_workers > 0,
    )
    net = TutorialCifarNet()

    if limit_batches is not None:
        images_per_epoch = min(images_per_epoch, limit_batches * TUTORIAL_BATCH_SIZE)
    result = PipelineSpeed(images_per_epoch=images_per_epoch, threads=torch.get_num_threads())
    for model in models.values():  # warm-up: first-call allocations, oneDNN kernels
        _lightning_epoch(model, datamodule, limit_batches)
    _tutorial_epoch(net, loader, limit_batches)
    for _ in range(repeats):
        result.lightning_seconds.append(_lightning_epoch(models[True], datamodule, limit_batches))
        result.lightning_nchw_seconds.append(_lightning_epoch(models[False], datamodule, limit_batches))
        result.tutorial_seconds.append(_tutorial_epoch(net, loader, limit_batches))
    return result


def default_model_run(
    cache_dir: str | Path | None = None,
    log_dir: str | Path | None = None,
    max_epochs: int | None = None,
    limit_train_batches: float | int | None = None,
    seed: int = 42,
) -> DefaultRun:
    """Train the default cifar2 variant with ``fit`` (registry defaults unless overridden) and test it."""
    variant = get_task("cifar2").variant("default")
    started = time.perf_counter()
    datamodule = Cifar2DataModule(cache_dir=cache_dir, seed=seed)
    datamodule.prepare_data()
    datamodule.setup("fit")  # builds (or reuses) the decoded cache outside the timed fit
    cache_seconds = time.perf_counter() - started

    with tempfile.TemporaryDirectory(prefix="cifar2-bench-") as scratch:
        config = FitConfig(
            task="cifar2",
            max_epochs=max_epochs,
            seed=seed,
            cache_dir=str(cache_dir) if cache_dir is not None else None,
            log_dir=str(log_dir) if log_dir is not None else scratch,
            accelerator="cpu",
            limit_train_batches=limit_train_batches,
            enable_progress_bar=False,
        )
        result = fit(config)
    return DefaultRun(
        max_epochs=max_epochs if max_epochs is not None else variant.max_epochs,
        batch_size=datamodule.hparams.batch_size,
        fit_seconds=result.seconds,
        cache_seconds=cache_seconds,
        metrics=result.metrics,
        threads=torch.get_num_threads(),
    )


def markdown(speed: PipelineSpeed | None, run: DefaultRun | None) -> str:
    lines = []
    if speed is not None:

        def listed(values: list[float]) -> str:
            return ", ".join(f"{value:.2f}" for value in values)

        lines += [
            f"### (a) tutorial Net, batch {TUTORIAL_BATCH_SIZE}, {speed.images_per_epoch} training images per epoch, "
            f"CPU, {speed.threads} threads",
            "",
            "| pipeline | median s/epoch | speed-up vs tutorial | epochs (s) |",
            "|---|---|---|---|",
            f"| this project as shipped: decoded cache + Lightning, Net channels-last | {speed.lightning_median:.2f} "
            f"| **{speed.speedup:.2f}x** | {listed(speed.lightning_seconds)} |",
            f"| this project, Net in the tutorial's NCHW layout (decode-once gain alone) "
            f"| {speed.lightning_nchw_median:.2f} | {speed.speedup_nchw:.2f}x "
            f"| {listed(speed.lightning_nchw_seconds)} |",
            f"| tutorial: ImageFolder + ToTensor (decodes every epoch), plain loop | {speed.tutorial_median:.2f} "
            f"| 1.00x | {listed(speed.tutorial_seconds)} |",
            "",
        ]
    if run is not None:
        metric_names = sorted(k for k in run.metrics if k.startswith("test/") or k.endswith("_best"))
        lines += [
            f"### (b) default model, {run.max_epochs} epochs, batch {run.batch_size}, CPU, {run.threads} threads",
            "",
            "| measure | value |",
            "|---|---|",
            f"| decoded cache build or load (s) | {run.cache_seconds:.1f} |",
            f"| fit: train + validate + test (s) | {run.fit_seconds:.1f} |",
            *(f"| {name} | {run.metrics[name]:.4f} |" for name in metric_names),
            "",
        ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cifar2", description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["a", "b", "all"], default="all", help="which benchmark (default: all)")
    parser.add_argument("--quick", action="store_true", help="(a) 40 batches per epoch, (b) 1 epoch of 20 batches")
    parser.add_argument("--repeats", type=int, default=3, help="(a) timed epochs per pipeline (default: 3)")
    parser.add_argument("--tutorial-workers", type=int, default=0, help="(a) tutorial DataLoader workers")
    parser.add_argument("--max-epochs", type=int, default=None, help="(b) default: the registry's")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--cache-dir", default=None, help=f"default: {default_cache_dir()}")
    parser.add_argument("--log-dir", default=None, help="(b) keep TensorBoard logs here (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    speed = run = None
    if args.part in ("a", "all"):
        speed = tutorial_pipeline_speed(
            args.cache_dir,
            repeats=args.repeats,
            limit_batches=40 if args.quick else None,
            tutorial_workers=args.tutorial_workers,
        )
    if args.part in ("b", "all"):
        run = default_model_run(
            args.cache_dir,
            args.log_dir,
            max_epochs=1 if args.quick else args.max_epochs,
            limit_train_batches=20 if args.quick else None,
        )
    print(markdown(speed, run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
