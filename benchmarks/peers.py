"""Peers: this project's default models beside what a practitioner would pick instead, in one run on one machine.

    pip install -e ".[bench]"                        # scikit-learn: benchmark-only, never a runtime dependency
    python -m benchmarks.peers                       # every task; writes its section into benchmarks/RESULTS.md
    python -m benchmarks.peers --tasks imdb titanic --seeds 3 --output /tmp/RESULTS.md

Rows per task:

* this project's default (``fit`` with the registry defaults; one run per seed, test split touched once each);
* the tutorial's own recipe as a plain PyTorch loop: its network, loss, optimizer, batch size and epochs
  (this project's tutorial variant without the Trainer), trained on the whole training file as the
  tutorial did (no validation split) and scored on the test split after the last epoch;
* peers from scikit-learn: for IMDB a TF-IDF uni+bigram logistic regression and an NBSVM-style model
  (binary 1-3-gram counts scaled by the naive-Bayes log-count ratio, then logistic regression), for
  Titanic gradient boosting (``HistGradientBoostingClassifier``) on the default feature encoding.
  Their regularisation strength is chosen on this project's validation split (90/10 of train for IMDB),
  then they are scored once on test.

Times are wall-clock seconds of training only (vectorising included for the scikit-learn text models;
``trainer.fit`` for this project; the loop for the tutorial recipe), data loading excluded.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from benchmarks.sections import PEERS
from datamodules import PACKAGED_DATA_DIR
from datamodules.base import train_val_split
from datamodules.text_files import read_labeled_texts
from lightning_app.models import TaskModule
from lightning_app.registry import TASKS
from lightning_app.training import FitConfig, build_datamodule_and_module, fit
from lightning_app.warning_filters import silence_harmless_warnings

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
#: The test metric compared per task.
TASK_METRIC = {"imdb": "test/acc", "cifar2": "test/acc", "titanic": "test/acc", "covid19": "test/mae"}


@dataclass
class Row:
    task: str
    model: str
    kind: str
    metric: str
    values: list[float]
    seconds: list[float]
    note: str = ""

    def markdown(self) -> str:
        return (
            f"| {self.task} | {self.model} | {self.kind} | {self.metric} | {summarise(self.values, 4)} | "
            f"{summarise(self.seconds, 1)} | {len(self.values)} | {self.note} |"
        )


def summarise(values: Sequence[float], digits: int) -> str:
    """``median (min-max)``, or the single value."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


# -- this project's defaults ------------------------------------------------------------------------------
def project_default(task: str, seeds: Sequence[int]) -> Row:
    metric = TASK_METRIC[task]
    values, seconds = [], []
    for seed in seeds:
        with tempfile.TemporaryDirectory() as scratch:
            result = fit(FitConfig(task=task, seed=seed, log_dir=scratch, accelerator="cpu", enable_progress_bar=False))
        values.append(result.metrics[metric])
        seconds.append(result.train_seconds)
    note = "validation carved from train; checkpoint chosen on validation"
    if task == "covid19":
        note += f"; persistence test/mae {result.metrics['test/persistence_mae']:.1f}"
    return Row(task, "default", "this project", metric, values, seconds, note)


# -- the tutorial's recipe as a plain loop -----------------------------------------------------------------
def _all_training_data(task: str) -> tuple[object, TaskModule, tuple[torch.Tensor, ...]]:
    config = FitConfig(task=task, model="tutorial", seed=0)
    datamodule, module = build_datamodule_and_module(config)
    train = datamodule.train_set.all_rows()
    val = datamodule.val_set.all_rows()
    return datamodule, module, tuple(torch.cat([a, b]) for a, b in zip(train, val, strict=True))


def tutorial_recipe(task: str, seed: int = 0) -> Row:
    """The tutorial's network, loss, optimizer, batch size and epochs in a hand-written loop."""
    pl.seed_everything(seed, verbose=False)
    datamodule, module, tensors = _all_training_data(task)
    settings = TASKS[task].datamodule_settings("tutorial")
    epochs, batch_size = TASKS[task].variant("tutorial").max_epochs, settings["batch_size"]
    optimizer = module.configure_optimizers()
    module.train()
    started = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(tensors[0]))
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            batch = datamodule.on_after_batch_transfer([tensor[index] for tensor in tensors], 0)
            loss = module.shared_step(batch)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    seconds = time.perf_counter() - started
    datamodule.setup("test")
    inputs, target = datamodule.on_after_batch_transfer(list(datamodule.test_set.all_rows()), 0)
    preds = torch.cat([module.predict_encoded(chunk) for chunk in inputs.split(512)])
    if task == "covid19":
        value = float((preds - target).abs().mean())
    else:
        labels = (preds >= 0.5).long() if preds.ndim == 1 else preds.argmax(-1)
        value = float((labels == target).float().mean())
    note = f"{epochs} epochs, batch {batch_size}, train + validation rows, score after the last epoch"
    return Row(task, "tutorial recipe", "plain PyTorch loop", TASK_METRIC[task], [value], [seconds], note)


