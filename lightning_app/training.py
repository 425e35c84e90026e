"""The train entry point: build DataModule, LightningModule and Trainer from a task name, fit, test.

``fit(FitConfig(task="titanic"))`` is what ``python -m lightning_app.fit`` runs;
it returns the metrics so tests and notebooks can call it directly.
"""

from __future__ import annotations

import importlib.util
import inspect
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import TensorBoardLogger

from datamodules import TaskDataModule
from datamodules.download import FULL_DATASETS, prepare_full_dataset
from lightning_app.callbacks import FiniteLossGuard, RandomStateInCheckpoints
from lightning_app.checkpoints import check_checkpoint_task, read_checkpoint
from lightning_app.config import FitConfig, SaveRunConfig, check_arguments, init_type_hints
from lightning_app.errors import UsageError
from lightning_app.models import TaskModule
from lightning_app.registry import Task, Variant, get_task
from lightning_app.reporting import summary_sections
from lightning_app.tables import metrics_table


@dataclass
class FitResult:
    task: str
    model: str
    metrics: dict[str, float]
    best_model_path: str
    last_model_path: str
    log_dir: str
    #: Wall time of the whole run (data set-up, training, testing) and of ``trainer.fit`` alone.
    seconds: float
    train_seconds: float
    baseline_name: str | None = None
    #: The run's extra summary blocks (``lightning_app.reporting.summary_sections``) and the metric keys they show.
    sections: list[str] = field(default_factory=list)
    section_keys: set[str] = field(default_factory=set)
    #: False in the other processes of a multi-process run, which should stay quiet.
    is_global_zero: bool = True

    @property
    def tensorboard_command(self) -> str:
        # The task's folder, not the whole log dir: TensorBoard's HPARAMS table takes its columns from one
        # run, so runs of different tasks (with different hyperparameters) do not share a table.
        return f"tensorboard --logdir {Path(self.log_dir).parent}"


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
    return config.ckpt_path, None


_NOT_HPARAMS = (
    "task", "model", "module_kwargs", "datamodule_kwargs", "extra_trainer_kwargs", "extra_callbacks",
    "enable_progress_bar", "download", "test", "run_version",
)  # fmt: skip
#: Redrawing the bar every step costs a host round trip per step; every 20 steps is still lively.
PROGRESS_BAR_REFRESH_STEPS = 20


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


#: DataModule arguments set by ``FitConfig`` flags rather than ``datamodule_kwargs``.
DATAMODULE_FLAGS = ("data_dir", "cache_dir", "batch_size", "num_workers", "seed")
#: LightningModule arguments set by ``FitConfig`` flags, or by the data, rather than ``module_kwargs``.
MODULE_FLAGS = ("lr", "preprocessing")


def _check_overrides(what: str, cls: type, overrides: dict[str, Any], reserved: tuple[str, ...]) -> None:
    """One-line errors for arguments ``cls`` does not take, takes from a flag or the data, or of the wrong type."""
    known = set(inspect.signature(cls.__init__).parameters) - {"self"}
    for key in overrides:
        if key in reserved:
            raise UsageError(f"{what} '{key}' of {cls.__name__} is set by a flag or by the data, not here")
        if key not in known:
            raise UsageError(f"unknown {what} '{key}' for {cls.__name__}; it takes {sorted(known - set(reserved))}")
    check_arguments(f"{what}s of {cls.__name__}", init_type_hints(cls), overrides)


def resolve_config(config: FitConfig) -> tuple[Task, Variant, FitConfig]:
    """The task, its variant and ``config`` with every default filled in from the variant and the task's classes.

    ``module_kwargs`` and ``datamodule_kwargs`` come back complete (every argument the classes take, except
    the flags and what the data sets, such as the vocabulary size); calling this again changes nothing.
    """
    try:
        task: Task = get_task(config.task)
        variant = task.variant(config.model)
    except KeyError as err:
        raise UsageError(err.args[0]) from None
    _check_overrides("model argument", task.module, config.module_kwargs, MODULE_FLAGS + task.module.sizes_from_data)
    _check_overrides("data argument", task.datamodule, config.datamodule_kwargs, DATAMODULE_FLAGS)
    module_settings = {**task.module_settings(config.model), **config.module_kwargs}
    datamodule_settings = {**task.datamodule_settings(config.model), **config.datamodule_kwargs}
    config = replace(
        config,
        model=config.model or task.default_variant,
        max_epochs=config.max_epochs if config.max_epochs is not None else variant.max_epochs,
        batch_size=config.batch_size or datamodule_settings["batch_size"],
        lr=config.lr if config.lr is not None else module_settings["lr"],
        module_kwargs={
            key: value
            for key, value in module_settings.items()
            if key not in MODULE_FLAGS + task.module.sizes_from_data
        },
        datamodule_kwargs={key: value for key, value in datamodule_settings.items() if key not in DATAMODULE_FLAGS},
    )
    return task, variant, config


