"""The trials of ``python -m lightning_app.tune``: one trial as a ``fit`` run (:func:`objective`), the callback
that reports each validation epoch to the pruner, which process runs which trial, the trials of processes that
died, and the loop that runs trials until the study holds ``--trials`` finished ones across all its processes.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
import warnings
from typing import TYPE_CHECKING

import pytorch_lightning as pl

from lightning_app.callbacks import NonFiniteLossError
from lightning_app.config import dump_config, resolve_config
from lightning_app.training import fit
from lightning_app.tune.params import format_value
from lightning_app.tune.study import Search, import_optuna

if TYPE_CHECKING:
    import optuna

#: How often a process that has nothing left to start looks at the trials other processes are running.
POLL_SECONDS = 1.0
#: Identifies this machine in the ``worker`` attribute of the trials it runs: hostname and hardware address.
HOST_ID = f"{socket.gethostname()}-{uuid.getnode():012x}"


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
    config = search.trial_config(params)
    _, _, resolved = resolve_config(config)
    trial.set_user_attr("config", dump_config(resolved))
    # Trials are never tested: only the study's best is (evaluate_best_trial).
    pruner = PruneUnpromisingTrial(trial, search.monitor)
    result = fit(config, callbacks=[pruner], test=False, run_version=search.trial_folder(trial.number))
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


def run_trials(search: Search, study: optuna.Study) -> int:
    """Run trials until the study holds ``search.trials`` finished (complete or pruned) ones; return how many this
    process ran. A process with nothing left to start waits for the trials other processes are running.

    Optuna's ``MaxTrialsCallback`` is not used: it stops a process only after a trial ends, so two processes could
    both start the study's last trial, and it would not wait for (and take over from) other processes' trials.
    """
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
