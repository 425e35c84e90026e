"""The train entry point: build DataModule, LightningModule and Trainer from a task name, fit, test.

``fit(FitConfig(task="titanic"))`` is what ``python -m lightning_app.fit`` runs;
it returns the metrics so tests and notebooks can call it directly.
"""

from __future__ import annotations

import importlib.util
import inspect
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_app.registry import Task, get_task


class UsageError(Exception):
    """A command-line setting that cannot work; the message says which flag and why."""


@dataclass
class FitConfig:
    """Everything a training run needs; ``None`` means "the task variant's default"."""

    task: str
    model: str | None = None
    max_epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    seed: int = 42
    data_dir: str | None = None
    cache_dir: str | None = None
    log_dir: str = "runs"
    num_workers: int = 0
    precision: str = "32-true"
    accelerator: str = "auto"
    devices: str | int = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    gpus: int | None = None
    tpu_cores: int | None = None
    ckpt_path: str | None = None
    fast_dev_run: int = 0
    limit_train_batches: float | int | None = None
    limit_val_batches: float | int | None = None
    limit_test_batches: float | int | None = None
    deterministic: bool = False
    enable_progress_bar: bool = True
    extra_trainer_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class FitResult:
    task: str
    model: str
    metrics: dict[str, float]
    best_model_path: str
    last_model_path: str
    log_dir: str
    seconds: float
    baseline_name: str | None = None

    @property
    def tensorboard_command(self) -> str:
        return f"tensorboard --logdir {Path(self.log_dir).parent.parent}"


def resolve_accelerator(config: FitConfig) -> tuple[str, str | int]:
    """Map the tutorial's ``--gpus N`` / ``--tpu-cores N`` onto Lightning 2's accelerator and devices."""
    if config.gpus is not None and config.tpu_cores is not None:
        raise UsageError("--gpus and --tpu-cores are mutually exclusive")
    if config.gpus is not None:
        if config.accelerator not in ("auto", "gpu", "cuda"):
            raise UsageError(f"--gpus {config.gpus} conflicts with --accelerator {config.accelerator}")
        if config.gpus == 0:
            return "cpu", "auto"
        available = torch.cuda.device_count()
        if available == 0:
            raise UsageError(
                f"--gpus {config.gpus}: no CUDA GPU is visible on this machine; drop --gpus to use the CPU"
            )
        if config.gpus > available:
            raise UsageError(f"--gpus {config.gpus}: only {available} CUDA GPU(s) are visible")
        return "gpu", config.gpus
    if config.tpu_cores is not None:
        if importlib.util.find_spec("torch_xla") is None:
            raise UsageError(f"--tpu-cores {config.tpu_cores}: torch_xla is not installed, so no TPU can be used here")
        return "tpu", config.tpu_cores
    return config.accelerator, config.devices


def find_last_checkpoint(log_dir: str | Path, task: str) -> Path | None:
    """The newest ``last.ckpt`` under ``<log_dir>/<task>/version_*/checkpoints/``."""
    candidates = list(Path(log_dir, task).glob("version_*/checkpoints/last.ckpt"))
    return max(candidates, key=lambda path: path.stat().st_mtime) if candidates else None


def _resolve_resume(config: FitConfig) -> tuple[str | None, int | None]:
    """Return the checkpoint to resume from and the logger version to continue, if any."""
    if config.ckpt_path is None:
        return None, None
    if config.ckpt_path == "last":
        last = find_last_checkpoint(config.log_dir, config.task)
        if last is None:
            raise UsageError(
                f"--ckpt-path last: no last.ckpt under {Path(config.log_dir, config.task)}/version_*/checkpoints; "
                "train once without --ckpt-path first"
            )
        return str(last), int(last.parent.parent.name.removeprefix("version_"))
    path = Path(config.ckpt_path)
    if not path.is_file():
        raise UsageError(f"--ckpt-path {config.ckpt_path}: no such file")
    return str(path), None


_NOT_HPARAMS = ("task", "model", "extra_trainer_kwargs", "enable_progress_bar")


def _to_float(value: Any) -> float:
    return float(value.item() if isinstance(value, torch.Tensor) else value)


def accepts_argument(cls: type, name: str) -> bool:
    """Whether ``cls(...)`` takes a keyword argument ``name``."""
    return name in inspect.signature(cls.__init__).parameters


def build_trainer(
    config: FitConfig, logger: TensorBoardLogger | bool, callbacks: list[pl.Callback], log_every_n_steps: int
) -> pl.Trainer:
    accelerator, devices = resolve_accelerator(config)
    limits = {
        name: value
        for name in ("limit_train_batches", "limit_val_batches", "limit_test_batches")
        if (value := getattr(config, name)) is not None
    }
    return pl.Trainer(
        max_epochs=config.max_epochs,
        accelerator=accelerator,
        devices=devices,
        strategy=config.strategy,
        num_nodes=config.num_nodes,
        precision=config.precision,
        logger=logger,
        callbacks=callbacks,
        fast_dev_run=config.fast_dev_run,
        deterministic=config.deterministic,
        log_every_n_steps=log_every_n_steps,
        enable_progress_bar=config.enable_progress_bar,
        **limits,
        **config.extra_trainer_kwargs,
    )


