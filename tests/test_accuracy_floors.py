"""Accuracy floors of the default models on the bundled data: slow (minutes on 2 CPU cores), run by CI.

Each floor sits a little below what the benchmarks measured (README, "Results"), so it catches a default that
got worse, not seed noise. Timings are the benchmarks' job, never asserted here.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from lightning_app.training import FitConfig, FitResult, fit

pytestmark = pytest.mark.slow


def fit_default(task: str, tmp_path: Path, seed: int = 0) -> FitResult:
    return fit(
        FitConfig(
            task=task,
            seed=seed,
            log_dir=str(tmp_path / "runs"),
            cache_dir=str(tmp_path / "cache"),
            accelerator="cpu",
            enable_progress_bar=False,
        )
    )


def test_titanic_default_averages_at_least_0_80_over_three_seeds(tmp_path: Path) -> None:
    accuracies = [fit_default("titanic", tmp_path, seed).metrics["test/acc"] for seed in (0, 1, 2)]
    assert statistics.mean(accuracies) >= 0.80, accuracies


def test_covid19_default_beats_persistence_on_overall_test_mae(tmp_path: Path) -> None:
    metrics = fit_default("covid19", tmp_path).metrics
    assert metrics["test/mae"] < metrics["test/persistence_mae"], metrics


def test_imdb_default_reaches_0_91(tmp_path: Path) -> None:
    metrics = fit_default("imdb", tmp_path).metrics
    assert metrics["test/acc"] >= 0.91, metrics


def test_cifar2_default_reaches_0_98(tmp_path: Path) -> None:
    metrics = fit_default("cifar2", tmp_path).metrics
    assert metrics["test/acc"] >= 0.98 and metrics["test/auroc"] >= 0.99, metrics
