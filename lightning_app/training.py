"""The train entry point: build DataModule, LightningModule and Trainer from a task name, fit, test.

``fit(FitConfig(task="titanic"))`` is what ``python -m lightning_app.fit`` runs;
it returns the metrics so tests and notebooks can call it directly. The settings
(:class:`FitConfig`) and their resolution live in :mod:`lightning_app.config`.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import signal
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import TensorBoardLogger

from datamodules import TaskDataModule
from datamodules.download import FULL_DATASETS, prepare_full_dataset
from lightning_app.callbacks import CtrlCAtBatchBoundaries, FiniteLossGuard, LatestCheckpoint, RandomStateInCheckpoints
from lightning_app.checkpoints import check_checkpoint_task, read_checkpoint
from lightning_app.config import (
    CONFIG_FILE_NAME,
    FitConfig,
    SaveRunConfig,
    accepts_argument,
    apply_params,
    build_trainer,
    find_last_checkpoint,
    resolve_accelerator,
    resolve_config,
    resolve_resume,
    settings_from_data,
)
from lightning_app.data_rules import describe_settings
from lightning_app.errors import TrainingInterrupted, UsageError
from lightning_app.models import TaskModule
from lightning_app.registry import Task
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
    #: The settings the variant's data rules gave (``max_epochs``, ``module_kwargs.<name>``), where none was set.
    settings_from_data: dict[str, Any] = field(default_factory=dict)
    #: False in the other processes of a multi-process run, which should stay quiet.
    is_global_zero: bool = True

    @property
    def tensorboard_command(self) -> str:
        # The task's folder, not the whole log dir: TensorBoard's HPARAMS table takes its columns from one
        # run, so runs of different tasks (with different hyperparameters) do not share a table.
        return f"tensorboard --logdir {Path(self.log_dir).parent}"


def build_datamodule(config: FitConfig) -> TaskDataModule:
    """The task's DataModule for ``config``, prepared and set up for fitting."""
    task, _, config = resolve_config(config)
    # Only DataModules that cache preprocessed data take a cache folder, only those that draw a split or order a seed,
    # only those that read a table a target and id columns.
    optional_flags = {
        name: getattr(config, name)
        for name in ("cache_dir", "seed", "target_column", "id_columns")
        if accepts_argument(task.datamodule, name)
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
    return datamodule


def resolve_for_data(config: FitConfig, datamodule: TaskDataModule) -> tuple[FitConfig, dict[str, Any]]:
    """``config`` resolved, the variant's data rules filling in what it leaves unset (see
    :mod:`lightning_app.data_rules`), and the settings those rules gave (``{}`` for a resolved ``config``)."""
    from_data = settings_from_data(config, datamodule)
    return resolve_config(apply_params(config, from_data))[2], from_data


def build_datamodule_for_data(config: FitConfig) -> tuple[TaskDataModule, FitConfig, dict[str, Any]]:
    """The task's DataModule, set up, with ``config`` resolved for it (:func:`resolve_for_data`) and the settings
    its data rules gave; built again when a rule changed its batch size."""
    datamodule = build_datamodule(config)
    resolved, from_data = resolve_for_data(config, datamodule)
    if resolved.batch_size != datamodule.hparams.batch_size:
        datamodule = build_datamodule(resolved)
    return datamodule, resolved, from_data


def build_datamodule_and_module(config: FitConfig) -> tuple[TaskDataModule, TaskModule]:
    """Set up the task's DataModule and build its LightningModule with the sizes and state the data gives."""
    datamodule, config, _ = build_datamodule_for_data(config)
    return datamodule, build_module(config, datamodule)


def build_module(config: FitConfig, datamodule: TaskDataModule) -> TaskModule:
    """Set up ``datamodule`` (any DataModule of ``config.task``, e.g. one built from series in memory) and build the
    task's LightningModule with the sizes and state it gives (and the settings that follow it, where ``config``
    leaves them unset)."""
    task = resolve_config(config)[0]
    datamodule.prepare_data()
    datamodule.setup("fit")
    config, _ = resolve_for_data(config, datamodule)
    module = task.module(
        **config.module_kwargs,
        **datamodule.model_kwargs(),
        lr=config.lr,
        preprocessing=datamodule.preprocessing_state(),
    )
    if config.compile:
        module.net.compile()
    return module


def training_steps_per_epoch(config: FitConfig, datamodule: TaskDataModule) -> int:
    """Optimizer steps in one training epoch of ``datamodule`` under ``config.limit_train_batches`` (at least 1)."""
    steps = len(datamodule.train_dataloader())
    if isinstance(config.limit_train_batches, int):
        steps = min(steps, config.limit_train_batches)
    elif isinstance(config.limit_train_batches, float):
        steps = int(steps * config.limit_train_batches)
    return max(1, steps)


#: Redrawing the bar every step costs a host round trip per step; every 20 steps is still lively.
PROGRESS_BAR_REFRESH_STEPS = 20


def _to_float(value: Any) -> float:
    return float(value.item() if isinstance(value, torch.Tensor) else value)


@dataclass
class _RunOutputs:
    """Where a run writes: its logger (``False`` under ``fast_dev_run``) and its two checkpoint callbacks."""

    logger: TensorBoardLogger | bool = False
    #: The best epoch's checkpoint (by the module's monitored metric) and the latest epoch's ``last.ckpt``.
    best: ModelCheckpoint | None = None
    latest: ModelCheckpoint | None = None

    @property
    def callbacks(self) -> list[pl.Callback]:
        return [callback for callback in (self.best, self.latest) if callback is not None]


def prepare_run(config: FitConfig) -> tuple[Task, FitConfig, str | None, int | None]:
    """The task, the settings as given (with the full data's folder under ``download``: those that follow the
    data are resolved once it is set up) and the checkpoint and logger version to resume; every setting that
    cannot work fails here, before anything is written."""
    task, _, resolved = resolve_config(config)
    resolve_accelerator(resolved.hardware)  # fail on impossible device flags before touching data
    if config.download:
        if task.name not in FULL_DATASETS:
            raise UsageError(
                f"--download: task '{task.name}' ships all its data; only {sorted(FULL_DATASETS)} download"
            )
        target = prepare_full_dataset(task.name, config.data_dir or "data/full", progress=config.enable_progress_bar)
        config = replace(config, data_dir=str(target))
    resume_from, resume_version = resolve_resume(config)
    if resume_from is not None:
        check_checkpoint_task(resume_from, read_checkpoint(resume_from), task)
    return task, config, resume_from, resume_version


def _run_outputs(config: FitConfig, task: Task, model: TaskModule, version: int | str | None) -> _RunOutputs:
    """The run's TensorBoard logger (folder ``version``, default the next ``version_N``) and checkpoint callbacks;
    none under ``fast_dev_run``."""
    if config.fast_dev_run:
        return _RunOutputs()
    logger = TensorBoardLogger(config.log_dir, name=task.name, version=version, default_hp_metric=False)
    best = ModelCheckpoint(
        monitor=model.monitor, mode=model.monitor_mode, filename="best-epoch{epoch:03d}", auto_insert_metric_name=False
    )
    # ModelCheckpoint(save_last=True) only refreshes last.ckpt when the monitored metric improves;
    # resuming after a crash needs the state of the latest epoch, so keep it with a second callback.
    latest = LatestCheckpoint(best)
    return _RunOutputs(logger, best, latest)


def _hyperparameters(config: FitConfig, task: Task, model: TaskModule, datamodule: TaskDataModule) -> dict[str, Any]:
    """What TensorBoard's HPARAMS table shows for the run."""
    return {
        "task": task.name,
        "model": config.model,
        **{f"model/{k}": v for k, v in model.hparams.items()},
        **{f"data/{k}": v for k, v in datamodule.hparams.items()},
        **{f"trainer/{k}": v for k, v in config.hyperparameters().items()},
    }


def _run_trainer(
    config: FitConfig,
    task: Task,
    datamodule: TaskDataModule,
    outputs: _RunOutputs,
    callbacks: Sequence[pl.Callback],
    trainer_kwargs: Mapping[str, Any],
) -> pl.Trainer:
    """The run's Trainer: the project's callbacks, the task's review callbacks, then ``callbacks``."""
    run_callbacks = [
        FiniteLossGuard(),
        RandomStateInCheckpoints(),
        CtrlCAtBatchBoundaries(),
        *task.review_callbacks(),
        *callbacks,
    ]
    if config.enable_progress_bar:
        run_callbacks.append(TQDMProgressBar(refresh_rate=PROGRESS_BAR_REFRESH_STEPS))
    if not config.fast_dev_run:
        run_callbacks += [*outputs.callbacks, SaveRunConfig(config)]
    return build_trainer(
        config.hardware,
        logger=outputs.logger,
        callbacks=run_callbacks,
        log_every_n_steps=min(50, training_steps_per_epoch(config, datamodule)),
        **config.trainer_kwargs(),
        **trainer_kwargs,
    )


def fit(
    config: FitConfig,
    *,
    callbacks: Sequence[pl.Callback] = (),
    trainer_kwargs: Mapping[str, Any] | None = None,
    test: bool = True,
    run_version: str | None = None,
) -> FitResult:
    """Train ``config.task``, test the best checkpoint (unless ``test`` is False) and return the metrics.

    ``callbacks`` are added to the run's own and ``trainer_kwargs`` passed to ``pl.Trainer``; ``run_version`` is
    the run's folder under ``<log_dir>/<task>/`` (e.g. ``tune-<study>/trial-3``; default: the next ``version_N``,
    or the resumed run's). Raises :class:`UsageError` for settings that cannot work and
    ``datamodules.DataError`` for bad data files, before anything is written.
    """
    started = time.perf_counter()
    task, config, resume_from, resume_version = prepare_run(config)
    pl.seed_everything(config.seed, workers=True, verbose=False)
    datamodule, config, from_data = build_datamodule_for_data(config)
    model = build_module(config, datamodule)
    outputs = _run_outputs(config, task, model, resume_version if resume_version is not None else run_version)
    trainer = _run_trainer(config, task, datamodule, outputs, callbacks, trainer_kwargs or {})
    hparams = _hyperparameters(config, task, model, datamodule)
    if isinstance(outputs.logger, TensorBoardLogger):
        # The logger writes hparams.yaml once, at its first save during training: give it the hyperparameters
        # now; they reach TensorBoard's HPARAMS tab with the final metrics after testing.
        outputs.logger.hparams = dict(hparams)

    with warnings.catch_warnings():
        if resume_version is not None:  # resuming writes into the run's existing checkpoint folder on purpose
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        fit_started = time.perf_counter()
        _train(config, trainer, model, datamodule, outputs, resume_from)
        train_seconds = time.perf_counter() - fit_started
    metrics = {key: _to_float(value) for key, value in trainer.callback_metrics.items() if key.endswith("_best")}
    # Read the paths before testing: restoring the best checkpoint also restores this callback's older state.
    best_path = outputs.best.best_model_path if outputs.best is not None else ""
    last_path = outputs.latest.best_model_path if outputs.latest is not None else ""
    if test:
        test_results = trainer.test(model, datamodule=datamodule, ckpt_path=best_path or None, verbose=False)
        metrics.update({key: _to_float(value) for key, value in test_results[0].items()})

    if isinstance(outputs.logger, TensorBoardLogger):
        outputs.logger.log_hyperparams(hparams, metrics={f"hp/{k.replace('/', '_')}": v for k, v in metrics.items()})
        outputs.logger.finalize("success")

    sections, section_keys = summary_sections(model, metrics)
    return FitResult(
        task=task.name,
        model=config.model,
        metrics=metrics,
        best_model_path=best_path,
        last_model_path=last_path,
        log_dir=outputs.logger.log_dir if isinstance(outputs.logger, TensorBoardLogger) else "",
        seconds=time.perf_counter() - started,
        train_seconds=train_seconds,
        baseline_name=model.baseline_name,
        sections=sections,
        section_keys=section_keys,
        settings_from_data=from_data,
        is_global_zero=trainer.is_global_zero,
    )


def _train(
    config: FitConfig,
    trainer: pl.Trainer,
    model: TaskModule,
    datamodule: TaskDataModule,
    outputs: _RunOutputs,
    resume_from: str | None,
) -> None:
    """``trainer.fit``; Ctrl-C becomes :class:`TrainingInterrupted` saying where the run is and how to go on."""
    sigint_handler = signal.getsignal(signal.SIGINT)
    try:
        with _without_interrupt_notice():
            trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from)
    except SystemExit:
        # Lightning turns Ctrl-C into a graceful shutdown (callbacks' on_exception, loggers closed, checkpoints
        # kept), ignores SIGINT from then on and calls sys.exit(1): say instead where the run is and how to go on.
        if not trainer.interrupted:
            raise
        if sigint_handler is not None:
            signal.signal(signal.SIGINT, sigint_handler)
        raise TrainingInterrupted(interrupted_message(config, trainer, outputs)) from None


