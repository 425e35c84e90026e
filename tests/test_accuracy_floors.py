"""Accuracy floors of the default models on the bundled data: slow (minutes on 2 CPU cores), run by CI.

Each floor sits between the default's measured spread and what the model it replaced (or the tutorial's recipe)
reaches, so it fails when the default falls back to the older model's level, not on seed noise. The numbers beside
each floor are from benchmarks/RESULTS.md ("Accuracy floors and what they exclude"). Timings are the benchmarks'
job, never asserted here.
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

import pytest

from lightning_app.training import FitConfig, FitResult, fit

pytestmark = pytest.mark.slow

#: Leave-series-out backtest of the 35 bundled series (``python -m lightning_app.backtest --origins 1 --folds 3``,
#: seed 0): the WIS relative to the forecast hubs' baseline at most this, and the 80% interval's coverage inside
#: COVID_COVERAGE_80. Measured values in benchmarks/RESULTS.md ("covid19 backtest"). China's test week alone does not
#: rank the models: on it the tutorial's LSTM scored relative WIS 0.53-0.78 and relative MAE 0.78-1.48 over seeds
#: 0-3 against the default's 0.62-0.65 and 0.84-0.93, so the floor reads the 35-series backtest instead.
COVID_RELATIVE_WIS_CEILING = 1.0
#: Measured: 0.887 and 0.774 (the tutorial: 3043).
COVID_COVERAGE_80 = (0.65, 0.9)
#: cifar2 test AUROC: a seed-0 default checkpoint at exactly the accuracy floor (0.984, epoch 14 of 25) measured
#: 0.9985 (benchmarks/RESULTS.md); 0.996 leaves 0.0025 for seeds and platforms (the AUROC's sampling error on
#: 1000 + 1000 test images is about 0.001 there) and fails a ranking clearly worse than a model at the accuracy floor.
CIFAR2_AUROC_FLOOR = 0.996


def fit_default(task: str, tmp_path: Path, seed: int = 0, model: str | None = None) -> FitResult:
    return fit(
        FitConfig(
            task=task,
            model=model,
            seed=seed,
            log_dir=str(tmp_path / "runs"),
            cache_dir=str(tmp_path / "cache"),
            accelerator="cpu",
            enable_progress_bar=False,
        )
    )


def backtest_figures(tmp_path: Path, model: str) -> dict[str, float]:
    """The leave-series-out figures of a 1-origin, 3-fold backtest of ``model`` on the bundled series."""
    from lightning_app.backtest import LEAVE_SERIES_OUT, main, pooled_figures

    output = tmp_path / f"{model}.csv"
    argv = ["--task", "covid19", "--model", model, "--origins", "1", "--folds", "3", "--no-progress-bar"]
    assert main([*argv, "--output", str(output)]) == 0
    with output.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return pooled_figures(rows)[LEAVE_SERIES_OUT]


def test_titanic_default_averages_at_least_0_815_over_three_seeds(tmp_path: Path) -> None:
    # default 0.827-0.832 per seed; the tutorial's network 0.765-0.810 (0.793 mean), the benchmark target 0.82.
    accuracies = [fit_default("titanic", tmp_path, seed).metrics["test/acc"] for seed in (0, 1, 2)]
    assert statistics.mean(accuracies) >= 0.815, accuracies


def test_covid19_default_beats_the_hub_baseline_on_series_it_never_saw(tmp_path: Path) -> None:
    figures = backtest_figures(tmp_path, "default")
    assert figures["relative_wis"] <= COVID_RELATIVE_WIS_CEILING, figures
    assert COVID_COVERAGE_80[0] <= figures["coverage_80"] <= COVID_COVERAGE_80[1], figures


def test_covid19_tutorial_recipe_does_not_pass_the_default_floor(tmp_path: Path) -> None:
    """The floor tells the default from the tutorial's recipe (its intervals explode on other series)."""
    figures = backtest_figures(tmp_path, "tutorial")
    assert figures["relative_wis"] > COVID_RELATIVE_WIS_CEILING, figures


def test_imdb_default_reaches_0_91(tmp_path: Path) -> None:
    result = fit_default("imdb", tmp_path)
    assert result.metrics["test/acc"] >= 0.91, result.metrics
    # The data rules give the bundled data the hand-chosen settings (tests/test_data_rules.py's written-out profile).
    assert result.settings_from_data == {"max_epochs": 1, "module_kwargs.nb_buckets": 1 << 24}


def test_cifar2_default_reaches_0_984_and_its_auroc_floor(tmp_path: Path) -> None:
    # default 0.9870-0.9885 (seeds 0-2); the previous default (--model resnet) 0.982-0.9875. AUROC: see RESULTS.md.
    metrics = fit_default("cifar2", tmp_path).metrics
    assert metrics["test/acc"] >= 0.984 and metrics["test/auroc"] >= CIFAR2_AUROC_FLOOR, metrics
