"""The result of ``python -m lightning_app.tune``: the best-trials table, the best trial tested once, its settings
written as ``best_config.yaml`` for ``python -m lightning_app.fit --config``, the optimisation history and
parameter-importance plots, and the closing summary that holds them.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from datamodules.files import atomic_write_bytes
from lightning_app.checkpoints import evaluate
from lightning_app.tables import format_table, metrics_table
from lightning_app.tune.params import format_value
from lightning_app.tune.study import Search, import_optuna, shown_url

if TYPE_CHECKING:
    import optuna

BEST_CONFIG_FILE = "best_config.yaml"
HISTORY_PLOT = "optimization_history.png"
IMPORTANCE_PLOT = "param_importances.png"
#: Rows of the best-trials table.
TOP_TRIALS = 5


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
    base = search.base
    metrics = evaluate(
        path,
        search.task.name,
        hardware=base.hardware,
        data={"data_dir": base.data_dir, "cache_dir": base.cache_dir, "num_workers": base.num_workers},
        limit_test_batches=base.limit_test_batches,
        deterministic=base.deterministic,
    )
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
