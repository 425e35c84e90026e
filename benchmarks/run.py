"""Run every benchmark and write ``benchmarks/RESULTS.md``.

    python -m benchmarks.run                       # all tasks, 3 repeats each (long: see RESULTS.md)
    python -m benchmarks.run --tasks titanic covid19
    python -m benchmarks.run --quick --output /tmp/RESULTS.md   # a smoke run: 1 repeat, tiny settings
    python -m benchmarks.run --gpus 1              # the same on a GPU machine

For each task, in one run on one machine: (a) Lightning overhead per training
epoch against a plain loop with the same module, tensors and batch size;
(b) task-specific pipeline comparisons (see TASK_BENCHMARKS); (c) time to the
target test metric with the default model. Timings are medians over the
repeats with (min-max).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import platform
import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytorch_lightning as pl
import torch
import torchmetrics

from benchmarks.overhead import measure_overhead
from datamodules.cache import atomic_write_bytes
from lightning_app.registry import TASKS
from lightning_app.training import FitConfig, fit
from lightning_app.warning_filters import silence_harmless_warnings

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "RESULTS.md"


@dataclass(frozen=True)
class Target:
    """A test metric the default model must reach: ``metric >= value`` (or ``<=`` a reference metric)."""

    metric: str
    threshold: float | None = None
    lower_than: str | None = None

    def reached(self, metrics: dict[str, float]) -> bool:
        if self.lower_than is not None:
            return metrics[self.metric] < metrics[self.lower_than]
        return metrics[self.metric] >= self.threshold

    def describe(self) -> str:
        return f"{self.metric} < {self.lower_than}" if self.lower_than else f"{self.metric} >= {self.threshold}"


TARGETS: dict[str, Target] = {
    "titanic": Target("test/acc", threshold=0.82),
    "covid19": Target("test/mspe", lower_than="test/persistence_mspe"),
    "cifar2": Target("test/acc", threshold=0.97),
    "imdb": Target("test/acc", threshold=0.89),
}


@dataclass
class Section:
    title: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    note: str = ""

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        if self.note:
            lines += [self.note, ""]
        lines += ["| " + " | ".join(self.header) + " |", "|" + " --- |" * len(self.header)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


def spread(values: Sequence[float], digits: int = 3) -> str:
    """``median (min-max)``, or the single value."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


@dataclass
class Settings:
    repeats: int = 3
    quick: bool = False
    hardware: dict = field(default_factory=dict)

    def fit_overrides(self) -> dict:
        quick = {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1} if self.quick else {}
        return {**self.hardware, **quick}


def overhead_section(tasks: Sequence[str], settings: Settings) -> Section:
    section = Section(
        "Lightning overhead per training epoch (this project's fit vs a plain loop)",
        ["task / model", "batch size", "fit s/epoch", "plain loop s/epoch", "ratio"],
        note="Same module, loss, optimizer and batches; validation excluded on both sides; first epoch dropped.",
    )
    epochs = 3 if settings.quick else 6
    for task in tasks:
        for model in TASKS[task].variants:
            extra = {"limit_train_batches": 3} if settings.quick else {}
            result = measure_overhead(task, model, epochs, settings.repeats, **settings.hardware, **extra)
            section.rows.append([f"{task} / {result.model}", str(result.batch_size), spread(result.lightning, 4),
                                 spread(result.plain, 4), f"{result.ratio:.2f}"])  # fmt: skip
    return section


def time_to_target_section(tasks: Sequence[str], settings: Settings) -> Section:
    section = Section(
        "Time to the target test metric (default model, registry defaults)",
        ["task", "target", "test metric", "reached", "train s (trainer.fit)", "whole run s", "epochs"],
        note="One run per seed (seeds 0..repeats-1); the whole run includes data set-up and testing.",
    )
    for task in tasks:
        target = TARGETS[task]
        values, reached, train_seconds, run_seconds = [], [], [], []
        epochs = None
        for seed in range(settings.repeats):
            with tempfile.TemporaryDirectory() as scratch:
                config = FitConfig(task=task, seed=seed, log_dir=scratch, enable_progress_bar=False,
                                   **settings.fit_overrides())  # fmt: skip
                result = fit(config)
            epochs = config.max_epochs or TASKS[task].variant(None).max_epochs
            values.append(result.metrics[target.metric])
            reached.append(target.reached(result.metrics))
            train_seconds.append(result.train_seconds)
            run_seconds.append(result.seconds)
        section.rows.append([task, target.describe(), spread(values, 4), f"{sum(reached)}/{len(reached)}",
                             spread(train_seconds, 1), spread(run_seconds, 1), str(epochs)])  # fmt: skip
    return section


#: Extra, task-specific benchmarks: each returns sections for RESULTS.md.
TASK_BENCHMARKS: dict[str, Callable[[Settings], list[Section]]] = {}


def machine_description(settings: Settings) -> list[str]:
    device = "CPU only"
    if torch.cuda.is_available():
        device = f"GPU: {torch.cuda.get_device_name(0)}"
    return [
        f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores, {device}; {platform.platform()}",
        f"- versions: Python {platform.python_version()}, torch {torch.__version__}, "
        f"pytorch-lightning {pl.__version__}, torchmetrics {torchmetrics.__version__}",
        f"- repeats: {settings.repeats}{' (quick smoke settings: not representative)' if settings.quick else ''}",
    ]


def run(tasks: Sequence[str], settings: Settings, output: Path) -> str:
    silence_harmless_warnings()
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    sections = [overhead_section(tasks, settings)]
    for task in tasks:
        if task in TASK_BENCHMARKS:
            sections += TASK_BENCHMARKS[task](settings)
    sections.append(time_to_target_section(tasks, settings))
    text = "\n".join(["# Benchmark results", "", *machine_description(settings), "", ""])
    text += "\n\n".join(section.markdown() for section in sections) + "\n"
    atomic_write_bytes(output, text.encode())
    return text


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=sorted(TASKS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny settings to check the harness runs")
    parser.add_argument("--gpus", type=int, default=None, help="run every measurement on N GPUs")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    hardware = {"gpus": args.gpus} if args.gpus else {"accelerator": "cpu"}
    settings = Settings(repeats=1 if args.quick else args.repeats, quick=args.quick, hardware=hardware)
    print(run(args.tasks, settings, args.output))


if __name__ == "__main__":
    main()
