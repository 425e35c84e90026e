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
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytorch_lightning as pl
import torch
import torchmetrics

from benchmarks.overhead import lightning_epoch_seconds, measure_overhead
from benchmarks.sections import OWNED_ELSEWHERE
from datamodules.files import atomic_write_bytes
from lightning_app.registry import TASKS
from lightning_app.training import FitConfig, build_datamodule_and_module, fit, resolve_config
from lightning_app.warning_filters import silence_harmless_warnings

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "RESULTS.md"
#: Batches per epoch in the overhead comparison: enough for a stable per-step cost, bounded for big tasks.
OVERHEAD_BATCH_LIMIT = 60


@dataclass(frozen=True)
class Target:
    """A test metric the default model must reach: ``metric >= threshold``, ``metric < below`` or ``metric <`` a
    reference metric."""

    metric: str
    threshold: float | None = None
    lower_than: str | None = None
    below: float | None = None

    def reached(self, metrics: dict[str, float]) -> bool:
        if self.lower_than is not None:
            return metrics[self.metric] < metrics[self.lower_than]
        if self.below is not None:
            return metrics[self.metric] < self.below
        return metrics[self.metric] >= self.threshold

    def describe(self) -> str:
        if self.lower_than is not None:
            return f"{self.metric} < {self.lower_than}"
        return f"{self.metric} < {self.below:g}" if self.below is not None else f"{self.metric} >= {self.threshold}"


