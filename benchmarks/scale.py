"""Scale: peak memory and throughput of ``predict`` and of IMDB training as the data grows.

Inputs are made by repeating the bundled data (reviews: the aclImdb training texts; images: the
cifar2 test JPEGs, hard-linked under new names), so the numbers measure the code, not the corpus.
Each measurement is one fresh process (two or more under DDP), timed from start to exit; its peak
RSS is polled from ``/proc`` for the whole process tree (the sum over ranks) and also reported as the
largest single process. Linux only.

    python -m benchmarks.scale --reviews 25000 100000 1000000 --images 10000 100000 --devices 1 2
    python -m benchmarks.scale --quick          # small sizes, a smoke run

Rows:

* ``predict imdb``: ``predict --task imdb --input-file reviews.txt --format csv --output out.csv``;
* ``predict cifar2``: ``predict --task cifar2 FOLDER --format csv --output out.csv``;
* ``fit imdb, cache build``: the first ``fit`` on a training file of N reviews (tokenise, build the
  cache, then one training batch), and ``fit imdb, from cache``: a second run reading the cache and
  training one whole epoch, with its training-epoch seconds (validation excluded).

The section between the ``scale`` markers of ``benchmarks/RESULTS.md`` is replaced with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.sections import SCALE
from datamodules import PACKAGED_DATA_DIR
from datamodules.text_files import iter_raw_lines

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
IMDB_DATA = PACKAGED_DATA_DIR / "imdb"


# -- making inputs -------------------------------------------------------------


def bundled_review_rows() -> list[tuple[bytes, bytes]]:
    """``(label, text)`` of each row of the bundled training file, in a fixed shuffle (the file is sorted by label)."""
    lines = iter_raw_lines(IMDB_DATA / "train.tsv.gz")
    _, header = next(lines)
    label_at, text_at = header.split(b"\t").index(b"label"), header.split(b"\t").index(b"text")
    rows = [(fields[label_at], fields[text_at]) for _, raw in lines if raw for fields in [raw.split(b"\t")]]
    random.Random(0).shuffle(rows)
    return rows


def write_review_file(path: Path, count: int) -> Path:
    """``count`` reviews, one per line (the texts of the bundled training file, repeated)."""
    texts = [text for _, text in bundled_review_rows()]
    with path.open("wb") as handle:
        for i in range(count):
            handle.write(texts[i % len(texts)] + b"\n")
    return path


def write_training_dir(folder: Path, count: int) -> Path:
    """``train.tsv`` with ``count`` labelled reviews (the bundled rows repeated) beside the bundled test file."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = bundled_review_rows()
    with (folder / "train.tsv").open("wb") as handle:
        handle.write(b"label\ttext\n")
        for i in range(count):
            label, text = rows[i % len(rows)]
            handle.write(label + b"\t" + text + b"\n")
    shutil.copyfile(IMDB_DATA / "test.tsv.gz", folder / "test.tsv.gz")
    return folder


def write_image_folder(folder: Path, count: int, cache_dir: Path) -> Path:
    """``count`` image files: the bundled cifar2 test JPEGs hard-linked (copied where links fail) under new names."""
    from datamodules.cifar2 import extract_packaged_archive

    sources = sorted((extract_packaged_archive(cache_dir) / "test").rglob("*.jpg"))
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        target = folder / f"{i // 10_000:03d}" / f"{i:07d}.jpg"
        target.parent.mkdir(exist_ok=True)
        try:
            os.link(sources[i % len(sources)], target)
        except OSError:
            shutil.copyfile(sources[i % len(sources)], target)
    return folder


# -- measuring a process tree ----------------------------------------------------


