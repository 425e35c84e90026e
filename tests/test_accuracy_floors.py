"""Accuracy floors of the default models on the bundled data: slow (minutes on 2 CPU cores), run by CI.

Each floor sits between the default's measured spread and what the model it replaced (or the tutorial's recipe)
reaches, so it fails when the default falls back to the older model's level, not on seed noise. The numbers beside
each floor are from benchmarks/RESULTS.md ("Accuracy floors and what they exclude"). Timings are the benchmarks'
job, never asserted here.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from lightning_app.training import FitConfig, FitResult, fit

pytestmark = pytest.mark.slow

#: China's test week, 1-7 days ahead (``test/series/covid19/...``): the MAE of the median relative to persistence
#: at most this. The default measures 0.869 / 0.836 / 0.930 (seeds 0-2), the previous default (``log_trend``)
#: 1.012, the tutorial's LSTM 1.04 / 1.26 (seeds 0-1; see RESULTS.md for seeds 2-4).
COVID_RELATIVE_MAE_CEILING = 0.97
#: ... and its WIS relative to the forecast hubs' baseline at most this: the default 0.634 / 0.620 / 0.646. (The
#: point-forecast variants score 0.52-0.57 here on their residual intervals, but 9.6-890 on the 35-series
#: backtest; one week of one series does not rank interval forecasts, see RESULTS.md.)
COVID_RELATIVE_WIS_CEILING = 0.8
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


def china_week(metrics: dict[str, float]) -> dict[str, float]:
    """China's test-week figures: ``relative_wis``, ``relative_mae``, ``coverage_80``, ``mase_h1``."""
    prefix = "test/series/covid19/"
    found = {key.removeprefix(prefix): value for key, value in metrics.items() if key.startswith(prefix)}
    assert {"relative_wis", "relative_mae"} <= set(found), sorted(metrics)
    return found


def test_titanic_default_averages_at_least_0_815_over_three_seeds(tmp_path: Path) -> None:
    # default 0.827-0.832 per seed; the tutorial's network 0.765-0.810 (0.793 mean), the benchmark target 0.82.
    accuracies = [fit_default("titanic", tmp_path, seed).metrics["test/acc"] for seed in (0, 1, 2)]
    assert statistics.mean(accuracies) >= 0.815, accuracies


def test_covid19_default_beats_persistence_and_the_hub_baseline_on_chinas_week(tmp_path: Path) -> None:
    scores = china_week(fit_default("covid19", tmp_path).metrics)
    assert scores["relative_mae"] <= COVID_RELATIVE_MAE_CEILING, scores
    assert scores["relative_wis"] <= COVID_RELATIVE_WIS_CEILING, scores


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_covid19_tutorial_recipe_does_not_pass_the_default_floor(tmp_path: Path, seed: int) -> None:
    """The floor tells the default from the recipe it replaced (seconds per seed)."""
    scores = china_week(fit_default("covid19", tmp_path, seed, model="tutorial").metrics)
    assert scores["relative_mae"] > COVID_RELATIVE_MAE_CEILING, scores


def test_imdb_default_reaches_0_91(tmp_path: Path) -> None:
    metrics = fit_default("imdb", tmp_path).metrics
    assert metrics["test/acc"] >= 0.91, metrics


def test_cifar2_default_reaches_0_984_and_its_auroc_floor(tmp_path: Path) -> None:
    # default 0.9870-0.9885 (seeds 0-2); the previous default (--model resnet) 0.982-0.9875. AUROC: see RESULTS.md.
    metrics = fit_default("cifar2", tmp_path).metrics
    assert metrics["test/acc"] >= 0.984 and metrics["test/auroc"] >= CIFAR2_AUROC_FLOOR, metrics