# -- scikit-learn peers -----------------------------------------------------------------------------------
def _imdb_texts() -> tuple[list[str], list[int], list[str], list[int]]:
    def read(split: str) -> tuple[list[str], list[int]]:
        labels, texts, _ = read_labeled_texts(PACKAGED_DATA_DIR / "imdb" / f"{split}.tsv.gz")
        return [text.replace("<br />", " ") for text in texts], [int(label) for label in labels]

    return *read("train"), *read("test")


def _choose_c(fit_and_score: Callable[[float], float], grid: Sequence[float]) -> float:
    """The C of ``grid`` with the best validation accuracy (first of ties)."""
    scores = {c: fit_and_score(c) for c in grid}
    return max(grid, key=lambda c: scores[c])


def _logistic(c: float, classes: int = 2):
    """liblinear's logistic regression; one model per class against the rest for several classes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    model = LogisticRegression(C=c, solver="liblinear", max_iter=1000)
    return model if classes <= 2 else OneVsRestClassifier(model)


@dataclass
class PeerScore:
    """A peer's test accuracy, training seconds and the setting chosen on validation; ``correct``, where known,
    says for each test row (in the test file's order) whether the peer predicted it right."""

    accuracy: float
    seconds: float
    chosen: str
    correct: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def scored(cls, predicted, labels, seconds: float, chosen: str) -> PeerScore:
        """From the peer's test predictions and the true ``labels``."""
        correct = np.asarray(predicted) == np.asarray(labels)
        return cls(float(correct.mean()), seconds, chosen, correct)


def tfidf_logistic(
    fit_texts: Sequence[str], fit_labels, val_texts: Sequence[str], val_labels, test_texts: Sequence[str], test_labels
) -> PeerScore:
    """TF-IDF uni+bigrams + logistic regression, C chosen on validation (one-vs-rest for several classes)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    started = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    features = vectorizer.fit_transform(fit_texts)
    val_features = vectorizer.transform(val_texts)
    classes = len(set(np.asarray(fit_labels).tolist()))
    grid = (1, 4, 16, 64)
    c = _choose_c(lambda c: _logistic(c, classes).fit(features, fit_labels).score(val_features, val_labels), grid)
    model = _logistic(c, classes).fit(features, fit_labels)
    seconds = time.perf_counter() - started
    return PeerScore.scored(model.predict(vectorizer.transform(test_texts)), test_labels, seconds, f"C={c}")


class _NBLogistic:
    """NBSVM-style: binary n-gram counts scaled by the naive-Bayes log-count ratio, then logistic regression.

    Two classes: one model on the ratio of class 1 to class 0 (Wang & Manning 2012). More classes: one such
    model per class against the rest, the class with the highest decision value wins.
    """

    def __init__(self, c: float):
        self.c = c

    @staticmethod
    def ratio(features, positive_rows):
        positive = np.asarray(features[positive_rows].sum(0)).ravel() + 1.0
        negative = np.asarray(features[~positive_rows].sum(0)).ravel() + 1.0
        return np.log((positive / positive.sum()) / (negative / negative.sum()))

    def fit(self, features, labels):
        labels = np.asarray(labels)
        self.classes = np.unique(labels)
        targets = self.classes[1:] if len(self.classes) == 2 else self.classes
        self.models = []
        for target in targets:
            ratio = self.ratio(features, labels == target)
            model = _logistic(self.c).fit(features.multiply(ratio).tocsr(), labels == target)
            self.models.append((ratio, model))
        return self

    def predict(self, features):
        scores = np.stack([model.decision_function(features.multiply(ratio).tocsr()) for ratio, model in self.models])
        if len(self.classes) == 2:
            return self.classes[(scores[0] > 0).astype(int)]
        return self.classes[scores.argmax(0)]

    def score(self, features, labels) -> float:
        return float((self.predict(features) == np.asarray(labels)).mean())


def nbsvm_logistic(
    fit_texts: Sequence[str], fit_labels, val_texts: Sequence[str], val_labels, test_texts: Sequence[str], test_labels
) -> PeerScore:
    """NBSVM-style binary 1-3-gram counts (:class:`_NBLogistic`), C chosen on validation."""
    from sklearn.feature_extraction.text import CountVectorizer

    started = time.perf_counter()
    counts = CountVectorizer(ngram_range=(1, 3), min_df=2, binary=True)
    features = counts.fit_transform(fit_texts)
    val_features = counts.transform(val_texts)
    grid = (0.1, 0.3, 1.0, 3.0, 10.0)
    c = _choose_c(lambda c: _NBLogistic(c).fit(features, fit_labels).score(val_features, val_labels), grid)
    model = _NBLogistic(c).fit(features, fit_labels)
    seconds = time.perf_counter() - started
    return PeerScore.scored(model.predict(counts.transform(test_texts)), test_labels, seconds, f"C={c}")


#: The text peers, by the name their rows carry.
TEXT_PEERS = (
    ("TF-IDF 1-2-grams + LogisticRegression", tfidf_logistic),
    ("NBSVM-style 1-3-grams + LogisticRegression", nbsvm_logistic),
)


def text_peer_scores(
    train_texts: Sequence[str], train_labels, fit_rows, val_rows, test_texts: Sequence[str], test_labels
) -> list[tuple[str, PeerScore]]:
    """Each of :data:`TEXT_PEERS` fitted on the ``fit_rows`` of the training texts (labels a numpy array), its
    setting chosen on the ``val_rows``, scored once on the test texts."""
    fit_texts, val_texts = [train_texts[i] for i in fit_rows], [train_texts[i] for i in val_rows]
    return [
        (name, peer(fit_texts, train_labels[fit_rows], val_texts, train_labels[val_rows], test_texts, test_labels))
        for name, peer in TEXT_PEERS
    ]


def imdb_peers(seed: int = 42) -> list[Row]:
    train_texts, train_labels, test_texts, test_labels = _imdb_texts()
    train_index, val_index = train_val_split(len(train_texts), 0.1, seed, PACKAGED_DATA_DIR / "imdb")
    scores = text_peer_scores(train_texts, np.array(train_labels), train_index.numpy(), val_index.numpy(),
                              test_texts, np.array(test_labels))  # fmt: skip
    note = "{} chosen on validation"
    return [
        Row("imdb", model, "scikit-learn", "test/acc", [score.accuracy], [score.seconds], note.format(score.chosen))
        for model, score in scores
    ]


def gradient_boosting(x_train, y_train, x_val, y_val, x_test, y_test, seed: int) -> PeerScore:
    """``HistGradientBoostingClassifier`` (200 iterations), learning rate chosen on validation."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    started = time.perf_counter()
    best = max(
        (0.03, 0.1, 0.3),
        key=lambda rate: (
            HistGradientBoostingClassifier(learning_rate=rate, max_iter=200, random_state=seed)
            .fit(x_train, y_train)
            .score(x_val, y_val)
        ),
    )
    model = HistGradientBoostingClassifier(learning_rate=best, max_iter=200, random_state=seed)
    model.fit(x_train, y_train)
    seconds = time.perf_counter() - started
    return PeerScore.scored(model.predict(x_test), y_test, seconds, f"learning rate {best}")


def titanic_peer(seeds: Sequence[int]) -> Row:
    values, seconds = [], []
    for seed in seeds:
        datamodule, _ = build_datamodule_and_module(FitConfig(task="titanic", seed=seed))
        datamodule.setup("test")
        (x_train, y_train), (x_val, y_val) = datamodule.train_set.tensors, datamodule.val_set.tensors
        x_test, y_test = datamodule.test_set.tensors
        score = gradient_boosting(
            x_train.numpy(), y_train.numpy(), x_val.numpy(), y_val.numpy(), x_test.numpy(), y_test.numpy(), seed
        )
        seconds.append(score.seconds)
        values.append(score.accuracy)
    note = "default feature encoding; learning rate chosen on validation; the same splits as the default"
    return Row("titanic", "HistGradientBoostingClassifier", "scikit-learn", "test/acc", values, seconds, note)


# -- the run ----------------------------------------------------------------------------------------------
def rows_for(task: str, seeds: Sequence[int]) -> list[Row]:
    rows = [project_default(task, seeds), tutorial_recipe(task)]
    if task == "imdb":
        rows += imdb_peers()
    if task == "titanic":
        rows.append(titanic_peer(range(max(5, len(seeds)))))
    return rows


def section(rows: Sequence[Row], seeds: Sequence[int], earlier_rows: Sequence[str] = ()) -> str:
    lines = [
        PEERS.start,
        "### Peers: this project's defaults beside scikit-learn and the tutorial's own recipe",
        "",
        f"`python -m benchmarks.peers`, one run on this machine ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())});"
        f" this project's defaults over seeds {list(seeds)} (median (min-max)); seconds are training only."
        + (" Rows of tasks not in that run come from an earlier one." if earlier_rows else ""),
        "",
        "| task | model | kind | metric | value | train s | runs | notes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *earlier_rows,
        *(row.markdown() for row in rows),
        PEERS.end,
    ]
    return "\n".join(lines)


def kept_rows(output: Path, rerun_tasks: Sequence[str]) -> list[str]:
    """The table rows of the peers section in ``output`` for tasks not in ``rerun_tasks`` (kept when some rerun)."""

    def task_of(line: str) -> str:
        return line.split(" | ")[0].removeprefix("| ")

    lines = (PEERS.read(output) or "").splitlines()
    return [line for line in lines if task_of(line) in TASK_METRIC and task_of(line) not in rerun_tasks]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["imdb", "cifar2", "titanic", "covid19"], choices=sorted(TASKS))
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 of this project's defaults (default 3)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    silence_harmless_warnings()
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    seeds = list(range(args.seeds))
    rows = []
    for task in args.tasks:
        task_rows = rows_for(task, seeds)
        print("\n".join(row.markdown() for row in task_rows), flush=True)
        rows += task_rows
    text = section(rows, seeds, kept_rows(args.output, args.tasks))  # other tasks' rows from an earlier run stay
    PEERS.write(text, args.output)
    print(text)


if __name__ == "__main__":
    main()