def _tree_rss_bytes(root: int) -> tuple[int, int]:
    """``(sum, largest)`` resident set size over ``root`` and all its descendants, from ``/proc``."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path("/proc", entry, "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        parents[int(entry)] = int(fields.get("PPid", "0").strip())
        rss[int(entry)] = int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier += children
    sizes = [rss.get(pid, 0) for pid in tree]
    return sum(sizes), max(sizes, default=0)


@dataclass
class Measurement:
    seconds: float
    peak_rss_total: int
    peak_rss_process: int
    stdout: str


def measure(command: Sequence[str], env: dict[str, str] | None = None, poll_seconds: float = 0.2) -> Measurement:
    """Run ``command``, polling its process tree's memory; raise with its stderr if it fails."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    peaks = [0, 0]
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            total, largest = _tree_rss_bytes(process.pid)
            peaks[0], peaks[1] = max(peaks[0], total), max(peaks[1], largest)
            done.wait(poll_seconds)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    stdout, stderr = process.communicate()
    seconds = time.perf_counter() - started
    done.set()
    poller.join()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {process.returncode}:\n{stderr[-3000:]}")
    return Measurement(seconds, peaks[0], peaks[1], stdout)


# -- the rows ------------------------------------------------------------------


@dataclass
class Row:
    what: str
    size: str
    processes: int
    measurement: Measurement
    rows_per_second: float | None = None
    note: str = ""

    def markdown(self) -> str:
        m = self.measurement
        rate = f"{self.rows_per_second:,.0f}" if self.rows_per_second else ""
        return (
            f"| {self.what} | {self.size} | {self.processes} | {m.seconds:.1f} | {rate} | "
            f"{m.peak_rss_total / 2**30:.2f} | {m.peak_rss_process / 2**30:.2f} | {self.note} |"
        )


def hardware_flags(devices: int) -> list[str]:
    return [] if devices == 1 else ["--accelerator", "cpu", "--devices", str(devices), "--strategy", "ddp"]


