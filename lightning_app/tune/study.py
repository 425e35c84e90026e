"""The study of ``python -m lightning_app.tune``: what one process searches (:class:`Search`), Optuna's import,
the pruners, the database storage with its heartbeats, the lock that lets processes of one machine create a
SQLite study in turn, and creating, resuming or joining the study.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from lightning_app.config import FitConfig, apply_params
from lightning_app.errors import UsageError
from lightning_app.registry import Task
from lightning_app.tune.params import Param, describe
from lightning_app.tune.space import tunable_defaults

if TYPE_CHECKING:
    import optuna

INSTALL_HINT = 'pip install -e ".[tune]"'
#: A running trial records a heartbeat this often; one silent for the grace period (a process on another machine
#: that died) is marked failed. Trials of dead processes on this machine are marked failed at once.
HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 60


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

    def trial_config(self, params: dict[str, Any]) -> FitConfig:
        """The ``fit`` settings of a trial: the base with ``params``."""
        return replace(apply_params(self.base, params), enable_progress_bar=False)

    def trial_folder(self, number: int) -> str:
        """Trial ``number``'s run folder under ``<log_dir>/<task>/`` (``fit``'s ``run_version``)."""
        return f"{self.study_dir.name}/trial-{number}"


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
