"""``python -m lightning_app.tune --task NAME --trials N``: hyperparameter search with Optuna over ``fit`` runs.

Each trial is an ordinary :func:`lightning_app.training.fit` run with values sampled from the task's search
space (declared in the registry next to its defaults; ``--search-space NAME=SPEC`` changes it), logged to
``<log_dir>/<task>/tune-<study>/trial-<k>`` and scored on the task's validation metric (its best value over the
epochs), never on test. A pruner stops unpromising trials from their per-epoch validation metric. The study lives
in a database (by default ``study.db`` in the study folder), so a killed search continues with ``--resume``, and
several processes given the same ``--storage`` and ``--study-name`` share it. At the end the best trial's
checkpoint is tested once, its settings written as ``best_config.yaml`` for ``python -m lightning_app.fit
--config``, and the optimisation history and parameter importances drawn next to the study.

Optuna is an optional dependency (``pip install -e ".[tune]"``), imported only when a search runs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import re
import socket
import sys
import time
import typing
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl

from datamodules.files import atomic_write_bytes
from lightning_app.callbacks import NonFiniteLossError
from lightning_app.cli import add_data_arguments, parse_devices, parse_limit, run_cli
from lightning_app.config import FitConfig, check_arguments, dump_config
from lightning_app.errors import UsageError
from lightning_app.inference import load_checkpoint
from lightning_app.registry import TASKS, Task
from lightning_app.search_space import (
    ARGUMENT_PREFIXES,
    SYNTAX,
    TUNABLE_FLAGS,
    Param,
    describe,
    format_scalar,
    parse_param,
)
from lightning_app.tables import format_table, metrics_table
from lightning_app.training import build_trainer, fit, resolve_config

if TYPE_CHECKING:
    import optuna

INSTALL_HINT = 'pip install -e ".[tune]"'
BEST_CONFIG_FILE = "best_config.yaml"
HISTORY_PLOT = "optimization_history.png"
IMPORTANCE_PLOT = "param_importances.png"
#: Rows of the best-trials table.
TOP_TRIALS = 5
#: A running trial records a heartbeat this often; one silent for the grace period (a process on another machine
#: that died) is marked failed. Trials of dead processes on this machine are marked failed at once.
HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 60
#: How often a process that has nothing left to start looks at the trials other processes are running.
POLL_SECONDS = 1.0
#: Identifies this machine in the ``worker`` attribute of the trials it runs: hostname and hardware address.
HOST_ID = f"{socket.gethostname()}-{uuid.getnode():012x}"
STUDY_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def import_optuna() -> ModuleType:
    """The ``optuna`` module, or a one-line :class:`UsageError` saying how to install it."""
    try:
        import optuna
    except ImportError:
        raise UsageError(f"hyperparameter search needs optuna, which is not installed; run: {INSTALL_HINT}") from None
    return optuna


# Pruners by --pruner name, built from optuna and the number of epochs a trial runs before it may be pruned.
PRUNERS: dict[str, Callable[[ModuleType, int], Any]] = {
    "median": lambda optuna, warmup: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=warmup),
    "halving": lambda optuna, warmup: optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, warmup)),
    "none": lambda optuna, warmup: optuna.pruners.NopPruner(),
}


# --- search spaces ---------------------------------------------------------------------------------------------


def tunable_defaults(task: Task, model: str | None) -> dict[str, Any]:
    """Every name a search space of ``task``/``model`` may hold, with the value ``fit`` uses by default."""
    _, _, resolved = resolve_config(FitConfig(task=task.name, model=model))
    defaults: dict[str, Any] = {flag: getattr(resolved, flag) for flag in TUNABLE_FLAGS}
    for prefix in ARGUMENT_PREFIXES:
        defaults.update({f"{prefix}.{name}": value for name, value in getattr(resolved, prefix).items()})
    return defaults


def apply_params(config: FitConfig, params: dict[str, Any]) -> FitConfig:
    """``config`` with sampled ``params`` (search-space keys) set: flags directly, class arguments in their dicts."""
    changes: dict[str, Any] = {name: value for name, value in params.items() if "." not in name}
    for prefix in ARGUMENT_PREFIXES:
        arguments = {name.partition(".")[2]: value for name, value in params.items() if name.startswith(f"{prefix}.")}
        if arguments:
            changes[prefix] = {**getattr(config, prefix), **arguments}
    return replace(config, **changes)


def check_search_space(task: Task, model: str | None, space: dict[str, Param], where: str) -> None:
    """Raise a one-line :class:`UsageError` (starting with ``where``) for a name ``fit`` does not take or a value
    of the wrong type for its argument."""
    defaults = tunable_defaults(task, model)
    for name, param in space.items():
        if name not in defaults:
            raise UsageError(f"{where}: unknown parameter '{name}' for {task.name}; {tunable_help(defaults)}")
        for value in param.examples():
            config = apply_params(FitConfig(task=task.name, model=model), {name: value})
            try:
                if "." in name:
                    resolve_config(config)
                else:
                    check_arguments("fit", {name: typing.get_type_hints(FitConfig)[name]}, {name: value})
                    if isinstance(value, (int, float)) and value <= 0:
                        raise UsageError(f"'{name}' must be positive, got {value}")
            except UsageError as err:
                raise UsageError(f"{where}: {name}={param}: {err}") from None


def tunable_help(defaults: dict[str, Any]) -> str:
    return "the parameters are " + ", ".join(defaults)


def build_space(task: Task, model: str | None, overrides: Sequence[str], fixed: Sequence[str]) -> dict[str, Param]:
    """The registry's search space of ``task``/``model`` with ``--search-space NAME=SPEC`` ``overrides`` on top and
    the ``fixed`` flags (given on the command line) taken out."""
    space = dict(task.variant(model).search_space)
    defaults = tunable_defaults(task, model)
    given: dict[str, Param] = {}
    for override in overrides:
        name, equals, spec = override.partition("=")
        name = name.strip()
        if not equals or not name or not spec.strip():
            raise UsageError(f"--search-space {override!r}: expected NAME=SPEC with SPEC one of {SYNTAX}")
        if name not in defaults:
            raise UsageError(f"--search-space {override}: unknown parameter '{name}'; {tunable_help(defaults)}")
        try:
            given[name] = parse_param(spec.strip(), defaults[name])
        except ValueError as err:
            raise UsageError(f"--search-space {override}: {err}") from None
    check_search_space(task, model, given, "--search-space")
    for flag in fixed:
        if flag in given:
            raise UsageError(f"--{flag.replace('_', '-')} fixes '{flag}', which --search-space also searches; drop one")
        space.pop(flag, None)
    space.update(given)
    if not space:
        raise UsageError(
            f"task {task.name} ({task.variant(model).description}) declares no search space here; "
            f"give one with --search-space NAME=SPEC ({tunable_help(defaults)})"
        )
    return space


# --- trials -----------------------------------------------------------------------------------------------------


class PruneUnpromisingTrial(pl.Callback):
    """Report the monitored validation metric to the Optuna trial after every validation epoch (not the sanity
    check) and stop the run with ``optuna.TrialPruned`` when the study's pruner says so."""

    def __init__(self, trial: optuna.Trial, monitor: str) -> None:
        self.trial = trial
        self.monitor = monitor

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None:
            return
        epoch = trainer.current_epoch
        self.trial.report(float(value), step=epoch)
        if self.trial.should_prune():
            raise import_optuna().TrialPruned(f"pruned after epoch {epoch} at {self.monitor} {float(value):.4g}")


