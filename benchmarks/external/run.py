"""Classical peers on the converted external datasets (a first skeleton of issue #24's benchmark).

    python -m benchmarks.external.fetch --all --from DIR      # once: raw files -> ~/.cache/lightning-app/external
    python -m benchmarks.external                              # every converted dataset; writes its RESULTS.md section
    python -m benchmarks.external --datasets subj adult --output /tmp/RESULTS.md

Per dataset, on the converted ``train`` / ``test`` files, with a seeded 90/10 train / validation split of train
(``datamodules.base.train_val_split``, as the tasks carve theirs) on which each peer's setting is chosen:

* text: the peers of :mod:`benchmarks.peers`, TF-IDF 1-2-grams + logistic regression and NBSVM-style 1-3-grams
  (one-vs-rest for several classes);
* table: :func:`benchmarks.peers.gradient_boosting` and a logistic regression, on every column but the target and
  the id columns: numeric columns as numbers (missing: the training median plus a missing flag for the logistic
  regression, NaN for gradient boosting; standardised for the logistic regression), the others one-hot with the
  categories seen in training (missing is a category of its own);
* image: no classical peer yet (the project's image task is the thing to run on them).

The test split is scored once per peer. This project's own models are not run here yet.
"""

from __future__ import annotations

import argparse
import csv
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.external.datasets import BY_NAME, DATASETS, Dataset
from benchmarks.external.fetch import default_cache_dir
from benchmarks.peers import RESULTS, PeerScore, Row, gradient_boosting, nbsvm_logistic, tfidf_logistic
from benchmarks.sections import EXTERNAL
from datamodules.base import train_val_split
from datamodules.text_files import label_values, read_labeled_texts

VAL_FRACTION = 0.1


def _codes(labels: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    values = label_values(labels)
    index = {value: i for i, value in enumerate(values)}
    return np.array([index[label] for label in labels]), values


def text_peers(dataset: Dataset, folder: Path, seed: int) -> list[Row]:
    train_labels, train_texts, _ = read_labeled_texts(folder / "train.tsv")
    test_labels, test_texts, _ = read_labeled_texts(folder / "test.tsv")
    y, values = _codes(train_labels + test_labels)
    y_train, y_test = y[: len(train_labels)], y[len(train_labels) :]
    fit_rows, val_rows = (part.numpy() for part in train_val_split(len(train_texts), VAL_FRACTION, seed, folder))
    fit_texts, val_texts = [train_texts[i] for i in fit_rows], [train_texts[i] for i in val_rows]
    rows = []
    for model, peer in (
        ("TF-IDF 1-2-grams + LogisticRegression", tfidf_logistic),
        ("NBSVM-style 1-3-grams + LogisticRegression", nbsvm_logistic),
    ):
        score = peer(fit_texts, y_train[fit_rows], val_texts, y_train[val_rows], test_texts, y_test)
        rows.append(_row(dataset, model, score, len(values)))
    return rows


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
    return PeerScore(float(fitted.score(x_test, y_test)), seconds, f"C={best}")


def table_peers(dataset: Dataset, folder: Path, seed: int) -> list[Row]:
    header, train = read_table(folder / "train.csv")
    test_header, test = read_table(folder / "test.csv")
    if test_header != header:
        raise ValueError(f"{dataset.name}: train.csv and test.csv have different columns")
    target = header.index(dataset.target)
    features = [i for i, name in enumerate(header) if i != target and name not in dataset.id_columns]
    y, values = _codes([row[target] for row in train] + [row[target] for row in test])
    y_train, y_test = y[: len(train)], y[len(train) :]
    fit_rows, val_rows = (part.numpy() for part in train_val_split(len(train), VAL_FRACTION, seed, folder))

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
        _row(dataset, "HistGradientBoostingClassifier", boosted, len(values)),
        _row(dataset, "LogisticRegression (one-hot, standardised)", linear, len(values)),
    ]


def _row(dataset: Dataset, model: str, score: PeerScore, classes: int) -> Row:
    note = f"{score.chosen} chosen on validation; {classes} classes"
    return Row(dataset.name, model, "scikit-learn", "test/acc", [score.accuracy], [score.seconds], note)


# -- the run ----------------------------------------------------------------------------------------------
def rows_for(dataset: Dataset, cache_dir: Path, seed: int) -> list[Row]:
    folder = cache_dir / dataset.name
    if dataset.kind == "text":
        return text_peers(dataset, folder, seed)
    if dataset.kind == "table":
        return table_peers(dataset, folder, seed)
    return []


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


def kept_rows(output: Path, rerun: Sequence[str]) -> list[str]:
    """The peer rows of the external section in ``output`` for datasets not in ``rerun`` (kept when some rerun)."""
    lines = (EXTERNAL.read(output) or "").splitlines()
    rows = [line for line in lines if line.count(" | ") == 7]  # the peer table's 8 columns
    return [row for row in rows if row.split(" | ")[0].removeprefix("| ") in BY_NAME and
            row.split(" | ")[0].removeprefix("| ") not in rerun]  # fmt: skip


def section(
    rows: Sequence[Row], cache_dir: Path, seed: int, threads: int | None = None, earlier_rows: Sequence[str] = ()
) -> str:
    lines = [
        EXTERNAL.start,
        "### External datasets: classical peers (`python -m benchmarks.external`)",
        "",
        f"One run on this machine ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}), seed {seed}"
        + (f", {threads} BLAS/OpenMP thread(s)" if threads else "")
        + f", scikit-learn {_sklearn_version()}"
        + "; data converted "
        "by `python -m benchmarks.external.fetch` (sources, digests and licences: `benchmarks/external/README.md`). "
        "Each peer's setting is chosen on a seeded 10% of train, the test split scored once; seconds are training "
        "only (vectorising and the setting search included). This project's models are not run here yet."
        + (" Rows of datasets not in that run come from an earlier one." if earlier_rows else ""),
        "",
        *dataset_table(cache_dir),
        "",
        "| dataset | model | kind | metric | value | train s | runs | notes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *sorted(
            [*earlier_rows, *(row.markdown() for row in rows)],
            key=lambda line: [dataset.name for dataset in DATASETS].index(line.split(" | ")[0].removeprefix("| ")),
        ),
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
                        help="limit BLAS/OpenMP threads (OpenMP busy-waits on a loaded machine)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=args.threads)
    cache_dir = (args.cache_dir or default_cache_dir()).expanduser()
    chosen = [BY_NAME[name] for name in args.datasets] if args.datasets else list(DATASETS)
    rows = []
    for dataset in chosen:
        if not (cache_dir / dataset.name / "provenance.json").is_file():
            print(f"{dataset.name}: not converted (python -m benchmarks.external.fetch {dataset.name}); skipped")
            continue
        found = rows_for(dataset, cache_dir, args.seed)
        for row in found:
            print(row.markdown(), flush=True)
        rows += found
    earlier = kept_rows(args.output, [dataset.name for dataset in chosen])
    EXTERNAL.write(section(rows, cache_dir, args.seed, args.threads, earlier), args.output)
    print(f"wrote the external section of {args.output}")


if __name__ == "__main__":
    main()