def build_datamodule_and_module(config: FitConfig) -> tuple[TaskDataModule, TaskModule]:
    """Set up the task's DataModule and build its LightningModule with the sizes and state the data gives."""
    task, _, config = resolve_config(config)
    # Only DataModules that cache preprocessed data take a cache folder, only those that draw a split or order a seed.
    optional_flags = {
        name: getattr(config, name) for name in ("cache_dir", "seed") if accepts_argument(task.datamodule, name)
    }
    datamodule = task.datamodule(
        data_dir=config.data_dir,
        batch_size=config.batch_size,
        num_workers=config.num_workers,
        **optional_flags,
        **config.datamodule_kwargs,
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = task.module(
        **config.module_kwargs,
        **datamodule.model_kwargs(),
        lr=config.lr,
        preprocessing=datamodule.preprocessing_state(),
    )
    if config.compile:
        module.net.compile()
    return datamodule, module


def training_steps_per_epoch(config: FitConfig, datamodule: TaskDataModule) -> int:
    """Optimizer steps in one training epoch of ``datamodule`` under ``config.limit_train_batches`` (at least 1)."""
    steps = len(datamodule.train_dataloader())
    if isinstance(config.limit_train_batches, int):
        steps = min(steps, config.limit_train_batches)
    elif isinstance(config.limit_train_batches, float):
        steps = int(steps * config.limit_train_batches)
    return max(1, steps)


def fit(config: FitConfig) -> FitResult:
    """Train ``config.task``, test the best checkpoint (unless ``config.test`` is False) and return the metrics.

    Raises :class:`UsageError` for settings that cannot work and
    ``datamodules.DataError`` for bad data files, before anything is written.
    """
    started = time.perf_counter()
    task, _, config = resolve_config(config)
    resolve_accelerator(config)  # fail on impossible device flags before touching data
    if config.download:
        if task.name not in FULL_DATASETS:
            raise UsageError(
                f"--download: task '{task.name}' ships all its data; only {sorted(FULL_DATASETS)} download"
            )
        target = prepare_full_dataset(task.name, config.data_dir or "data/full", progress=config.enable_progress_bar)
        config = replace(config, data_dir=str(target))
    resume_from, resume_version = _resolve_resume(config)
    if resume_from is not None:
        check_checkpoint_task(resume_from, read_checkpoint(resume_from), task)

    pl.seed_everything(config.seed, workers=True, verbose=False)
    datamodule, model = build_datamodule_and_module(config)

    logger: TensorBoardLogger | bool = False
    callbacks: list[pl.Callback] = [
        FiniteLossGuard(),
        RandomStateInCheckpoints(),
        *task.review_callbacks(),
        *config.extra_callbacks,
    ]
    if config.enable_progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=PROGRESS_BAR_REFRESH_STEPS))
    best_checkpoint = latest_checkpoint = None
    if not config.fast_dev_run:
        version = resume_version if resume_version is not None else config.run_version
        logger = TensorBoardLogger(config.log_dir, name=task.name, version=version, default_hp_metric=False)
        best_checkpoint = ModelCheckpoint(
            monitor=model.monitor,
            mode=model.monitor_mode,
            filename="best-epoch{epoch:03d}",
            auto_insert_metric_name=False,
        )
        # ModelCheckpoint(save_last=True) only refreshes last.ckpt when the monitored metric improves;
        # resuming after a crash needs the state of the latest epoch, so keep it with a second callback.
        latest_checkpoint = ModelCheckpoint(filename="last", save_top_k=1, enable_version_counter=False)
        callbacks += [best_checkpoint, latest_checkpoint, SaveRunConfig(config)]
    log_every_n_steps = min(50, training_steps_per_epoch(config, datamodule))
    trainer = build_trainer(config, logger, callbacks, log_every_n_steps=log_every_n_steps)
    hparams = {
        "task": task.name,
        "model": config.model,
        **{f"model/{k}": v for k, v in model.hparams.items()},
        **{f"data/{k}": v for k, v in datamodule.hparams.items()},
        **{f"trainer/{k}": v for k, v in asdict(config).items() if k not in _NOT_HPARAMS},
    }
    if isinstance(logger, TensorBoardLogger):
        # The logger writes hparams.yaml once, at its first save during training: give it the hyperparameters
        # now; they reach TensorBoard's HPARAMS tab with the final metrics after testing.
        logger.hparams = dict(hparams)

    with warnings.catch_warnings():
        if resume_version is not None:  # resuming writes into the run's existing checkpoint folder on purpose
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        fit_started = time.perf_counter()
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from)
        train_seconds = time.perf_counter() - fit_started
    metrics = {key: _to_float(value) for key, value in trainer.callback_metrics.items() if key.endswith("_best")}
    # Read the paths before testing: restoring the best checkpoint also restores this callback's older state.
    best_path = best_checkpoint.best_model_path if best_checkpoint is not None else ""
    last_path = latest_checkpoint.best_model_path if latest_checkpoint is not None else ""
    if config.test:
        test_results = trainer.test(model, datamodule=datamodule, ckpt_path=best_path or None, verbose=False)
        metrics.update({key: _to_float(value) for key, value in test_results[0].items()})

    if isinstance(logger, TensorBoardLogger):
        logger.log_hyperparams(hparams, metrics={f"hp/{k.replace('/', '_')}": v for k, v in metrics.items()})
        logger.finalize("success")

    sections, section_keys = summary_sections(model, metrics)
    return FitResult(
        task=task.name,
        model=config.model,
        metrics=metrics,
        best_model_path=best_path,
        last_model_path=last_path,
        log_dir=logger.log_dir if isinstance(logger, TensorBoardLogger) else "",
        seconds=time.perf_counter() - started,
        train_seconds=train_seconds,
        baseline_name=model.baseline_name,
        sections=sections,
        section_keys=section_keys,
        is_global_zero=trainer.is_global_zero,
    )


def format_summary(result: FitResult) -> str:
    """A plain-text report: metrics table (model beside its baseline), checkpoint, TensorBoard command."""
    lines = [f"{result.task} ({result.model}) finished in {result.seconds:.1f} s", ""]
    main = {key: value for key, value in result.metrics.items() if key not in result.section_keys}
    lines += [metrics_table(main, result.baseline_name), ""]
    lines += [line for section in result.sections for line in (section, "")]
    if result.best_model_path:
        lines.append(f"best checkpoint: {result.best_model_path}")
    if result.log_dir:
        lines.append(f"logs: {result.log_dir}")
        lines.append(f"review in TensorBoard: {result.tensorboard_command}")
    return "\n".join(lines)
