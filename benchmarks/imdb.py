"""IMDB benchmarks: default model speed/accuracy, token-cache effect, the tutorial's model on this pipeline.

``PYTHONPATH=. python -m benchmarks.imdb`` (add ``--quick`` for a smoke run) prints a markdown table.
On a CPU shared with other jobs, compare ``--threads 1`` and ``--threads 2``: oversubscribed
intra-op threads can make training several times slower.

* (a) the registry's default variant trained with its defaults: ``fit()`` wall time
  (cached data load + training + validation + test of the best checkpoint) and test metrics;
* (b) data setup with an empty cache (read, tokenise, fit vocabulary, encode, write
  cache) vs. a second run that loads the cache;
* (c) the tutorial's model end to end on this pipeline (cached tokens) vs. the same
  run re-tokenising first, as the tutorial does every run; and the ratio.

Every function is importable; each returns plain dicts of numbers.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from lightning_app.registry import get_task
from lightning_app.training import FitConfig, fit

TASK = "imdb"


def data_setup_seconds(cache_dir: Path, model: str = "default") -> tuple[float, bool]:
    """Time one ``IMDBDataModule.setup`` of ``model``'s data settings; returns (seconds, cache_reused)."""
    task = get_task(TASK)
    settings = {key: value for key, value in task.datamodule_settings(model).items() if key != "cache_dir"}
    datamodule = task.datamodule(**settings, cache_dir=cache_dir)
    started = time.perf_counter()
    datamodule.setup("fit")
    return time.perf_counter() - started, bool(datamodule.cache_reused)


def bench_cache(repeats: int = 3, model: str = "default") -> dict[str, float]:
    """(b) median first-run (empty cache) and second-run (cache reused) data-setup seconds."""
    first, second = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as cache:
            seconds, reused = data_setup_seconds(Path(cache), model)
            assert not reused
            first.append(seconds)
            seconds, reused = data_setup_seconds(Path(cache), model)
            assert reused
            second.append(seconds)
    return {
        "first_run_s": statistics.median(first),
        "second_run_s": statistics.median(second),
        "speedup": statistics.median(first) / statistics.median(second),
    }


def train(model: str, cache_dir: Path, log_dir: Path, **overrides: Any) -> dict[str, float]:
    """One ``fit()`` with the registry's defaults for ``model``; returns wall seconds and test metrics."""
    config = FitConfig(
        task=TASK, model=model, cache_dir=str(cache_dir), log_dir=str(log_dir), enable_progress_bar=False, **overrides
    )
    result = fit(config)
    return {"fit_s": result.seconds, **result.metrics}


def bench_default(cache_dir: Path, repeats: int = 3, **overrides: Any) -> dict[str, float]:
    """(a) median ``fit()`` wall time of the default variant (cache warmed first) and the median test metrics."""
    data_setup_seconds(cache_dir, "default")  # warm the cache, so the timing is training, not tokenising
    runs = []
    with tempfile.TemporaryDirectory() as logs:
        for _ in range(repeats):
            runs.append(train("default", cache_dir, Path(logs), **overrides))
    keys = ("fit_s", "test/acc", "test/auroc", "test/f1", "val/acc_best")
    return {key: statistics.median(run[key] for run in runs) for key in keys} | {"repeats": repeats}


def bench_tutorial(repeats: int = 1, **overrides: Any) -> dict[str, float]:
    """(c) the tutorial's model: a run that tokenises first (empty cache, as the tutorial does every run)
    vs. a run on cached tokens; medians over ``repeats`` pairs and their ratio."""
    cold, warm, metrics = [], [], {}
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as logs:
            run = train("tutorial", Path(cache), Path(logs), **overrides)
            cold.append(run["fit_s"])
            run = train("tutorial", Path(cache), Path(logs), **overrides)
            warm.append(run["fit_s"])
            metrics = run
    return {
        "tokenising_run_s": statistics.median(cold),
        "cached_run_s": statistics.median(warm),
        "ratio": statistics.median(cold) / statistics.median(warm),
        **{key: metrics[key] for key in ("test/acc", "test/auroc", "test/f1")},
        "repeats": repeats,
    }


def markdown(results: dict[str, dict[str, float]]) -> str:
    lines = ["| benchmark | measure | value |", "| --- | --- | --- |"]
    for name, values in results.items():
        for key, value in values.items():
            if isinstance(value, float):
                value = f"{value:.4f}" if key.startswith(("test/", "val/")) else f"{value:.2f}"
            lines.append(f"| {name} | {key} | {value} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.imdb", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat, 1 epoch of 20 batches: checks the script runs")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of (a) and (b) (default 3)")
    parser.add_argument("--tutorial-repeats", type=int, default=1, help="repeats of (c), 20 epochs each (default 1)")
    parser.add_argument("--skip-tutorial", action="store_true", help="leave out (c), the slowest part")
    parser.add_argument("--cache-dir", default=None, help="warm cache for (a) (default: a temporary folder)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"torch intra-op threads: {torch.get_num_threads()}")

    repeats = 1 if args.quick else args.repeats
    quick = {"max_epochs": 1, "limit_train_batches": 20, "limit_val_batches": 5}  # test: full, ordered by label
    overrides = quick if args.quick else {}
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        cache = Path(args.cache_dir) if args.cache_dir else Path(scratch)
        results["(a) default variant"] = bench_default(cache, repeats=repeats, **overrides)
        results["(b) data setup, default settings"] = bench_cache(repeats=repeats)
        if not args.skip_tutorial:
            tutorial_repeats = 1 if args.quick else args.tutorial_repeats
            results["(c) data setup, tutorial settings"] = bench_cache(repeats=repeats, model="tutorial")
            results["(c) tutorial CNN"] = bench_tutorial(tutorial_repeats, **overrides)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