class SurplusTrial(Exception):
    """Two processes asked for the study's last trial at once; the later-numbered one is not run."""


@dataclass
class Search:
    """One process's part in a study: what every trial starts from, what it searches, how many trials in all."""

    task: Task
    base: FitConfig
    space: dict[str, Param]
    trials: int
    study_name: str
    storage_url: str
    study_dir: Path

    @property
    def monitor(self) -> str:
        return self.task.module.monitor

    @property
    def maximize(self) -> bool:
        return self.task.module.monitor_mode == "max"

    @property
    def objective_name(self) -> str:
        return f"{self.monitor}_best"

    def trial_config(self, params: dict[str, Any], number: int) -> FitConfig:
        """The ``fit`` settings of trial ``number``: the base with ``params``, in its own folder, never tested."""
        return replace(
            apply_params(self.base, params),
            run_version=f"{self.study_dir.name}/trial-{number}",
            test=False,
            enable_progress_bar=False,
        )


def worker_id() -> str:
    """This process, as recorded on the trials it runs: ``<host id>:<pid>``."""
    return f"{HOST_ID}:{os.getpid()}"


def is_dead_local_worker(worker: str) -> bool:
    """Whether ``worker`` names a process of this machine that no longer exists (other machines: unknown, False)."""
    host, _, pid = worker.rpartition(":")
    if host != HOST_ID or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def objective(search: Search, trial: optuna.Trial) -> float:
    """Train one trial and return its best validation value; trials past the study's total are not run."""
    optuna = import_optuna()
    trial.set_user_attr("worker", worker_id())
    counted = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING)
    earlier = [t for t in trial.study.get_trials(deepcopy=False, states=counted) if t.number < trial.number]
    if len(earlier) >= search.trials:
        trial.set_user_attr("surplus", True)
        raise SurplusTrial(f"the study already has {search.trials} trials")
    params = {name: param.suggest(trial, name) for name, param in search.space.items()}
    config = search.trial_config(params, trial.number)
    _, _, resolved = resolve_config(config)
    trial.set_user_attr("config", dump_config(resolved))  # without run_version and test: see config.NOT_IN_FILE
    result = fit(replace(config, extra_callbacks=[PruneUnpromisingTrial(trial, search.monitor)]))
    trial.set_user_attr("best_model_path", result.best_model_path)
    trial.set_user_attr("log_dir", result.log_dir)
    return result.metrics[search.objective_name]


