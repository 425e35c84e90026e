"""``python -m lightning_app.backtest --task covid19``: score the count forecasters at weekly origins, as the
forecast hubs score them, against the hubs' baseline.

Every series is scored at ``--origins N`` weekly forecast origins: origin ``k`` (1 = the latest) is the last day
before the series' ``k``-th last week, and the forecast for days 1..7 after it is scored against those days. Two
evaluations, each training its own models:

* **rolling origin** (``fold = "rolling"``): for each ``k`` one model is trained on every series cut after its
  ``k``-th last week (``T - 7 (k - 1)`` days kept), with that last week as the DataModule's test week (never
  trained on) and the week before it as validation (checkpoint selection);
* **leave-series-out** (``fold = 0 .. K-1``): the series are dealt into ``--folds K`` folds (a seeded
  permutation); for each fold one model is trained on the whole of the other series (their last week as
  validation) and the fold's series, never seen in training, are forecast at the same ``N`` origins from the
  window before each origin only. This measures what a user gets on a new series from a model trained on a panel;
  where other series cover the same calendar days they may carry information about them (national 2020 series
  share their seasons), which the rolling-origin evaluation excludes.

Every variant trains on the backtest's panel with its own data settings (window, batch size, counts), a 7-day
horizon and a validation week; a variant's ``extra_series`` does not apply (the tutorial's "China only" included):
the series scored are the series trained on.

``--model baseline`` scores the hubs' baseline itself (last value flat, quantiles from the series' symmetrised
past one-day changes widened by sqrt(h); its relative WIS is 1 by definition): useful for its coverage.

Scores (:func:`pooled_figures`, computed from the rows ``--output`` writes, so anyone can recompute them): relative
WIS = geometric mean over series x count columns of (mean WIS / mean baseline WIS over origins and horizons),
pairs where both are 0 left out; relative MAE of the median against persistence (the baseline's median) the same
way; the share of actual days inside the central 50/80/95% intervals; relative WIS and 80% coverage per horizon.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import math
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from tqdm.auto import tqdm

from datamodules import PACKAGED_DATA_DIR, Covid19DataModule
from datamodules.count_series import level_index
from datamodules.covid import BUNDLED_PANEL
from datamodules.errors import DataError
from datamodules.files import atomic_write_bytes
from datamodules.panels import Series, read_panel
from lightning_app.callbacks import FiniteLossGuard
from lightning_app.checkpoints import read_checkpoint
from lightning_app.cli import add_data_arguments, add_hardware_arguments, run_cli
from lightning_app.config import FitConfig, build_trainer, resolve_config
from lightning_app.errors import UsageError
from lightning_app.forecast_scores import (
    CENTRAL_INTERVALS,
    hub_baseline_quantiles,
    relative_score,
    weighted_interval_score,
)
from lightning_app.models import TaskModule
from lightning_app.models.covid import LEVELS
from lightning_app.registry import TASKS, get_task
from lightning_app.tables import format_table
from lightning_app.training import build_module, training_steps_per_epoch

#: Days per scored week: the forecast horizons 1..7 of every origin, and the step between origins.
WEEK = 7
#: The columns of ``--output``, one row per series x count column x origin x horizon.
CSV_COLUMNS = (
    "series",
    "column",
    "origin",
    "horizon",
    "fold",
    "y",
    "median",
    "wis",
    "baseline_wis",
    "abs_error",
    "baseline_abs_error",
    "in_50",
    "in_80",
    "in_95",
)
ROLLING = "rolling"
LEAVE_SERIES_OUT = "leave-series-out"
EVALUATIONS = (ROLLING, LEAVE_SERIES_OUT)
#: ``--model baseline``: the hubs' baseline scored against itself.
BASELINE = "baseline"
#: The task a backtest forecasts (the only one with count series).
TASK = "covid19"

#: A forecaster: the daily values ``float32[W, C]`` up to an origin -> count quantiles ``float[7, C, L]`` at LEVELS.
Forecaster = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class FitRecord:
    """One training run of a backtest: which series its DataModule held (name -> the last date of its daily
    values there), which it scored, and how long ``trainer.fit`` took. ``fold`` is the rows' ``fold`` value
    (``"rolling"`` or the fold number), ``name`` the run's (its log folder under ``--log-dir``)."""

    evaluation: str
    fold: str
    name: str
    trained_on: dict[str, str]
    scored: list[str]
    seconds: float