TARGETS: dict[str, Target] = {
    "titanic": Target("test/acc", threshold=0.82),
    # Beats the forecast hubs' baseline over the 7-day horizons on China's test week.
    "covid19": Target("test/relative_wis", below=1.0),
    "cifar2": Target("test/acc", threshold=0.98),
    "imdb": Target("test/acc", threshold=0.91),
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
    compile: bool = True
    hardware: dict = field(default_factory=dict)

    def fit_overrides(self) -> dict:
        quick = {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1} if self.quick else {}
        return {**self.hardware, **quick}


def overhead_section(tasks: Sequence[str], settings: Settings) -> Section:
    section = Section(
        "Lightning overhead per training epoch (this project's fit vs a plain loop)",
        [
            *("task / model", "batch size", "steps/epoch", "fit s/epoch", "plain loop s/epoch", "ratio"),
            *("fit ms/step", "plain ms/step"),
        ],
        note=(
            "Same module, loss, optimizer and batches; validation excluded on both sides; at most "
            f"{OVERHEAD_BATCH_LIMIT} batches per epoch; first epoch dropped, median of the rest, then median "
            "(min-max) over the repeats. ms/step is the median epoch divided by its steps, so the fit side "
            "includes Lightning's per-epoch costs."
        ),
    )
    epochs = 3 if settings.quick else 4
    for task in tasks:
        for model in TASKS[task].variants:
            limit = 3 if settings.quick else OVERHEAD_BATCH_LIMIT
            result = measure_overhead(
                task, model, epochs, settings.repeats, limit_train_batches=limit, **settings.hardware
            )
            section.rows.append([f"{task} / {result.model}", str(result.batch_size), str(result.steps_per_epoch),
                                 spread(result.lightning, 4), spread(result.plain, 4), f"{result.ratio:.2f}",
                                 f"{result.lightning_ms_per_step:.2f}", f"{result.plain_ms_per_step:.2f}"])  # fmt: skip
    return section


@dataclass
class TargetRuns:
    """The default model of one task fitted once per seed."""

    metric: list[float]
    reached: list[bool]
    train_seconds: list[float]
    run_seconds: list[float]
    epochs: int


def fit_to_target(task: str, settings: Settings, compile: bool = False) -> TargetRuns:
    target = TARGETS[task]
    runs = TargetRuns([], [], [], [], epochs=0)
    for seed in range(settings.repeats):
        with tempfile.TemporaryDirectory() as scratch:
            config = FitConfig(task=task, seed=seed, log_dir=scratch, enable_progress_bar=False, compile=compile,
                               **settings.fit_overrides())  # fmt: skip
            result = fit(config)
        runs.epochs = resolve_config(config)[2].max_epochs
        runs.metric.append(result.metrics[target.metric])
        runs.reached.append(target.reached(result.metrics))
        runs.train_seconds.append(result.train_seconds)
        runs.run_seconds.append(result.seconds)
    return runs


def time_to_target_section(eager: dict[str, TargetRuns]) -> Section:
    section = Section(
        "Time to the target test metric (default model, registry defaults)",
        ["task", "target", "test metric", "reached", "train s (trainer.fit)", "whole run s", "epochs"],
        note="One run per seed (seeds 0..repeats-1); the whole run includes data set-up and testing.",
    )
    for task, runs in eager.items():
        section.rows.append([task, TARGETS[task].describe(), spread(runs.metric, 4),
                             f"{sum(runs.reached)}/{len(runs.reached)}", spread(runs.train_seconds, 1),
                             spread(runs.run_seconds, 1), str(runs.epochs)])  # fmt: skip
    return section


#: The first line of the summary ``python -m lightning_app.fit`` prints: the seconds ``fit()`` itself took.
FINISHED_IN = re.compile(r"finished in ([0-9.]+) s")


def fit_process_seconds(task: str, seed: int, settings: Settings) -> tuple[float, float]:
    """Wall seconds of one ``python -m lightning_app.fit`` process, and the ``fit()`` seconds its summary prints."""
    with tempfile.TemporaryDirectory() as scratch:
        options = {**settings.fit_overrides(), "seed": seed, "log_dir": scratch}
        flags = [item for key, value in options.items() for item in (f"--{key.replace('_', '-')}", str(value))]
        command = [sys.executable, "-m", "lightning_app.fit", "--task", task, "--no-progress-bar", *flags]
        started = time.perf_counter()
        completed = subprocess.run(command, capture_output=True, text=True)
        seconds = time.perf_counter() - started
    finished = FINISHED_IN.search(completed.stdout)
    if completed.returncode != 0 or finished is None:
        raise RuntimeError(f"{' '.join(command)} failed ({completed.returncode}):\n{completed.stderr[-2000:]}")
    return seconds, float(finished.group(1))


def process_section(tasks: Sequence[str], settings: Settings) -> Section:
    section = Section(
        "The whole `python -m lightning_app.fit` process, start to summary (default model)",
        ["task", "process s", "fit() s (as printed)", "interpreter, imports and exit s"],
        note="A fresh interpreter per run, registry defaults, seeds 0..repeats-1; median (min-max).",
    )
    for task in tasks:
        runs = [fit_process_seconds(task, seed, settings) for seed in range(settings.repeats)]
        process, inside = [seconds for seconds, _ in runs], [printed for _, printed in runs]
        start_up = [total - printed for total, printed in runs]
        section.rows.append([task, spread(process, 1), spread(inside, 1), spread(start_up, 1)])
    return section


def compile_section(eager: dict[str, TargetRuns], settings: Settings) -> Section:
    """The default runs again with ``--compile``, beside the eager ones."""
    section = Section(
        "torch.compile (fit --compile) against eager, default model",
        ["task", "eager train s", "compiled train s", "speed-up", "eager test metric", "compiled test metric"],
        note=(
            "Same seeds and settings as the time-to-target runs; the compiled train time includes compiling "
            "(training and evaluation graphs). Inductor's on-disk cache is warm after the first compiled run."
        ),
    )
    for task, runs in eager.items():
        compiled = fit_to_target(task, settings, compile=True)
        speedup = statistics.median(runs.train_seconds) / statistics.median(compiled.train_seconds)
        section.rows.append([task, spread(runs.train_seconds, 1), spread(compiled.train_seconds, 1),
                             f"{speedup:.2f}x", spread(runs.metric, 4), spread(compiled.metric, 4)])  # fmt: skip
    return section


def scaling_section(task: str, settings: Settings) -> Section:
    """Training-epoch seconds of the default model against the share of the data and the batch size."""
    section = Section(
        f"{task}: epoch time against data size and batch size (default model)",
        ["training data", "batch size", "s/epoch", "s per 1,000 samples"],
        note="Median of epochs 2-4 of one fit (first epoch dropped); data size set with limit_train_batches.",
    )
    _, _, resolved = resolve_config(FitConfig(task=task))
    fractions = (0.25, 0.5, 1.0)
    batch_sizes = (resolved.batch_size // 2, resolved.batch_size * 2)
    settings_list = [(f, resolved.batch_size) for f in fractions] + [(1.0, b) for b in batch_sizes]
    train_rows = len(build_datamodule_and_module(resolved)[0].train_set)
    for fraction, batch_size in settings_list:
        limit = 2 if settings.quick else fraction
        config = FitConfig(task=task, max_epochs=2 if settings.quick else 4, batch_size=batch_size,
                           limit_train_batches=limit, limit_val_batches=1, enable_progress_bar=False,
                           **settings.hardware)  # fmt: skip
        seconds = statistics.median(lightning_epoch_seconds(config)[1:])
        samples = train_rows * fraction if not settings.quick else 2 * batch_size
        section.rows.append([f"{fraction:.0%}", str(batch_size), f"{seconds:.3f}", f"{1000 * seconds / samples:.3f}"])
    return section


def imdb_sections(settings: Settings) -> list[Section]:
    from benchmarks import imdb

    repeats = settings.repeats
    pipeline = Section(
        "imdb: tokenising every run (the tutorial) vs the cached token tensors (this project)",
        ["model settings", "what", "tokenise + encode s", "from cache s", "ratio"],
        note="Data set-up of one IMDBDataModule (read, tokenise, fit the vocabulary, encode) vs loading the cache.",
    )
    for model in ("tutorial", "default"):
        result = imdb.bench_cache(repeats=repeats, model=model)
        pipeline.rows.append([model, "data set-up", f"{result['first_run_s']:.2f}", f"{result['second_run_s']:.2f}",
                              f"{result['speedup']:.1f}x"])  # fmt: skip
    epochs = 1
    overrides = {"limit_train_batches": 2, "limit_val_batches": 1} if settings.quick else {}
    tutorial = imdb.bench_tutorial(repeats=repeats, max_epochs=epochs, **overrides)
    pipeline.rows.append(["tutorial", f"whole fit, {epochs} epoch + test", f"{tutorial['tokenising_run_s']:.2f}",
                          f"{tutorial['cached_run_s']:.2f}", f"{tutorial['ratio']:.2f}x"])  # fmt: skip
    return [pipeline, scaling_section("imdb", settings)]


def cifar2_sections(settings: Settings) -> list[Section]:
    from benchmarks import cifar2

    speed = cifar2.tutorial_pipeline_speed(repeats=settings.repeats, limit_batches=3 if settings.quick else None)
    pipeline = Section(
        "cifar2: decode once (this project) vs decode every JPEG every epoch (the tutorial), tutorial's Net",
        ["pipeline", "s/epoch", "speed-up"],
        note=(
            f"Batch 50, plain SGD, {speed.images_per_epoch} training images per epoch, {speed.threads} torch "
            "threads; epochs of the pipelines alternate after a warm-up; median (min-max) of "
            f"{len(speed.tutorial_seconds)} epochs. This project's side runs under a Lightning Trainer with metrics."
        ),
    )
    pipeline.rows += [
        ["tutorial: ImageFolder + ToTensor, plain loop", spread(speed.tutorial_seconds, 2), "1.00x"],
        ["this project, Net in channels-last (as shipped)", spread(speed.lightning_seconds, 2),
         f"{speed.speedup:.2f}x"],
        ["this project, Net in NCHW (decoding once alone)", spread(speed.lightning_nchw_seconds, 2),
         f"{speed.speedup_nchw:.2f}x"],
    ]  # fmt: skip
    return [pipeline, scaling_section("cifar2", settings)]


#: Extra, task-specific benchmarks: each returns sections for RESULTS.md.
TASK_BENCHMARKS: dict[str, Callable[[Settings], list[Section]]] = {"cifar2": cifar2_sections, "imdb": imdb_sections}


def machine_description(settings: Settings) -> list[str]:
    device = "CPU only"
    if torch.cuda.is_available():
        device = f"GPU: {torch.cuda.get_device_name(0)}"
    return [
        f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores, {device}; {platform.platform()}",
        f"- versions: Python {platform.python_version()}, torch {torch.__version__}, "
        f"pytorch-lightning {pl.__version__}, torchmetrics {torchmetrics.__version__}",
        f"- settings: {', '.join(f'{key} {value}' for key, value in settings.hardware.items())}",
        f"- repeats: {settings.repeats}{' (quick smoke settings: not representative)' if settings.quick else ''}",
    ]


def run(tasks: Sequence[str], settings: Settings, output: Path) -> str:
    silence_harmless_warnings()
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    sections = [overhead_section(tasks, settings)]
    for task in tasks:
        if task in TASK_BENCHMARKS:
            sections += TASK_BENCHMARKS[task](settings)
    eager = {task: fit_to_target(task, settings) for task in tasks}
    sections.append(time_to_target_section(eager))
    sections.append(process_section(tasks, settings))
    if settings.compile:
        sections.append(compile_section(eager, settings))
    text = "\n".join(["# Benchmark results", "", *machine_description(settings), "", ""])
    text += "\n\n".join(section.markdown() for section in sections) + "\n"
    for owned in OWNED_ELSEWHERE:  # written by benchmarks.peers and benchmarks.scale, which this run does not repeat
        kept = owned.read(output)
        if kept is not None:
            text += "\n" + kept + "\n"
    atomic_write_bytes(output, text.encode())
    return text


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=sorted(TASKS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny settings to check the harness runs")
    parser.add_argument("--gpus", type=int, default=None, help="run every measurement on N GPUs")
    parser.add_argument("--precision", default="32-true", help="e.g. bf16-mixed on a GPU (default: 32-true)")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="skip the torch.compile runs")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    hardware = {"gpus": args.gpus} if args.gpus else {"accelerator": "cpu"}
    hardware["precision"] = args.precision
    settings = Settings(
        repeats=1 if args.quick else args.repeats, quick=args.quick, compile=args.compile, hardware=hardware
    )
    print(run(args.tasks, settings, args.output))


if __name__ == "__main__":
    main()
