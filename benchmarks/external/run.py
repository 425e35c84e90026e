"""This project's models and classical peers on the converted external datasets (issue #24's benchmark).

    python -m benchmarks.external.fetch --all --from DIR      # once: raw files -> ~/.cache/lightning-app/external
    python -m benchmarks.external --threads 1                  # every converted dataset; writes its RESULTS.md section
    python -m benchmarks.external --datasets subj adult --output /tmp/RESULTS.md
    python -m benchmarks.external --datasets trec --what project --seeds 3 --variants default

Per dataset, on the converted ``train`` / ``test`` files, with the seeded train / validation split of train that
the task's own DataModule carves (``datamodules.base.train_val_split`` with the DataModule's ``val_fraction``:
10% for text and images, 15% for tables), on which each peer's setting is chosen:

* text: the peers of :mod:`benchmarks.peers`, TF-IDF 1-2-grams + logistic regression and NBSVM-style 1-3-grams
  (one-vs-rest for several classes);
* table: :func:`benchmarks.peers.gradient_boosting` and a logistic regression, on every column but the target and
  the id columns: numeric columns as numbers (missing: the training median plus a missing flag for the logistic
  regression, NaN for gradient boosting; standardised for the logistic regression), the others one-hot with the
  categories seen in training (missing is a category of its own);
* image: a small CNN, the classic PyTorch ``examples/mnist`` recipe (:class:`SmallCNN`: conv 32 3x3 - ReLU - conv
  64 3x3 - ReLU - max-pool 2 - dropout 0.25 - linear 128 - ReLU - dropout 0.5 - linear; Adadelta lr 1.0, StepLR
  gamma 0.7 per epoch, batch 64, 14 epochs) as a plain PyTorch loop on the images the cifar2 DataModule serves
  (its carve, its resize to the task's image size, normalised with its training-part channel statistics, no
  augmentation); the epoch is chosen on validation (accuracy after each epoch, the best epoch's weights scored).

This project's models (``--what project``) are trained by ``lightning_app.training.fit`` with ``--data-dir``
pointing at the converted folder: text with the ``imdb`` task, tables with the ``titanic`` task (the dataset's
target and id columns as ``--target-column`` / ``--id-columns``), images with the ``cifar2`` task; the variants
``default`` (over ``--seeds`` seeds, ``--seed`` upwards) and ``tutorial`` (one seed; the titanic tutorial needs
Titanic's columns, so tables get none). Their seconds are ``trainer.fit`` wall time.

Where one run fits the peers and the default on the same carves, the default's row also gives its paired
difference with the best peer (:func:`paired_difference`: per test row over the seeds, then a bootstrap over the
test rows), which the summary table shows.

The test split is scored once per peer and per run. Rows are kept per (dataset, model), so a partial rerun
replaces only the rows it produces.
"""

from __future__ import annotations

import argparse
import copy
import csv
import inspect
import logging
import re
import statistics
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.external.datasets import BY_NAME, DATASETS, Dataset
from benchmarks.external.fetch import default_cache_dir
from benchmarks.peers import RESULTS, PeerScore, Row, gradient_boosting, text_peer_scores
from benchmarks.sections import EXTERNAL, MarkedSection
from datamodules import Cifar2DataModule, IMDBDataModule, TitanicDataModule
from datamodules.base import train_val_split
from datamodules.text_files import label_values, read_labeled_texts
from lightning_app.data_rules import describe_settings

#: The project's task that runs each kind of dataset, and the DataModule whose validation carve the peers share.
TASK_OF_KIND = {"text": "imdb", "table": "titanic", "image": "cifar2"}
DATAMODULE_OF_KIND = {"text": IMDBDataModule, "table": TitanicDataModule, "image": Cifar2DataModule}
#: Variants run once per dataset kind (the titanic tutorial reads only Titanic's columns).
VARIANTS_OF_KIND = {"text": ("default", "tutorial"), "table": ("default",), "image": ("default", "tutorial")}
PROJECT_KIND = "this project"
#: A hand-written reading of the results inside the section, carried over when the benchmark rewrites it.
NOTES = MarkedSection("external_notes")


def val_fraction(kind: str) -> float:
    """The ``val_fraction`` default of the DataModule of ``kind``'s task: the peers carve validation as it does."""
    return float(inspect.signature(DATAMODULE_OF_KIND[kind].__init__).parameters["val_fraction"].default)