@dataclass
class BacktestResult:
    model: str
    rows: list[dict[str, Any]]
    fits: list[FitRecord] = field(default_factory=list)

    @property
    def figures(self) -> dict[str, dict[str, float]]:
        return pooled_figures(self.rows)


# --- data ---------------------------------------------------------------------------------------------------------


def default_panel() -> list[Series]:
    """The bundled China series (named ``china``) and the bundled panel of 34 national series."""
    china = read_panel(PACKAGED_DATA_DIR / "covid19" / "covid-19.csv")
    panel = read_panel(BUNDLED_PANEL)
    names = {one.name for one in panel}
    china = [replace(one, name="china") if "china" not in names else one for one in china]
    if panel and panel[0].columns != china[0].columns:
        raise DataError(BUNDLED_PANEL, f"columns {panel[0].columns} differ from {china[0].columns}")
    return sorted([*china, *panel], key=lambda one: one.name)


def truncated(series: Series, days: int) -> Series:
    """``series`` with its first ``days`` rows only."""
    return replace(series, dates=series.dates[:days], values=series.values[:days])


def check_lengths(series: Sequence[Series], origins: int, window: int, counts: str) -> None:
    """A one-line :class:`DataError` naming the file of a series too short for ``origins`` weekly origins.

    Both evaluations need the same: the rolling fit of the oldest origin keeps ``T - 7 (N - 1)`` days for a
    ``window``-day window, a training day, a validation and a test week; leave-series-out trains on ``T - 7 N``."""
    lost = 1 if counts == "cumulative" else 0
    needed = window + WEEK * origins + WEEK + 1 + lost
    for one in series:
        if len(one.dates) < needed:
            raise DataError(
                one.path,
                f"series '{one.name}': {len(one.dates)} days are too few for --origins {origins} with a "
                f"{window}-day window (needs at least {needed} days: the window, 1 training day, a validation week "
                f"and {origins} scored week(s)" + (", + 1 for differencing cumulative counts)" if lost else ")"),
            )


# --- scoring ------------------------------------------------------------------------------------------------------


def score_origin(
    series: str,
    columns: Sequence[str],
    dates: Sequence[str],
    daily: torch.Tensor,
    origin: int,
    fold: str,
    forecaster: Forecaster | None,
    window: int,
) -> list[dict[str, Any]]:
    """The rows of one series at one origin (index into its daily values): the forecast from the ``window`` days
    ending at ``origin`` (``forecaster``; ``None``: the baseline) against days ``origin + 1 .. origin + 7`` and the
    hubs' baseline from the series' daily history up to the origin (negative days read as 0)."""
    actual = daily[origin + 1 : origin + 1 + WEEK].double()  # [7, C]
    baseline = hub_baseline_quantiles(daily[: origin + 1].clamp_min(0).double(), range(1, WEEK + 1), LEVELS)
    # [7, C, L]
    quantiles = baseline if forecaster is None else forecaster(daily[origin + 1 - window : origin + 1]).double()
    median, baseline_median = quantiles[..., level_index(0.5)], baseline[..., level_index(0.5)]
    wis = weighted_interval_score(quantiles, LEVELS, actual)
    baseline_wis = weighted_interval_score(baseline, LEVELS, actual)
    inside = {}
    for width in CENTRAL_INTERVALS:
        tail = (1 - width / 100) / 2
        lower, upper = quantiles[..., level_index(tail)], quantiles[..., level_index(1 - tail)]
        inside[width] = (lower <= actual) & (actual <= upper)
    rows = []
    for column_index, column in enumerate(columns):
        for step in range(WEEK):
            at = (step, column_index)
            rows.append(
                {
                    "series": series,
                    "column": column,
                    "origin": dates[origin],
                    "horizon": step + 1,
                    "fold": fold,
                    "y": float(actual[at]),
                    "median": float(median[at]),
                    "wis": float(wis[at]),
                    "baseline_wis": float(baseline_wis[at]),
                    "abs_error": float((actual[at] - median[at]).abs()),
                    "baseline_abs_error": float((actual[at] - baseline_median[at]).abs()),
                    **{f"in_{width}": int(inside[width][at]) for width in CENTRAL_INTERVALS},
                }
            )
    return rows


def _evaluation(row: Mapping[str, Any]) -> str:
    return ROLLING if str(row["fold"]) == ROLLING else LEAVE_SERIES_OUT


