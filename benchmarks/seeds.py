"""Train a task variant over several seeds; report the mean and spread of its test metrics and wall times.

    python -m benchmarks.seeds --task titanic --seeds 5
    python -m benchmarks.seeds --task titanic --model tutorial --seeds 5

Each seed changes the validation split, the initialisation and the shuffling.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

from lightning_app.registry import TASKS
from lightning_app.training import FitConfig, FitResult, fit
from lightning_app.warning_filters import silence_harmless_warnings


@dataclass
class SeedSummary:
    task: str
    model: str
    runs: list[FitResult]

    def values(self, metric: str) -> list[float]:
        return [run.metrics[metric] for run in self.runs]

    def describe(self, values: list[float]) -> str:
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.4f} ± {spread:.4f} ({min(values):.4f}-{max(values):.4f})"

    def markdown(self) -> str:
        metrics = sorted(key for key in self.runs[0].metrics if key.startswith("test/"))
        lines = [
            f"{self.task} / {self.model}: {len(self.runs)} seeds, mean ± standard deviation (min-max)",
            "",
            "| metric | value |",
            "| --- | --- |",
        ]
        lines += [f"| {metric} | {self.describe(self.values(metric))} |" for metric in metrics]
        lines.append(f"| wall time of fit + test (s) | {self.describe([run.seconds for run in self.runs])} |")
        return "\n".join(lines)


def run_seeds(task: str, model: str | None, seeds: Sequence[int], **config) -> SeedSummary:
    """Fit ``task`` once per seed with progress bars off; logs go to a temporary folder unless given."""
    silence_harmless_warnings()
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as scratch:
        config.setdefault("log_dir", scratch)
        runs = [
            fit(FitConfig(task=task, model=model, seed=seed, enable_progress_bar=False, **config)) for seed in seeds
        ]
    return SeedSummary(task=task, model=runs[0].model, runs=runs)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.seeds", description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, choices=sorted(TASKS))
    parser.add_argument("--model", default=None)
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default: 5)")
    parser.add_argument("--max-epochs", type=int, default=None)
    args = parser.parse_args(argv)
    summary = run_seeds(args.task, args.model, range(args.seeds), max_epochs=args.max_epochs)
    print(summary.markdown())


if __name__ == "__main__":
    main()
