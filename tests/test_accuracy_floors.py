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

#: Test MASE (model MAE / persistence MAE on the same days) per series, each at most this. The default measures
#: 1.0129 / 0.9843 / 1.0091 (confirmed / cured / dead) on every seed (it starts at zero and trains on one full
#: batch); the tutorial's LSTM has a series at 1.23 or worse on each of seeds 0-4, the previous pooled check
#: (overall MAE below persistence) passed it on 3 of 5.
COVID_SERIES_MASE_CEILING = 1.05
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


def series_mase(metrics: dict[str, float]) -> dict[str, float]:
    """``test/mase_<series>`` of every series (not the mean ``test/mase``)."""
    scores = {key: value for key, value in metrics.items() if key.startswith("test/mase_")}
    assert set(scores) == {"test/mase_confirmed_num", "test/mase_cured_num", "test/mase_dead_num"}, sorted(metrics)
    return scores


def test_titanic_default_averages_at_least_0_815_over_three_seeds(tmp_path: Path) -> None:
    # default 0.827-0.832 per seed; the tutorial's network 0.765-0.810 (0.793 mean), the benchmark target 0.82.
    accuracies = [fit_default("titanic", tmp_path, seed).metrics["test/acc"] for seed in (0, 1, 2)]
    assert statistics.mean(accuracies) >= 0.815, accuracies


def test_covid19_default_keeps_every_series_near_persistence(tmp_path: Path) -> None:
    scores = series_mase(fit_default("covid19", tmp_path).metrics)
    assert max(scores.values()) <= COVID_SERIES_MASE_CEILING, scores


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_covid19_tutorial_recipe_does_not_pass_the_default_floor(tmp_path: Path, seed: int) -> None:
    """The floor tells the default from the recipe it replaced (seconds per seed)."""
    scores = series_mase(fit_default("covid19", tmp_path, seed, model="tutorial").metrics)
    assert max(scores.values()) > COVID_SERIES_MASE_CEILING, scores


def test_imdb_default_reaches_0_91(tmp_path: Path) -> None:
    metrics = fit_default("imdb", tmp_path).metrics
    assert metrics["test/acc"] >= 0.91, metrics


def test_cifar2_default_reaches_0_984_and_its_auroc_floor(tmp_path: Path) -> None:
    # default 0.9870-0.9885 (seeds 0-2); the previous default (--model resnet) 0.982-0.9875. AUROC: see RESULTS.md.
    metrics = fit_default("cifar2", tmp_path).metrics
    assert metrics["test/acc"] >= 0.984 and metrics["test/auroc"] >= CIFAR2_AUROC_FLOOR, metrics