def _relative(rows: Sequence[Mapping[str, Any]], score: str, baseline: str) -> float:
    """Geometric mean over series x columns of mean ``score`` / mean ``baseline`` (pairs both 0 left out)."""
    totals: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for row in rows:
        entry = totals[(str(row["series"]), str(row["column"]))]
        entry[0] += float(row[score])
        entry[1] += float(row[baseline])
        entry[2] += 1
    if not totals:
        return math.nan
    model = torch.tensor([total / count for total, _, count in totals.values()], dtype=torch.float64)
    reference = torch.tensor([total / count for _, total, count in totals.values()], dtype=torch.float64)
    return float(relative_score(model, reference))


def _coverage(rows: Sequence[Mapping[str, Any]], width: int) -> float:
    return sum(float(row[f"in_{width}"]) for row in rows) / len(rows) if rows else math.nan


def figures_of(rows: Sequence[Mapping[str, Any]], per_horizon: bool = True) -> dict[str, float]:
    """Relative WIS, relative MAE and coverage of ``rows`` (and relative WIS and 80% coverage per horizon)."""
    figures = {
        "relative_wis": _relative(rows, "wis", "baseline_wis"),
        "relative_mae": _relative(rows, "abs_error", "baseline_abs_error"),
        **{f"coverage_{width}": _coverage(rows, width) for width in CENTRAL_INTERVALS},
    }
    if per_horizon:
        for horizon in range(1, WEEK + 1):
            at = [row for row in rows if int(row["horizon"]) == horizon]
            figures[f"relative_wis_h{horizon}"] = _relative(at, "wis", "baseline_wis")
            figures[f"coverage_80_h{horizon}"] = _coverage(at, 80)
    return figures