class _InterruptNotice(logging.Filter):
    """Drops Lightning's "Detected KeyboardInterrupt, attempting graceful shutdown" line: the
    :class:`TrainingInterrupted` message that follows says more."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Detected KeyboardInterrupt" not in record.getMessage()


@contextlib.contextmanager
def _without_interrupt_notice() -> Iterator[None]:
    logger, notice = logging.getLogger("pytorch_lightning.utilities.rank_zero"), _InterruptNotice()
    logger.addFilter(notice)
    try:
        yield
    finally:
        logger.removeFilter(notice)


def interrupted_message(config: FitConfig, trainer: pl.Trainer, outputs: _RunOutputs) -> str:
    """One line for a run stopped by Ctrl-C: the epoch it was in and the command that continues it."""
    where = f"interrupted in epoch {trainer.current_epoch + 1} of {trainer.max_epochs}"
    if config.fast_dev_run or not isinstance(outputs.logger, TensorBoardLogger):
        return f"{where} (--fast-dev-run keeps no checkpoint)"
    run_config = Path(outputs.logger.log_dir) / CONFIG_FILE_NAME
    command = f"python -m lightning_app.fit --config {shlex.quote(str(run_config))}"
    saved = outputs.latest.best_model_path if outputs.latest is not None else ""
    last = Path(saved) if saved else None
    if last is None or not last.is_file():
        return f"{where}, before its first checkpoint; start again with: {command}"
    # "last" finds the newest last.ckpt of <log_dir>/<task>/version_*: this one, unless the run has a folder of its
    # own (a tune trial) or another run saved since; then the file itself (which resumes in a new version folder).
    newest = find_last_checkpoint(config.log_dir, config.task)
    which = "last" if newest is not None and newest.resolve() == last.resolve() else shlex.quote(str(last))
    holds = f"{last} holds the end of epoch {_checkpoint_epoch(last)}"
    return f"{where}; {holds}; resume with: {command} --ckpt-path {which}"


def _checkpoint_epoch(path: Path) -> str:
    """The 1-based number of the last epoch a ``last.ckpt`` completed (``"?"`` if it cannot be read)."""
    try:
        return str(int(read_checkpoint(path)["epoch"]) + 1)
    except (UsageError, KeyError, TypeError, ValueError):
        return "?"


def format_summary(result: FitResult) -> str:
    """A plain-text report: metrics table (model beside its baseline), checkpoint, TensorBoard command."""
    lines = [f"{result.task} ({result.model}) finished in {result.seconds:.1f} s", ""]
    if result.settings_from_data:
        lines += [f"set from the training data (flags override): {describe_settings(result.settings_from_data)}", ""]
    main = {key: value for key, value in result.metrics.items() if key not in result.section_keys}
    lines += [metrics_table(main, result.baseline_name), ""]
    lines += [line for section in result.sections for line in (section, "")]
    if result.best_model_path:
        lines.append(f"best checkpoint: {result.best_model_path}")
    if result.log_dir:
        lines.append(f"logs: {result.log_dir}")
        lines.append(f"review in TensorBoard: {result.tensorboard_command}")
    return "\n".join(lines)