def fail_dead_trials(study: optuna.Study) -> None:
    """Mark failed the running trials whose process is gone: on this machine at once, elsewhere after the grace
    period without a heartbeat. Their folders keep the partial logs; they do not count towards ``--trials``."""
    optuna = import_optuna()
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker", "")
        if worker and is_dead_local_worker(worker):
            with contextlib.suppress(ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
                study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
                print(f"trial {trial.number}: its process ({worker}) is gone; marked failed", flush=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def trial_line(search: Search, trial: optuna.trial.FrozenTrial) -> str:
    """One line per trial as it ends: state, value or reason, duration, parameters."""
    seconds = trial.duration.total_seconds() if trial.duration else 0.0
    params = " ".join(f"{name.rpartition('.')[2]}={format_value(value)}" for name, value in trial.params.items())
    state = trial.state.name.lower()
    if state == "complete":
        state = f"{search.objective_name} {trial.value:.4g}"
    elif state == "pruned":
        state = f"pruned after epoch {trial.last_step}"
    return f"trial {trial.number}: {state} ({seconds:.1f} s) {params}"


def format_value(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else format_scalar(value)


def run_trials(search: Search, study: optuna.Study) -> int:
    """Run trials until the study holds ``search.trials`` finished (complete or pruned) ones; return how many this
    process ran. A process with nothing left to start waits for the trials other processes are running."""
    optuna = import_optuna()
    states = optuna.trial.TrialState
    ran = failed = 0
    waiting = False
    asked: list[int] = []  # the trial this process's last optimize call ran

    def run(trial: optuna.Trial) -> float:
        asked.append(trial.number)
        return objective(search, trial)

    while True:
        fail_dead_trials(study)
        trials = study.get_trials(deepcopy=False)
        finished = sum(t.state in (states.COMPLETE, states.PRUNED) for t in trials)
        running = sum(t.state == states.RUNNING for t in trials)
        if finished >= search.trials:
            return ran
        if failed >= search.trials:
            print(f"stopping: {failed} trials failed in this process; check the search space", flush=True)
            return ran
        if finished + running >= search.trials:
            if not waiting:
                print(f"waiting for {running} trial(s) running in other processes", flush=True)
                waiting = True
            time.sleep(POLL_SECONDS)
            continue
        asked.clear()
        study.optimize(run, n_trials=1, catch=(NonFiniteLossError, SurplusTrial))
        for trial in study.get_trials(deepcopy=False):
            if trial.number not in asked:
                continue
            if trial.user_attrs.get("surplus"):
                print(f"trial {trial.number}: not run, another process took the study's last trial", flush=True)
                continue
            ran += 1
            failed += trial.state == states.FAIL
            print(trial_line(search, trial), flush=True)


# --- the study --------------------------------------------------------------------------------------------------


def shown_url(url: str) -> str:
    """``url`` with any password masked, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def open_storage(url: str) -> Any:
    """Optuna's database storage at ``url`` with heartbeats, or a one-line :class:`UsageError` naming the URL."""
    optuna = import_optuna()
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS
            )
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(
            f"--storage {shown_url(url)}: cannot open it ({reason}); give a database URL such as "
            "sqlite:///path/study.db, postgresql://user:password@host/db or mysql+pymysql://user:password@host/db"
        ) from None


def creation_lock(url: str) -> contextlib.AbstractContextManager[Any]:
    """A file lock beside a SQLite database, so processes of one machine create its tables and the study in turn."""
    from filelock import FileLock

    prefix = "sqlite:///"
    database = Path(url[len(prefix) :]) if url.startswith(prefix) else None
    if database is None or database.name in ("", ":memory:") or not database.parent.is_dir():
        return contextlib.nullcontext()  # not a SQLite file (or one that cannot open: open_storage says why)
    return FileLock(f"{database}.lock")


def open_study(search: Search, resume: bool, pruner: str, sampler_seed: int | None) -> optuna.Study:
    """Create the study, or with ``resume`` continue (or join) it; check it belongs to this task and model."""
    optuna = import_optuna()
    warmup = (search.base.max_epochs or 1) // 4
    with creation_lock(search.storage_url):
        storage = open_storage(search.storage_url)
        existing = {summary.study_name: summary for summary in optuna.get_all_study_summaries(storage)}
        where = f"study '{search.study_name}' in {shown_url(search.storage_url)}"
        if search.study_name in existing and not resume:
            raise UsageError(
                f"{where} already exists with {existing[search.study_name].n_trials} trials; pass --resume to "
                "continue it, or another --study-name"
            )
        if search.study_name not in existing:
            leftovers = sorted(path.name for path in search.study_dir.glob("trial-*"))
            if leftovers:
                raise UsageError(
                    f"{search.study_dir} holds {leftovers[0]} of an earlier study that {where} does not know; "
                    "remove the folder or choose another --study-name"
                )
        study = optuna.create_study(
            storage=storage,
            study_name=search.study_name,
            direction="maximize" if search.maximize else "minimize",
            sampler=optuna.samplers.TPESampler(seed=sampler_seed),
            pruner=PRUNERS[pruner](optuna, warmup),
            load_if_exists=True,
        )
        owner = {"task": search.task.name, "model": search.base.model}
        if search.study_name not in existing:
            for key, value in owner.items():
                study.set_user_attr(key, value)
            study.set_user_attr("search_space", describe(search.space))
            enqueue_defaults(search, study)
        else:
            recorded = {key: study.user_attrs.get(key) for key in owner}
            if recorded != owner:
                raise UsageError(
                    f"{where} searches task {recorded['task']} model {recorded['model']}, not "
                    f"{owner['task']} model {owner['model']}; choose another --study-name"
                )
    return study


def enqueue_defaults(search: Search, study: optuna.Study) -> None:
    """Make trial 0 the registry's settings, so the table shows what the search gained (when the space holds them)."""
    defaults = tunable_defaults(search.task, search.base.model)
    params = {name: defaults[name] for name in search.space}
    if all(param.contains(params[name]) for name, param in search.space.items()):
        study.enqueue_trial(params, user_attrs={"registry_default": True})


# --- the result -------------------------------------------------------------------------------------------------


def best_trials_table(search: Search, complete: list[optuna.trial.FrozenTrial]) -> str:
    """The ``TOP_TRIALS`` best complete trials: number, validation value, seconds, parameters."""
    ranked = sorted(complete, key=lambda t: t.value, reverse=search.maximize)[:TOP_TRIALS]
    names = list(dict.fromkeys(name for trial in ranked for name in trial.params))
    short = [name.rpartition(".")[2] for name in names]
    labels = [s if short.count(s) == 1 else n for n, s in zip(names, short, strict=True)]
    rows = [
        [
            f"{trial.number}" + (" (registry default)" if trial.user_attrs.get("registry_default") else ""),
            trial.value,
            round(trial.duration.total_seconds(), 1) if trial.duration else None,
            *(format_value(trial.params[name]) if name in trial.params else "" for name in names),
        ]
        for trial in ranked
    ]
    return format_table(["trial", search.objective_name, "seconds", *labels], rows)


def evaluate_best_trial(search: Search, study: optuna.Study, best: optuna.trial.FrozenTrial) -> tuple[dict, str]:
    """The best trial's test metrics and a note: measured once per best trial (kept in the study), or why not."""
    recorded = study.user_attrs.get("best_test")
    if recorded and recorded.get("trial") == best.number:
        return recorded["metrics"], "measured once, when it became the best"
    path = best.user_attrs.get("best_model_path", "")
    if not path or not Path(path).is_file():
        return {}, (
            f"its checkpoint {path or '(none)'} is not on this machine; test it where it ran: "
            f"python -m lightning_app.test --task {search.task.name} --ckpt {path or 'CKPT'}"
        )
    loaded = load_checkpoint(path, search.task.name)
    base = search.base
    datamodule = loaded.datamodule(data_dir=base.data_dir, cache_dir=base.cache_dir, num_workers=base.num_workers)
    trainer = build_trainer(replace(base, enable_progress_bar=False), logger=False, callbacks=[], log_every_n_steps=50)
    results = trainer.test(loaded.module, datamodule=datamodule, verbose=False)
    metrics = {key: float(value) for key, value in results[0].items()}
    study.set_user_attr("best_test", {"trial": best.number, "metrics": metrics})
    return metrics, f"checkpoint {path}"


def write_best_config(search: Search, best: optuna.trial.FrozenTrial) -> Path:
    """The best trial's resolved settings as a file ``python -m lightning_app.fit --config`` accepts."""
    path = search.study_dir / BEST_CONFIG_FILE
    header = (
        f"# Best trial {best.number} of study {search.study_name}: {search.objective_name} {best.value:.6g}.\n"
        f"# Retrain it: python -m lightning_app.fit --config {path}\n"
    )
    atomic_write_bytes(path, (header + best.user_attrs["config"]).encode())
    return path


def write_plots(study: optuna.Study, study_dir: Path, complete: int) -> list[str]:
    """Optimisation history and (two complete trials or more) parameter importances as PNGs; notes on each."""
    optuna = import_optuna()
    import matplotlib.pyplot as plt

    notes = []
    plots = [(HISTORY_PLOT, optuna.visualization.matplotlib.plot_optimization_history)]
    if complete >= 2:
        plots.append((IMPORTANCE_PLOT, optuna.visualization.matplotlib.plot_param_importances))
    else:
        notes.append(f"{IMPORTANCE_PLOT} skipped: importances need two complete trials")
    for name, plot in plots:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                axes = plot(study)
            figure = axes.figure
            figure.set_size_inches(8, 5)
            figure.tight_layout()
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", dpi=100)
            plt.close(figure)
            atomic_write_bytes(study_dir / name, buffer.getvalue())
            notes.append(str(study_dir / name))
        except (ValueError, RuntimeError) as err:  # e.g. no parameter varied, so no importance to compute
            notes.append(f"{name} skipped: {str(err).splitlines()[0]}")
    return notes


def summarize(search: Search, study: optuna.Study, ran: int, seconds: float) -> str:
    """The closing report: counts, best trials, the best trial's test metrics, its config file, plots."""
    optuna = import_optuna()
    states = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == states.COMPLETE]
    pruned = sum(t.state == states.PRUNED for t in trials)
    failed = sum(t.state == states.FAIL and not t.user_attrs.get("surplus") for t in trials)
    direction = "higher" if search.maximize else "lower"
    lines = [
        f"study {search.study_name} ({search.task.name}, {search.base.model}) in {shown_url(search.storage_url)}",
        f"{len(complete) + pruned} trials finished: {len(complete)} complete, {pruned} pruned; {failed} failed. "
        f"This process ran {ran} in {seconds:.0f} s.",
        "",
    ]
    if not complete:
        lines.append("no trial completed, so there is no best trial yet")
        return "\n".join(lines)
    best = study.best_trial
    lines += [f"best trials ({search.objective_name}, {direction} is better; validation split):"]
    lines += [best_trials_table(search, complete), ""]
    default = next((t for t in complete if t.user_attrs.get("registry_default")), None)
    if default is not None and default.number != best.number:
        lines += [f"registry default (trial {default.number}): {default.value:.4g}; best: {best.value:.4g}", ""]
    metrics, note = evaluate_best_trial(search, study, best)
    lines.append(f"best trial {best.number} on the test split ({note}):")
    if metrics:
        lines.append(metrics_table(metrics, search.task.module.baseline_name))
    config_path = write_best_config(search, best)
    lines += [
        "",
        f"best settings: {config_path}",
        f"retrain: python -m lightning_app.fit --config {config_path}",
        "plots: " + "; ".join(write_plots(study, search.study_dir, len(complete))),
        f"review in TensorBoard: tensorboard --logdir {search.study_dir}",
    ]
    return "\n".join(lines)


# --- command line -----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_app.tune",
        description=(
            "Search a task's hyperparameters with Optuna: each trial is a fit run scored on the validation metric; "
            "the study lives in a database, so it resumes after a kill and several processes can share it."
        ),
        epilog=space_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--task", required=True, choices=sorted(TASKS))
    parser.add_argument("--model", default=None, help="model variant of the task (default: 'default')")
    parser.add_argument("--trials", type=int, required=True, help="trials to finish in the study, all processes")
    parser.add_argument(
        "--search-space", action="append", default=[], metavar="NAME=SPEC",
        help=f"add or replace one parameter of the task's space; SPEC: {SYNTAX} (repeat the flag)",
    )  # fmt: skip
    parser.add_argument("--study-name", default=None, help="default: <task>-<model>")
    parser.add_argument(
        "--storage", default=None, metavar="URL",
        help="database URL (default: sqlite:///<log-dir>/<task>/tune-<study>/study.db); several machines: "
        "postgresql://... or mysql://...",
    )  # fmt: skip
    parser.add_argument("--resume", action="store_true", help="continue or join the study if it exists")
    parser.add_argument("--pruner", choices=sorted(PRUNERS), default="median", help="default: median")
    parser.add_argument("--sampler-seed", type=int, default=None, help="seed of the TPE sampler (one process)")
    fixed = parser.add_argument_group("every trial (a flag given fixes that parameter: it is not searched)")
    fixed.add_argument("--max-epochs", type=int, default=None, help="default: the model variant's, or searched")
    fixed.add_argument("--lr", "--learning-rate", dest="lr", type=float, default=None)
    fixed.add_argument("--seed", type=int, default=42, help="seed of every trial's split, initialisation, shuffling")
    fixed.add_argument("--deterministic", action="store_true")
    fixed.add_argument("--limit-train-batches", type=parse_limit, default=None, metavar="N|FRACTION")
    fixed.add_argument("--limit-val-batches", type=parse_limit, default=None, metavar="N|FRACTION")
    add_data_arguments(parser)
    hardware = parser.add_argument_group("hardware (one device per trial; run one process per device)")
    hardware.add_argument("--accelerator", default="auto", help="cpu, gpu, mps or auto (default: auto)")
    hardware.add_argument("--devices", type=parse_devices, default=1, help="one device: 1 or its index list")
    hardware.add_argument("--precision", default="32-true")
    parser.add_argument("--log-dir", default="runs", help="trials go to <log-dir>/<task>/tune-<study> (default: runs)")
    return parser


def space_help() -> str:
    lines = ["search spaces (--task NAME --model VARIANT), changed with --search-space NAME=SPEC:"]
    for task in TASKS.values():
        for name, variant in task.variants.items():
            lines.append(f"  {task.name} {name}: {describe(variant.search_space) or '(none: give --search-space)'}")
    lines.append("example: --search-space lr=1e-4:1e-2:log --search-space module_kwargs.hidden=32,64,128")
    return "\n".join(lines)


def search_from_args(args: argparse.Namespace) -> tuple[Search, dict[str, Any]]:
    """The search the flags describe, checked before anything is written; and the study options."""
    if args.trials < 1:
        raise UsageError(f"--trials {args.trials}: give the number of trials to finish, at least 1")
    if isinstance(args.devices, int) and args.devices > 1:
        raise UsageError(f"--devices {args.devices}: a trial runs on one device; start one tune process per device")
    task = TASKS[args.task]
    try:
        task.variant(args.model)
    except KeyError as err:
        raise UsageError(err.args[0]) from None
    fixed = [flag for flag in TUNABLE_FLAGS if getattr(args, flag) is not None]
    space = build_space(task, args.model, args.search_space, fixed)
    base = FitConfig(
        task=args.task,
        model=args.model,
        **{name: getattr(args, name) for name in (*TUNABLE_FLAGS, "seed", "deterministic", "log_dir")},
        **{name: getattr(args, name) for name in ("limit_train_batches", "limit_val_batches")},
        **{name: getattr(args, name) for name in ("data_dir", "cache_dir", "num_workers")},
        **{name: getattr(args, name) for name in ("accelerator", "devices", "precision")},
        enable_progress_bar=False,
    )
    _, _, base = resolve_config(base)
    study_name = args.study_name or f"{task.name}-{base.model}"
    if not STUDY_NAME_PATTERN.fullmatch(study_name):
        raise UsageError(f"--study-name {study_name!r}: use letters, digits, '.', '_' and '-' (it names a folder)")
    study_dir = Path(base.log_dir, task.name, f"tune-{study_name}")
    storage = args.storage or f"sqlite:///{study_dir / 'study.db'}"
    search = Search(task, base, space, args.trials, study_name, storage, study_dir)
    return search, {"resume": args.resume, "pruner": args.pruner, "sampler_seed": args.sampler_seed}


@contextlib.contextmanager
def quiet_libraries(optuna: ModuleType) -> Iterator[None]:
    """Lightning's per-run banners and Optuna's own trial log off (``tune`` prints one line per trial)."""
    lightning = logging.getLogger("pytorch_lightning")
    level, verbosity = lightning.level, optuna.logging.get_verbosity()
    lightning.setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        lightning.setLevel(level)
        optuna.logging.set_verbosity(verbosity)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    optuna = import_optuna()
    search, options = search_from_args(args)
    search.study_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with quiet_libraries(optuna):
        study = open_study(search, **options)
        finished = sum(t.state.is_finished() and t.state.name != "FAIL" for t in study.get_trials(deepcopy=False))
        print(
            f"study {search.study_name}: {finished} of {search.trials} trials finished; searching "
            f"{describe(search.space)}; trials in {search.study_dir}",
            flush=True,
        )
        ran = run_trials(search, study)
        print(summarize(search, study, ran, time.perf_counter() - started))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