def pooled_figures(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """The pooled figures per evaluation (``"rolling"``, ``"leave-series-out"``) from ``--output`` rows (values as
    written or as read back from the CSV, strings included)."""
    by_evaluation: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        by_evaluation[_evaluation(row)].append(row)
    return {name: figures_of(by_evaluation[name]) for name in EVALUATIONS if by_evaluation[name]}


def series_figures(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per series, per evaluation: relative WIS and MAE (geometric mean over the columns) and 80% coverage."""
    grouped: dict[str, dict[str, list[Mapping[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        grouped[str(row["series"])][_evaluation(row)].append(row)
    return {
        name: {evaluation: figures_of(part, per_horizon=False) for evaluation, part in evaluations.items()}
        for name, evaluations in sorted(grouped.items())
    }


def write_rows(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """The rows as CSV with :data:`CSV_COLUMNS` (floats written exactly, as ``repr``)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(Path(path), buffer.getvalue().encode())


# --- training -----------------------------------------------------------------------------------------------------


def _quiet_lightning() -> None:
    """Lightning's per-fit notices (devices, parameter counts) would repeat for every fit."""
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


def train_module(
    config: FitConfig, datamodule: Covid19DataModule, log_dir: str | None, version: str
) -> tuple[TaskModule, float]:
    """Train the config's model on ``datamodule`` (seeded, as ``fit`` does) and return it with the weights of its
    best validation epoch (the module's ``monitor``) and the seconds ``trainer.fit`` took."""
    pl.seed_everything(config.seed, workers=True, verbose=False)
    module = build_module(config, datamodule)
    logger = CSVLogger(log_dir, name=TASK, version=version) if log_dir else False
    with tempfile.TemporaryDirectory(prefix="backtest-") as scratch:
        best = ModelCheckpoint(dirpath=scratch, monitor=module.monitor, mode=module.monitor_mode, save_top_k=1)
        trainer = build_trainer(
            config.hardware,
            logger=logger,
            callbacks=[FiniteLossGuard(), best],
            default_root_dir=scratch,
            enable_model_summary=False,
            log_every_n_steps=min(50, training_steps_per_epoch(config, datamodule)),
            **config.trainer_kwargs(),
        )
        started = time.perf_counter()
        trainer.fit(module, datamodule=datamodule)
        seconds = time.perf_counter() - started
        if best.best_model_path:
            module.load_state_dict(read_checkpoint(best.best_model_path)["state_dict"])
    module.cpu()
    return module, seconds


def module_forecaster(module: TaskModule) -> Forecaster:
    def forecast(window: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), module.eval_mode():
            return module.quantile_forecast(window.unsqueeze(0).float())[0, :WEEK]

    return forecast


@dataclass
class Settings:
    """What a backtest runs: the resolved fit settings (``None`` for the baseline: no training) and its own."""

    config: FitConfig
    model: str
    origins: int = 3
    folds: int = 5
    seed: int = 0
    log_dir: str | None = None
    progress: bool = True


def datamodule_for(settings: Settings, series: list[Series], test_days: int) -> Covid19DataModule:
    """A DataModule over ``series`` with the variant's data settings (a 7-day horizon, a validation week)."""
    config = settings.config
    kwargs = {
        **config.datamodule_kwargs,
        "extra_series": None,
        "horizon": WEEK,
        "val_days": WEEK,
        "test_days": test_days,
        "batch_size": config.batch_size,
        "num_workers": config.num_workers,
    }
    return Covid19DataModule.from_series(series, **kwargs)


def _record(
    evaluation: str, fold: str, name: str, datamodule: Covid19DataModule, scored: list[str], seconds: float
) -> FitRecord:
    names = datamodule.series_names
    trained_on = {one: dates[-1] for one, dates in zip(names, datamodule.daily_dates, strict=True)}
    return FitRecord(evaluation, fold, name, trained_on, scored, seconds)


def run_backtest(
    series: Sequence[Series],
    settings: Settings,
    on_fit: Callable[[FitRecord], None] | None = None,
) -> BacktestResult:
    """Both evaluations of ``settings.model`` on ``series`` (see the module docstring); ``on_fit`` is called after
    every training run with its :class:`FitRecord` (also kept in the result)."""
    config, counts = settings.config, settings.config.datamodule_kwargs.get("counts", "cumulative")
    window = int(config.datamodule_kwargs["window"])
    series = list(series)
    if settings.origins < 1:
        raise UsageError(f"--origins must be at least 1, got {settings.origins}")
    if not 2 <= settings.folds <= len(series):
        raise UsageError(f"--folds must be between 2 and the number of series ({len(series)}), got {settings.folds}")
    check_lengths(series, settings.origins, window, counts)
    daily = {one.name: one.daily(counts) for one in series}
    columns = series[0].columns
    result = BacktestResult(settings.model, [])
    trains = settings.model != BASELINE
    generator = torch.Generator().manual_seed(settings.seed)
    order = torch.randperm(len(series), generator=generator).tolist()
    folds = [[series[i] for i in sorted(order[f :: settings.folds])] for f in range(settings.folds)]
    total = (settings.origins + settings.folds) if trains else 0
    bar = tqdm(total=total, desc="backtest fits", unit="fit", disable=not settings.progress or not trains)

    def fitted(
        evaluation: str, fold: str, name: str, datamodule: Covid19DataModule, scored: list[str]
    ) -> Forecaster | None:
        if not trains:
            return None
        module, seconds = train_module(config, datamodule, settings.log_dir, name)
        record = _record(evaluation, fold, name, datamodule, scored, seconds)
        result.fits.append(record)
        if on_fit is not None:
            on_fit(record)
        bar.update()
        bar.set_postfix_str(f"last fit {seconds:.1f} s")
        return module_forecaster(module)

    names = [one.name for one in series]
    try:
        for k in range(1, settings.origins + 1):
            cut = [truncated(one, len(one.dates) - WEEK * (k - 1)) for one in series]
            forecaster = fitted(ROLLING, ROLLING, f"rolling-origin{k}", datamodule_for(settings, cut, WEEK), names)
            for one in series:
                dates, values = daily[one.name]
                origin = len(values) - WEEK * k - 1
                result.rows += score_origin(one.name, columns, dates, values, origin, ROLLING, forecaster, window)
        for number, held_out in enumerate(folds):
            scored = [one.name for one in held_out]
            train = [one for one in series if one.name not in scored]
            datamodule = datamodule_for(settings, train, 0)
            forecaster = fitted(LEAVE_SERIES_OUT, str(number), f"leave-series-out-fold{number}", datamodule, scored)
            for one in held_out:
                dates, values = daily[one.name]
                for k in range(1, settings.origins + 1):
                    origin = len(values) - WEEK * k - 1
                    result.rows += score_origin(
                        one.name, columns, dates, values, origin, str(number), forecaster, window
                    )
    finally:
        bar.close()
    return result


# --- report -------------------------------------------------------------------------------------------------------


def format_report(result: BacktestResult, settings: Settings, series_count: int) -> str:
    per_series = series_figures(result.rows)
    pooled = pooled_figures(result.rows)
    lines = [
        f"{TASK} backtest ({result.model}): {series_count} series, {settings.origins} weekly origin(s), horizons "
        f"1-{WEEK}, {settings.folds} leave-series-out folds, seed {settings.seed}",
        "relative to the hubs' baseline (WIS) and to persistence, the baseline's median (MAE of the median)",
        "",
        "per series (rel. = relative to the baseline; cov80 = share of days inside the 80% interval):",
    ]
    header = ["series"]
    for evaluation in EVALUATIONS:
        header += [f"{evaluation} rel. WIS", "rel. MAE", "cov80"]
    rows = []
    for name, evaluations in per_series.items():
        row: list[Any] = [name]
        for evaluation in EVALUATIONS:
            figures = evaluations.get(evaluation, {})
            row += [figures.get("relative_wis"), figures.get("relative_mae"), figures.get("coverage_80")]
        rows.append(row)
    lines += [format_table(header, rows), "", "pooled over series x columns, origins and horizons:"]
    keys = ["relative_wis", "relative_mae", *(f"coverage_{width}" for width in CENTRAL_INTERVALS)]
    lines += [format_table(["figure", *pooled], [[key, *(pooled[e][key] for e in pooled)] for key in keys])]
    lines += ["", "per horizon (days after the origin):"]
    header = ["horizon"]
    for evaluation in pooled:
        header += [f"{evaluation} rel. WIS", "cov80"]
    rows = [
        [horizon, *(pooled[e][f"{name}_h{horizon}"] for e in pooled for name in ("relative_wis", "coverage_80"))]
        for horizon in range(1, WEEK + 1)
    ]
    lines += [format_table(header, rows)]
    if result.fits:
        seconds = [fit.seconds for fit in result.fits]
        mean = sum(seconds) / len(seconds)
        lines += [
            "",
            f"training time per fit (trainer.fit): mean {mean:.1f} s, min {min(seconds):.1f} s, "
            f"max {max(seconds):.1f} s, {len(seconds)} fits, {sum(seconds):.1f} s in all",
        ]
    return "\n".join(lines)


# --- command line -------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_app.backtest",
        description="Backtest a count forecaster at weekly origins (rolling origin and leave-series-out) against "
        "the forecast hubs' baseline.",
    )
    parser.add_argument("--task", choices=sorted(TASKS), required=True, help=f"the task to backtest ({TASK} only)")
    parser.add_argument(
        "--model", default=None, help=f"model variant of the task, or '{BASELINE}' (the hubs' baseline alone)"
    )
    backtest = parser.add_argument_group("backtest")
    backtest.add_argument("--origins", type=int, default=3, help="weekly forecast origins per series (default: 3)")
    backtest.add_argument("--folds", type=int, default=5, help="leave-series-out folds (default: 5)")
    backtest.add_argument("--seed", type=int, default=0, help="seed of every fit and of the folds (default: 0)")
    backtest.add_argument("--max-epochs", type=int, default=None, help="default: the model variant's")
    backtest.add_argument("--lr", "--learning-rate", dest="lr", type=float, default=None, help="default: the variant's")
    add_data_arguments(parser)
    add_hardware_arguments(parser)
    output = parser.add_argument_group("output")
    output.add_argument("--output", default=None, help="write one CSV row per series x column x origin x horizon")
    output.add_argument("--log-dir", default=None, help="CSV training logs go here (default: none are kept)")
    output.add_argument("--no-progress-bar", dest="enable_progress_bar", action="store_false")
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    if args.task != TASK:
        raise UsageError(f"--task {args.task}: the backtest forecasts count series; only --task {TASK} has them")
    model = args.model or get_task(TASK).default_variant
    variant = None if model == BASELINE else model
    values = {key: value for key, value in vars(args).items() if key not in ("model", "log_dir")}
    config = FitConfig.from_flags(values, model=variant, enable_progress_bar=False)
    _, _, config = resolve_config(config)
    return Settings(
        config=config,
        model=model,
        origins=args.origins,
        folds=args.folds,
        seed=args.seed,
        log_dir=args.log_dir,
        progress=args.enable_progress_bar,
    )


def load_series(data_dir: str | None, counts: str) -> list[Series]:
    """``--data-dir`` read with :func:`~datamodules.panels.read_panel`, or the bundled China series and panel."""
    if data_dir is None:
        return default_panel()
    return read_panel(data_dir, counts)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings_from_args(args)
    series = load_series(args.data_dir, settings.config.datamodule_kwargs.get("counts", "cumulative"))
    _quiet_lightning()
    with warnings.catch_warnings():
        # Every fit sets its series up again: say each negative-day correction once, not once per fit.
        warnings.filterwarnings("once", message=r".*daily value\(s\) below zero")
        result = run_backtest(series, settings)
    if args.output:
        write_rows(args.output, result.rows)
    print(format_report(result, settings, len(series)))
    if args.output:
        print(f"rows: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