def fit(config: FitConfig) -> FitResult:
    """Train ``config.task``, test the best checkpoint and return the metrics.

    Raises :class:`UsageError` for settings that cannot work and
    ``datamodules.DataError`` for bad data files, before anything is written.
    """
    started = time.perf_counter()
    try:
        task: Task = get_task(config.task)
        variant = task.variant(config.model)
    except KeyError as err:
        raise UsageError(err.args[0]) from None
    config = replace(
        config,
        model=config.model or task.default_variant,
        max_epochs=config.max_epochs if config.max_epochs is not None else variant.max_epochs,
        batch_size=config.batch_size or variant.batch_size,
        lr=config.lr if config.lr is not None else variant.lr,
    )
    resolve_accelerator(config)  # fail on impossible device flags before touching data
    resume_from, resume_version = _resolve_resume(config)

    pl.seed_everything(config.seed, workers=True, verbose=False)
    # Only DataModules that cache preprocessed data take a cache folder.
    cache_kwargs = {"cache_dir": config.cache_dir} if accepts_argument(task.datamodule, "cache_dir") else {}
    datamodule = task.datamodule(
        data_dir=config.data_dir,
        batch_size=config.batch_size,
        num_workers=config.num_workers,
        seed=config.seed,
        **cache_kwargs,
        **variant.datamodule_kwargs,
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = task.module(
        **datamodule.model_kwargs(),
        **variant.module_kwargs,
        lr=config.lr,
        preprocessing=datamodule.preprocessing_state(),
    )

    logger: TensorBoardLogger | bool = False
    callbacks: list[pl.Callback] = []
    checkpoint: ModelCheckpoint | None = None
    if not config.fast_dev_run:
        logger = TensorBoardLogger(config.log_dir, name=task.name, version=resume_version, default_hp_metric=False)
        checkpoint = ModelCheckpoint(
            monitor=model.monitor,
            mode=model.monitor_mode,
            save_last=True,
            filename="best-epoch{epoch:03d}",
            auto_insert_metric_name=False,
        )
        callbacks.append(checkpoint)
    steps_per_epoch = max(1, len(datamodule.train_dataloader()))
    trainer = build_trainer(config, logger, callbacks, log_every_n_steps=min(50, steps_per_epoch))

    trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from)
    metrics = {key: _to_float(value) for key, value in trainer.callback_metrics.items() if key.endswith("_best")}
    best_path = checkpoint.best_model_path if checkpoint is not None else ""
    test_results = trainer.test(model, datamodule=datamodule, ckpt_path=best_path or None, verbose=False)
    metrics.update({key: _to_float(value) for key, value in test_results[0].items()})

    if isinstance(logger, TensorBoardLogger):
        hparams = {
            "task": task.name,
            "model": config.model,
            **{f"model/{k}": v for k, v in model.hparams.items()},
            **{f"data/{k}": v for k, v in datamodule.hparams.items()},
            **{f"trainer/{k}": v for k, v in asdict(config).items() if k not in _NOT_HPARAMS},
        }
        logger.log_hyperparams(hparams, metrics={f"hp/{k.replace('/', '_')}": v for k, v in metrics.items()})
        logger.finalize("success")

    return FitResult(
        task=task.name,
        model=config.model,
        metrics=metrics,
        best_model_path=best_path,
        last_model_path=checkpoint.last_model_path if checkpoint is not None else "",
        log_dir=logger.log_dir if isinstance(logger, TensorBoardLogger) else "",
        seconds=time.perf_counter() - started,
        baseline_name=model.baseline_name,
    )


def format_summary(result: FitResult) -> str:
    """A plain-text report: metrics table (model beside its baseline), checkpoint, TensorBoard command."""
    baseline = result.baseline_name
    rows = []
    for key, value in sorted(result.metrics.items()):
        stage, _, name = key.partition("/")
        if baseline and name.startswith(f"{baseline}_"):
            continue
        reference = result.metrics.get(f"{stage}/{baseline}_{name}") if baseline else None
        rows.append((key, f"{value:.4f}", "" if reference is None else f"{reference:.4f}"))
    header = ("metric", "value", baseline or "")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    lines = [f"{result.task} ({result.model}) finished in {result.seconds:.1f} s", ""]
    for row in [header, *rows]:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    lines.append("")
    if result.best_model_path:
        lines.append(f"best checkpoint: {result.best_model_path}")
    if result.log_dir:
        lines.append(f"logs: {result.log_dir}")
        lines.append(f"review in TensorBoard: {result.tensorboard_command}")
    return "\n".join(lines)