def child_env(cache_dir: Path) -> dict[str, str]:
    root = str(Path(__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH")
    pythonpath = f"{root}{os.pathsep}{path}" if path else root
    return {**os.environ, "LIGHTNING_APP_CACHE": str(cache_dir), "PYTHONPATH": pythonpath}


def predict_row(task: str, ckpt: Path, inputs: list[str], count: int, devices: int, scratch: Path, env: dict) -> Row:
    output = scratch / f"{task}-{count}-{devices}.csv"
    command = [
        sys.executable, "-m", "lightning_app.predict", "--task", task, "--ckpt", str(ckpt), *inputs,
        "--format", "csv", "--output", str(output), "--no-progress", *hardware_flags(devices),
    ]  # fmt: skip
    measurement = measure(command, env)
    with output.open("rb") as handle:
        written = sum(1 for _ in handle) - 1
    if written != count:
        raise RuntimeError(f"{output}: {written} rows written for {count} inputs")
    output.unlink()
    return Row(f"predict {task}", f"{count:,}", devices, measurement, count / measurement.seconds)


def train_checkpoint(task: str, scratch: Path, env: dict, extra: Sequence[str] = ()) -> Path:
    """A checkpoint of ``task``'s default model from one short epoch (scoring speed does not depend on accuracy)."""
    log_dir = scratch / f"logs-{task}"
    command = [
        sys.executable, "-m", "lightning_app.fit", "--task", task, "--max-epochs", "1", "--log-dir", str(log_dir),
        "--limit-train-batches", "5", "--limit-val-batches", "2", "--limit-test-batches", "2", "--no-progress-bar",
        *extra,
    ]  # fmt: skip
    measure(command, env)
    (ckpt,) = log_dir.glob(f"{task}/version_*/checkpoints/last.ckpt")
    return ckpt


FIT_CHILD = """
import json, sys, tempfile
from dataclasses import replace
from benchmarks.overhead import TrainEpochTimer
from lightning_app.training import FitConfig, fit
timer = TrainEpochTimer()
config = FitConfig(**json.loads(sys.argv[1]))
with tempfile.TemporaryDirectory() as scratch:
    fit(replace(config, log_dir=scratch), callbacks=[timer])
print(json.dumps({"epoch_seconds": timer.seconds}))
"""


def fit_rows(count: int, scratch: Path, env: dict, devices: int) -> list[Row]:
    """Two IMDB ``fit`` runs on ``count`` training reviews: the first builds the cache (and trains one batch),
    the second reads it and trains one whole epoch."""
    data_dir = write_training_dir(scratch / f"imdb-{count}", count)
    settings = {
        "task": "imdb", "max_epochs": 1, "data_dir": str(data_dir), "enable_progress_bar": False,
        "limit_val_batches": 20, "limit_test_batches": 20, "accelerator": "cpu" if devices > 1 else "auto",
        "devices": devices if devices > 1 else "auto", "strategy": "ddp" if devices > 1 else "auto",
    }  # fmt: skip
    rows = []
    for what, limit in (("fit imdb, cache build", 1), ("fit imdb, from cache", None)):
        command = [sys.executable, "-c", FIT_CHILD, json.dumps({**settings, "limit_train_batches": limit})]
        measurement = measure(command, env)
        epoch = json.loads(measurement.stdout.strip().splitlines()[-1])["epoch_seconds"]
        if limit is None:
            note, rate = f"train epoch {epoch[0]:.1f} s", count * 0.9 / epoch[0]
        else:
            note, rate = "tokenise + cache build, then 1 training batch", None
        rows.append(Row(what, f"{count:,}", devices, measurement, rate, note))
    shutil.rmtree(data_dir)
    return rows


# -- the section -----------------------------------------------------------------


def earlier_rows(output: Path) -> list[str]:
    """The table rows of the scale section already in ``output``."""
    lines = (SCALE.read(output) or "").splitlines()
    return [line for line in lines if line.startswith("| ") and not line.startswith(("| what", "| ---"))]


def row_key(line: str) -> list[str]:
    """What a table row measured: its *what*, *inputs* and *processes* cells."""
    return [cell.strip() for cell in line.split("|")[1:4]]


def section(rows: Sequence[str], machine: str) -> str:
    return "\n".join(
        [
            SCALE.start,
            "### Scale: peak memory and throughput against input size (`python -m benchmarks.scale`)",
            "",
            f"{machine}. Inputs repeat the bundled data. Peak RSS is polled every 0.2 s over the process tree:",
            "*total* sums the ranks, *largest* is the biggest single process. Rows/s for `fit` counts the",
            "training reviews (90% of the file) over the training epoch alone. A rerun replaces the rows it",
            "measures again and keeps the others.",
            "",
            "| what | inputs | processes | wall s | rows/s | peak RSS total GiB | largest process GiB | note |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
            *rows,
            SCALE.end,
        ]
    )


def machine() -> str:
    import platform

    import torch

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--reviews", type=int, nargs="*", default=[25_000, 100_000, 1_000_000])
    parser.add_argument("--images", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--fit-reviews", type=int, nargs="*", default=[25_000, 100_000, 1_000_000])
    parser.add_argument("--devices", type=int, nargs="*", default=[1, 2], help="process counts for predict")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--scratch", type=Path, default=None, help="where generated inputs go (default: temp)")
    args = parser.parse_args(argv)
    if args.quick:
        args.reviews, args.images, args.fit_reviews, args.devices = [2_000], [500], [2_000], [1]
    rows = earlier_rows(args.output)

    def add(row: Row) -> None:
        """Replace the earlier row that measured the same thing (or append), then save the section at once."""
        line = row.markdown()
        print(line, flush=True)
        same = [i for i, earlier in enumerate(rows) if row_key(earlier) == row_key(line)]
        if same:
            rows[same[0]] = line
        else:
            rows.append(line)
        SCALE.write(section(rows, machine()), args.output)

    if args.scratch is not None:
        args.scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.scratch) as scratch_name:
        scratch = Path(scratch_name)
        env = child_env(scratch / "cache")
        if args.reviews:
            ckpt = train_checkpoint("imdb", scratch, env)
            for count in args.reviews:
                reviews = write_review_file(scratch / "reviews.txt", count)
                for devices in args.devices:
                    add(predict_row("imdb", ckpt, ["--input-file", str(reviews)], count, devices, scratch, env))
                reviews.unlink()
        if args.images:
            ckpt = train_checkpoint("cifar2", scratch, env)
            for count in args.images:
                folder = write_image_folder(scratch / "images", count, scratch / "cache")
                for devices in args.devices:
                    add(predict_row("cifar2", ckpt, [str(folder)], count, devices, scratch, env))
                shutil.rmtree(folder)
        for count in args.fit_reviews:
            for row in fit_rows(count, scratch, env, devices=1):
                add(row)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