VAL_FRACTION = val_fraction("text")


def _codes(labels: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    values = label_values(labels)
    index = {value: i for i, value in enumerate(values)}
    return np.array([index[label] for label in labels]), values


def text_peers(dataset: Dataset, folder: Path, seed: int) -> list[PeerRun]:
    train_labels, train_texts, _ = read_labeled_texts(folder / "train.tsv")
    test_labels, test_texts, _ = read_labeled_texts(folder / "test.tsv")
    y, values = _codes(train_labels + test_labels)
    y_train, y_test = y[: len(train_labels)], y[len(train_labels) :]
    fit_rows, val_rows = (part.numpy() for part in train_val_split(len(train_texts), VAL_FRACTION, seed, folder))
    scores = text_peer_scores(train_texts, y_train, fit_rows, val_rows, test_texts, y_test)
    return [PeerRun(model, score, len(values)) for model, score in scores]


# -- tables -----------------------------------------------------------------------------------------------
def read_table(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        return header, [row for row in reader if row]


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


class TableEncoder:
    """Numbers and one-hot categories, every statistic from the rows it is fitted on."""

    def __init__(self, columns: Sequence[str], rows: Sequence[Sequence[str]]):
        self.columns = list(columns)
        self.numeric = [
            all(_is_number(row[i]) for row in rows if row[i].strip()) for i in range(len(self.columns))
        ]  # fmt: skip
        self.categories = [
            sorted({row[i].strip() for row in rows}) if not numeric else []
            for i, numeric in enumerate(self.numeric)
        ]  # fmt: skip
        numbers = self._numbers(rows)
        self.median = np.nanmedian(np.where(np.isnan(numbers), np.nan, numbers), axis=0) if numbers.size else numbers
        self.median = np.nan_to_num(self.median)
        filled = np.where(np.isnan(numbers), self.median, numbers)
        self.mean, self.std = filled.mean(0), filled.std(0) + 1e-12

    def _numbers(self, rows: Sequence[Sequence[str]]) -> np.ndarray:
        at = [i for i, numeric in enumerate(self.numeric) if numeric]
        return np.array(
            [[float(row[i]) if row[i].strip() else np.nan for i in at] for row in rows], dtype=np.float64
        ).reshape(len(rows), len(at))

    def _one_hot(self, rows: Sequence[Sequence[str]]) -> np.ndarray:
        blocks = []
        for i, categories in enumerate(self.categories):
            if self.numeric[i]:
                continue
            index = {category: k for k, category in enumerate(categories)}
            block = np.zeros((len(rows), len(categories)))
            for r, row in enumerate(rows):
                k = index.get(row[i].strip())
                if k is not None:
                    block[r, k] = 1.0
            blocks.append(block)
        return np.concatenate(blocks, axis=1) if blocks else np.zeros((len(rows), 0))

    def for_trees(self, rows: Sequence[Sequence[str]]) -> np.ndarray:
        """Numbers as they are (NaN when missing) beside the one-hot categories."""
        return np.concatenate([self._numbers(rows), self._one_hot(rows)], axis=1)

    def for_linear(self, rows: Sequence[Sequence[str]]) -> np.ndarray:
        """Standardised numbers (missing: the median) and a missing flag per numeric column, one-hot categories."""
        numbers = self._numbers(rows)
        missing = np.isnan(numbers)
        standard = (np.where(missing, self.median, numbers) - self.mean) / self.std
        return np.concatenate([standard, missing.astype(np.float64), self._one_hot(rows)], axis=1)


def table_logistic(x_fit, y_fit, x_val, y_val, x_test, y_test) -> PeerScore:
    """Logistic regression (L2, lbfgs, multinomial for several classes), C chosen on validation."""
    from sklearn.linear_model import LogisticRegression

    def model(c: float) -> LogisticRegression:
        return LogisticRegression(C=c, max_iter=2000)

    started = time.perf_counter()
    grid = (0.01, 0.1, 1.0, 10.0)
    scores = {c: model(c).fit(x_fit, y_fit).score(x_val, y_val) for c in grid}
    best = max(grid, key=lambda c: scores[c])
    fitted = model(best).fit(x_fit, y_fit)
    seconds = time.perf_counter() - started
    return PeerScore.scored(fitted.predict(x_test), y_test, seconds, f"C={best}")


def table_peers(dataset: Dataset, folder: Path, seed: int) -> list[PeerRun]:
    header, train = read_table(folder / "train.csv")
    test_header, test = read_table(folder / "test.csv")
    if test_header != header:
        raise ValueError(f"{dataset.name}: train.csv and test.csv have different columns")
    target = header.index(dataset.target)
    features = [i for i, name in enumerate(header) if i != target and name not in dataset.id_columns]
    y, values = _codes([row[target] for row in train] + [row[target] for row in test])
    y_train, y_test = y[: len(train)], y[len(train) :]
    split = train_val_split(len(train), val_fraction("table"), seed, folder)
    fit_rows, val_rows = (part.numpy() for part in split)

    def cells(rows: Sequence[Sequence[str]], index: np.ndarray | None = None) -> list[list[str]]:
        chosen = rows if index is None else [rows[i] for i in index]
        return [[row[i] for i in features] for row in chosen]

    fit, val, test_cells = cells(train, fit_rows), cells(train, val_rows), cells(test)
    encoder = TableEncoder([header[i] for i in features], fit)
    boosted = gradient_boosting(
        encoder.for_trees(fit), y_train[fit_rows], encoder.for_trees(val), y_train[val_rows],
        encoder.for_trees(test_cells), y_test, seed,
    )  # fmt: skip
    linear = table_logistic(
        encoder.for_linear(fit), y_train[fit_rows], encoder.for_linear(val), y_train[val_rows],
        encoder.for_linear(test_cells), y_test,
    )  # fmt: skip
    return [
        PeerRun("HistGradientBoostingClassifier", boosted, len(values)),
        PeerRun("LogisticRegression (one-hot, standardised)", linear, len(values)),
    ]


# -- images -----------------------------------------------------------------------------------------------
#: The classic PyTorch ``examples/mnist`` recipe (github.com/pytorch/examples, ``mnist/main.py``).
CNN_BATCH_SIZE, CNN_LR, CNN_GAMMA, CNN_EPOCHS = 64, 1.0, 0.7, 14
CNN_MODEL = "small CNN (PyTorch examples/mnist recipe)"
TORCH_KIND = "PyTorch"


class SmallCNN(nn.Module):
    """``examples/mnist``'s network for ``channels`` x ``image_size`` x ``image_size`` inputs, ``classes`` outputs."""

    def __init__(self, channels: int, image_size: int, classes: int):
        super().__init__()
        side = (image_size - 4) // 2  # two unpadded 3x3 convolutions, then a 2x2 max-pool
        self.net = nn.Sequential(
            nn.Conv2d(channels, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Dropout(0.25), nn.Flatten(), nn.Linear(64 * side * side, 128), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(128, classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def small_cnn(
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    mean: Sequence[float],
    std: Sequence[float],
    classes: int,
    seed: int,
    epochs: int = CNN_EPOCHS,
) -> PeerScore:
    """Train :class:`SmallCNN` on ``train`` (``uint8[N, C, S, S]`` images, labels) for ``epochs``; the epoch with
    the best validation accuracy (the earliest on ties) is the one scored on ``test``, once.

    Seconds: the training loop with its validation pass per epoch.
    """
    from datamodules.cifar2 import normalize_images

    images, labels = train

    def accuracy(net: nn.Module, part: tuple[torch.Tensor, torch.Tensor]) -> float:
        net.eval()
        with torch.inference_mode():
            correct = sum(
                int((net(normalize_images(part[0][i : i + 1000], mean, std)).argmax(1) == part[1][i : i + 1000]).sum())
                for i in range(0, part[0].shape[0], 1000)
            )  # fmt: skip
        return correct / part[0].shape[0]

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = SmallCNN(images.shape[1], images.shape[-1], classes)
        optimizer = torch.optim.Adadelta(net.parameters(), lr=CNN_LR)
        schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=CNN_GAMMA)
        best_acc, best_epoch, best_state = -1.0, 0, None
        started = time.perf_counter()
        for epoch in range(1, epochs + 1):
            net.train()
            order = torch.randperm(images.shape[0])
            for start in range(0, images.shape[0], CNN_BATCH_SIZE):
                batch = order[start : start + CNN_BATCH_SIZE]
                optimizer.zero_grad()
                loss = F.cross_entropy(net(normalize_images(images[batch], mean, std)), labels[batch])
                loss.backward()
                optimizer.step()
            schedule.step()
            val_acc = accuracy(net, val)
            if val_acc > best_acc:
                best_acc, best_epoch, best_state = val_acc, epoch, copy.deepcopy(net.state_dict())
        seconds = time.perf_counter() - started
    net.load_state_dict(best_state)
    return PeerScore(accuracy(net, test), seconds, f"epoch {best_epoch} of {epochs} (val {best_acc:.4f})")


def image_peers(
    dataset: Dataset, folder: Path, seed: int, epochs: int = CNN_EPOCHS, cache_dir: Path | None = None
) -> list[Row]:
    """The small CNN on the images the cifar2 task's DataModule serves for ``folder``: the default variant's
    settings (carve, image size) without its augmentation, decoded into (or read from) its cache in ``cache_dir``."""
    from lightning_app.training import FitConfig, resolve_config

    settings = {**resolve_config(FitConfig(task=TASK_OF_KIND["image"]))[2].datamodule_kwargs, "augment": False}
    datamodule = Cifar2DataModule(data_dir=folder, cache_dir=cache_dir, seed=seed, **settings)
    datamodule.setup("fit")
    parts = [(part.images, part.labels) for part in (datamodule.train_set, datamodule.val_set, datamodule.test_set)]
    classes = len(datamodule.class_names)
    score = small_cnn(*parts, datamodule.mean, datamodule.std, classes, seed, epochs)
    return peer_rows(dataset, [[PeerRun(CNN_MODEL, score, classes, TORCH_KIND)]], [seed])


CHOSEN = " chosen on validation"


@dataclass
class PeerRun:
    """A peer's score on one seed's carve (its setting chosen on that carve's validation part)."""

    model: str
    score: PeerScore
    classes: int
    kind: str = "scikit-learn"


def peer_rows(dataset: Dataset, runs_per_seed: Sequence[list[PeerRun]], seeds: Sequence[int]) -> list[Row]:
    """One row per peer from its runs on each seed's carve: every seed's accuracy and seconds, and the settings
    validation chose on each (``seeds 42,43,44: C=1.0 / C=3.0 / C=1.0 chosen on validation; ...``)."""
    ran = f"seeds {','.join(map(str, seeds))}: " if len(seeds) > 1 else ""
    rows = []
    for same_peer in zip(*runs_per_seed, strict=True):
        first = same_peer[0]
        chosen = " / ".join(run.score.chosen for run in same_peer)
        note = f"{ran}{chosen}{CHOSEN}; {first.classes} classes"
        values = [run.score.accuracy for run in same_peer]
        seconds = [run.score.seconds for run in same_peer]
        rows.append(Row(dataset.name, first.model, first.kind, "test/acc", values, seconds, note))
    return rows


# -- this project's models -------------------------------------------------------------------------------
def project_model_name(kind: str, variant: str) -> str:
    return f"{TASK_OF_KIND[kind]} task, {variant}"


class CorrectTestRows(pl.Callback):
    """Whether the module predicted each test row right, in the test file's order: ``correct`` after testing.

    Read from the test steps' outputs; a DataModule with a ``test_order`` (row ``i`` of its test set is row
    ``test_order[i]`` of the file) has the loader's order mapped back to the file's, where the peers read it."""

    def __init__(self) -> None:
        self._batches: list[torch.Tensor] = []
        self.correct: np.ndarray | None = None

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._batches = []

    def on_test_batch_end(
        self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._batches.append((pl_module.predicted_labels(outputs["preds"]) == outputs["target"].long()).cpu())

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        in_loader_order = torch.cat(self._batches)
        order = getattr(trainer.datamodule, "test_order", None)
        correct = in_loader_order.clone()
        if order is not None:
            correct[order] = in_loader_order
        self.correct = correct.numpy()


def project_rows(
    dataset: Dataset, folder: Path, seeds: Sequence[int], variants: Sequence[str]
) -> tuple[list[Row], list[np.ndarray]]:
    """Fit this project's task for ``dataset.kind`` on ``folder``: ``default`` over ``seeds``, others on the first.

    Also returns, per seed, which test rows the default predicted right (empty if it did not run)."""
    from lightning_app.training import FitConfig, fit, resolve_config
    from lightning_app.warning_filters import silence_harmless_warnings

    silence_harmless_warnings()
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    task = TASK_OF_KIND[dataset.kind]
    table = {"target_column": dataset.target, "id_columns": list(dataset.id_columns)} if dataset.kind == "table" else {}
    rows, default_correct = [], []
    for variant in [v for v in variants if v in VARIANTS_OF_KIND[dataset.kind]]:
        values, seconds, from_data = [], [], {}
        for seed in seeds if variant == "default" else seeds[:1]:
            tested = CorrectTestRows()
            with tempfile.TemporaryDirectory() as scratch:
                config = FitConfig(task=task, model=variant, seed=seed, data_dir=str(folder), log_dir=scratch,
                                   accelerator="cpu", enable_progress_bar=False, **table)  # fmt: skip
                result = fit(config, callbacks=[tested])
            values.append(result.metrics["test/acc"])
            seconds.append(result.train_seconds)
            from_data = result.settings_from_data
            if variant == "default":
                default_correct.append(tested.correct)
            print(f"{dataset.name} {task}/{variant} seed {seed}: test/acc {values[-1]:.4f}, "
                  f"trainer.fit {seconds[-1]:.1f} s", flush=True)  # fmt: skip
        ran = "seeds " + ",".join(str(seed) for seed in (seeds if variant == "default" else seeds[:1]))
        epochs = from_data.get("max_epochs", resolve_config(FitConfig(task=task, model=variant))[2].max_epochs)
        rules = f" (from the data: {describe_settings(from_data)})" if from_data else ""
        note = f"{ran}; {epochs} epoch(s); the variant's settings{rules}, --data-dir the converted folder"
        rows.append(Row(dataset.name, project_model_name(dataset.kind, variant), PROJECT_KIND, "test/acc", values,
                        seconds, note))  # fmt: skip
    return rows, default_correct


# -- paired comparison ---------------------------------------------------------------------------------------
#: Bootstrap resamples of the test rows for the paired interval.
RESAMPLES = 2000
PAIRED = re.compile(r"paired with (?P<peer>.+?): (?P<mean>[+-]\d+\.\d) points, 95% interval "
                    r"(?P<low>[+-]\d+\.\d) to (?P<high>[+-]\d+\.\d)")  # fmt: skip


def paired_difference(
    mine: Sequence[np.ndarray], theirs: Sequence[np.ndarray], resamples: int = RESAMPLES, seed: int = 0
) -> tuple[float, float, float]:
    """``(mean, low, high)`` in points: the mean over seeds of this model's test accuracy minus the peer's (seed
    ``k``'s runs paired), with a 95% percentile bootstrap interval that resamples the test rows, the same rows for
    both models and every seed, so it measures how much the difference depends on which rows the test split holds.
    """
    per_row = np.mean([a.astype(np.float64) - b for a, b in zip(mine, theirs, strict=True)], axis=0)
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // per_row.size)
    means = np.concatenate([
        per_row[rng.integers(0, per_row.size, (min(chunk, resamples - done), per_row.size))].mean(axis=1)
        for done in range(0, resamples, chunk)
    ])  # fmt: skip
    low, high = np.percentile(means, [2.5, 97.5])
    return 100 * float(per_row.mean()), 100 * float(low), 100 * float(high)


def paired_note(peer_runs: Sequence[list[PeerRun]], default_correct: Sequence[np.ndarray]) -> str:
    """The default against the peer with the best median accuracy, paired on the same carves and test rows."""
    by_name = sorted(zip(*peer_runs, strict=True), key=lambda runs: runs[0].model)  # ties: as the summary breaks them
    best = max(by_name, key=lambda runs: statistics.median(run.score.accuracy for run in runs))
    mean, low, high = paired_difference(default_correct, [run.score.correct for run in best])
    return (
        f"paired with {best[0].model}: {mean:+.1f} points, 95% interval {low:+.1f} to {high:+.1f} (bootstrap over "
        f"the test rows, mean of {len(default_correct)} seed(s))"
    )


# -- the run ----------------------------------------------------------------------------------------------
def rows_for(
    dataset: Dataset,
    cache_dir: Path,
    seed: int,
    what: Sequence[str] = ("peers", "project"),
    seeds: int = 1,
    variants: Sequence[str] = ("default", "tutorial"),
) -> list[Row]:
    folder = cache_dir / dataset.name
    seed_list = [seed + k for k in range(seeds)]
    rows, peer_runs = [], []
    if "peers" in what and dataset.kind in ("text", "table"):
        peers = text_peers if dataset.kind == "text" else table_peers
        peer_runs = [peers(dataset, folder, each) for each in seed_list]
        rows += peer_rows(dataset, peer_runs, seed_list)
    if "peers" in what and dataset.kind == "image":  # minutes per run: the first seed's carve only
        rows += image_peers(dataset, folder, seed)
    if "project" in what:
        project, default_correct = project_rows(dataset, folder, seed_list, variants)
        if peer_runs and default_correct:
            default = next(row for row in project if row.model == project_model_name(dataset.kind, "default"))
            default.note += "; " + paired_note(peer_runs, default_correct)
        rows += project
    return rows


def dataset_table(cache_dir: Path) -> list[str]:
    import json

    lines = [
        "| dataset | kind | classes | train / test | source | split |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for dataset in DATASETS:
        provenance = cache_dir / dataset.name / "provenance.json"
        rows = json.loads(provenance.read_text())["rows"] if provenance.is_file() else None
        sizes = f"{sum(rows['train'].values()):,} / {sum(rows['test'].values()):,}" if rows else "not converted"
        source = f"{dataset.source.repo}@{dataset.source.commit[:10]}"
        lines.append(f"| {dataset.name} | {dataset.kind} | {dataset.classes} | {sizes} | {source} | {dataset.split} |")
    return lines


def _sklearn_version() -> str:
    import sklearn

    return sklearn.__version__


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split(" | ")]


def kept_rows(output: Path, replaced: Iterable[str | tuple[str, str]]) -> list[str]:
    """The rows of the external section in ``output`` that this run does not replace.

    ``replaced`` holds dataset names (every row of the dataset goes) or ``(dataset, model)`` pairs (that row goes).
    """
    replaced = set(replaced)
    lines = (EXTERNAL.read(output) or "").splitlines()
    rows = [line for line in lines if line.count(" | ") == 7]  # the long table's 8 columns
    return [
        row for row in rows
        if _cells(row)[0] in BY_NAME and _cells(row)[0] not in replaced and tuple(_cells(row)[:2]) not in replaced
    ]  # fmt: skip


@dataclass
class Parsed:
    """A row of the long table read back: the median value and seconds, the range as written, the runs, the note."""

    dataset: str
    model: str
    kind: str
    value: float
    value_text: str
    seconds: float
    seconds_text: str
    runs: int
    note: str

    @classmethod
    def of(cls, line: str) -> Parsed:
        dataset, model, kind, _, value, seconds, runs, note = _cells(line)
        return cls(
            dataset, model, kind, float(value.split()[0]), value, float(seconds.split()[0]), seconds, int(runs), note
        )


def _paired_cell(default: Parsed, peer: Parsed) -> str:
    """The default's paired comparison with ``peer`` as its note gives it, or ``—`` (none, or with another peer)."""
    found = PAIRED.search(default.note)
    if found is None or found["peer"] != peer.model:
        return "—"
    return f"{found['mean']} ({found['low']} to {found['high']})"


def summary_table(lines: Sequence[str], train_rows: dict[str, int]) -> list[str]:
    """One line per dataset: this project's default and tutorial against the best classical peer."""
    parsed = [Parsed.of(line) for line in lines]
    out = [
        "| dataset | kind | classes | train rows | default: median (range), seeds | tutorial | best peer | "
        "default - peer (points) | paired: mean (95% interval) | default s | peer s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for dataset in DATASETS:
        mine = [row for row in parsed if row.dataset == dataset.name]
        if not mine:
            continue
        default = next((row for row in mine if row.model == project_model_name(dataset.kind, "default")), None)
        tutorial = next((row for row in mine if row.model == project_model_name(dataset.kind, "tutorial")), None)
        peers = [row for row in mine if row.kind != PROJECT_KIND]
        peer = max(peers, key=lambda row: row.value) if peers else None
        tutorial_text = (
            f"{tutorial.value_text}" if tutorial
            else "n/a (Titanic's columns only)" if dataset.kind == "table" else "not run"
        )  # fmt: skip
        rows = train_rows.get(dataset.name)
        out.append(
            f"| {dataset.name} | {dataset.kind} | {dataset.classes} | {f'{rows:,}' if rows else '?'} | "
            f"{f'{default.value_text}, {default.runs}' if default else 'not run'} | {tutorial_text} | "
            f"{f'{peer.model}: {peer.value:.4f}' if peer else '—'} | "
            f"{f'{100 * (default.value - peer.value):+.1f}' if default and peer else '—'} | "
            f"{_paired_cell(default, peer) if default and peer else '—'} | "
            f"{default.seconds_text if default else '—'} | {peer.seconds_text if peer else '—'} |"
        )
    return out


def _train_rows(cache_dir: Path) -> dict[str, int]:
    import json

    counts = {}
    for dataset in DATASETS:
        provenance = cache_dir / dataset.name / "provenance.json"
        if provenance.is_file():
            counts[dataset.name] = sum(json.loads(provenance.read_text())["rows"]["train"].values())
    return counts


def section(
    rows: Sequence[Row],
    cache_dir: Path,
    seed: int,
    threads: int | None = None,
    earlier_rows: Sequence[str] = (),
    notes: str | None = None,
) -> str:
    order = [dataset.name for dataset in DATASETS]
    table = sorted(
        [*earlier_rows, *(row.markdown() for row in rows)],
        key=lambda line: (order.index(_cells(line)[0]), _cells(line)[2] == PROJECT_KIND, _cells(line)[1]),
    )  # per dataset: the peers, then this project's variants, each by name (whichever run wrote them)
    lines = [
        EXTERNAL.start,
        "### External datasets: this project's models and classical peers (`python -m benchmarks.external`)",
        "",
        f"Last run on this machine ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}), seed {seed}"
        + (f", {threads} torch / BLAS / OpenMP thread(s)" if threads else "")
        + f", scikit-learn {_sklearn_version()}"
        + "; data converted "
        "by `python -m benchmarks.external.fetch` (sources, digests and licences: `benchmarks/external/README.md`). "
        "Validation is the seeded part of train that the task's DataModule carves (10% for text and images, 15% "
        "for tables); each peer's setting is chosen on it, the test split scored once per run. This project's "
        "models run with their variant's settings unchanged (text: the `imdb` task, tables: `titanic`, images: "
        "`cifar2`), `--data-dir` the converted folder. Seconds: for this project `trainer.fit` wall time, for a "
        "peer its training (vectorising and the setting search included; for the image CNN its loop with a validation "
        "pass per epoch, decoding excluded). The paired column compares the default with the best peer run by "
        "run (the same seed's carve, the same test rows): the mean over seeds of their accuracy difference, and a 95% "
        "bootstrap interval from resampling the test rows (how much the difference owes to which rows the test "
        "split happens to hold; not the spread over seeds)."
        + (" Rows of datasets or models not in the last run come from an earlier one." if earlier_rows else ""),
        "",
        *dataset_table(cache_dir),
        "",
        *summary_table(table, _train_rows(cache_dir)),
        "",
        *([notes, ""] if notes else []),
        "Every run:",
        "",
        "| dataset | model | kind | metric | value | train s | runs | notes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *table,
        EXTERNAL.end,
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="*", default=None, choices=sorted(BY_NAME), metavar="NAME")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, default=None,
                        help="limit torch, BLAS and OpenMP threads (OpenMP busy-waits when loaded)")  # fmt: skip
    parser.add_argument("--what", nargs="+", default=["peers", "project"], choices=["peers", "project"],
                        help="classical peers, this project's models, or both (default)")  # fmt: skip
    parser.add_argument("--seeds", type=int, default=1,
                        help="seeds (carves) of this project's default variant and of the text and table peers, from "
                             "--seed on (default 1; the image peer runs on --seed's carve only)")  # fmt: skip
    parser.add_argument("--variants", nargs="+", default=["default", "tutorial"], choices=["default", "tutorial"])
    args = parser.parse_args(argv)
    if args.threads:
        import torch
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=args.threads)
        torch.set_num_threads(args.threads)
    cache_dir = (args.cache_dir or default_cache_dir()).expanduser()
    chosen = [BY_NAME[name] for name in args.datasets] if args.datasets else list(DATASETS)
    rows = []
    for dataset in chosen:
        if not (cache_dir / dataset.name / "provenance.json").is_file():
            print(f"{dataset.name}: not converted (python -m benchmarks.external.fetch {dataset.name}); skipped")
            continue
        found = rows_for(dataset, cache_dir, args.seed, args.what, args.seeds, args.variants)
        for row in found:
            print(row.markdown(), flush=True)
        rows += found
    earlier = kept_rows(args.output, [(row.task, row.model) for row in rows])
    notes = NOTES.read(args.output)
    EXTERNAL.write(section(rows, cache_dir, args.seed, args.threads, earlier, notes), args.output)
    print(f"wrote the external section of {args.output}")


if __name__ == "__main__":
    main()
