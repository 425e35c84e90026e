"""Any CSV table: a target column, columns to drop, every other column a numeric or categorical feature.

What ``TitanicDataModule`` uses for a ``--data-dir`` whose CSVs do not have Titanic's columns (the ``"generic"``
feature set). Pure functions over raw rows, so training data and rows scored from a checkpoint share the code:

* :func:`column_kinds` reads each column's kind from the whole training file: numeric when every non-missing value
  parses as a number, otherwise categorical;
* :func:`fit_tabular_state` fits, on the training part only, a numeric column's median (what a missing value
  becomes), mean and standard deviation (it is standardised), and a categorical column's levels: the
  :data:`MAX_LEVELS` most frequent seen at least :data:`MIN_LEVEL_COUNT` times, one-hot encoded, plus a
  ``missing`` level when the training part has missing values and an ``other`` level for everything else (rarer
  levels, and levels never seen in training: an unseen value at test or predict time is ``other``, not an error);
* :func:`parse_row` types one CSV row against that state (:class:`DataError` naming the line and column for a
  non-numeric value in a numeric column); :func:`encode_rows` turns typed rows into ``float32[N, num_features]``.

With ``numeric_bins > 0`` (``TitanicDataModule``'s default: :func:`bins_for_rows`) a numeric column also gets
:func:`quantile_edges` fitted on the training part and, after every column's features, its :func:`piecewise_linear`
encoding.

Missing values are empty cells and the markers in :data:`MISSING_VALUES`. A numeric column that had missing values
in the training part also gets a 0/1 ``<column>_missing`` feature. The state is plain JSON values.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from datamodules.base import parse_float
from datamodules.errors import DataError

#: Cell values read as missing (compared after stripping white space, ignoring case).
MISSING_VALUES = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})
#: A categorical column keeps at most this many of its most frequent training levels as one-hot features ...
MAX_LEVELS = 20
#: ... and only those seen in at least this many training rows (a column of unique names or ids learns nothing).
MIN_LEVEL_COUNT = 2
#: Names of the extra levels of a categorical column (feature names ``<column>=<level>``).
MISSING_LEVEL = "<missing>"
OTHER_LEVEL = "<other>"
#: Piecewise-linear encoding: the fewest bins a numeric column gets (up to ``numeric_bins``); a column whose distinct
#: training values give fewer gets none (a 0/1 column would gain nothing over its standardised value).
MIN_BINS = 2
#: Numbers whose magnitude exceeds this are refused: standardised, they would not stay finite in float32.
MAX_ABS_VALUE = 1e15


def is_missing(value: str | None) -> bool:
    return value is None or value.strip().lower() in MISSING_VALUES


def _is_number(value: str) -> bool:
    try:
        return math.isfinite(float(value))
    except ValueError:
        return False


def column_kinds(path: Path, rows: Sequence[tuple[int, dict[str, str]]], columns: Sequence[str]) -> dict[str, str]:
    """``{column: "numeric" | "categorical"}`` for ``columns`` of the training file ``path``.

    Raises :class:`DataError` naming the file and the column for a column with no value in any row.
    """
    kinds = {}
    for column in columns:
        values = [row[column].strip() for _, row in rows if not is_missing(row[column])]
        if not values:
            raise DataError(
                path, f"column '{column}' is empty in every row; remove it or list it in --id-columns to drop it"
            )
        kinds[column] = "numeric" if all(_is_number(value) for value in values) else "categorical"
    return kinds


def _label_order(labels: set[str]) -> list[str]:
    """Class names in order: numerically when every label is a number (``2`` before ``10``), else as text."""
    if all(_is_number(label) for label in labels):
        return sorted(labels, key=lambda label: (float(label), label))
    return sorted(labels)


def class_names_of(path: Path, target: str, rows: Sequence[tuple[int, dict[str, str]]]) -> list[str]:
    """The training file's classes (see :func:`read_label`); :class:`DataError` when there are fewer than two."""
    labels = {read_label(path, line, row, target) for line, row in rows}
    if len(labels) < 2:
        problem = f"column '{target}' needs at least two classes to train on, every row has {min(labels)!r}"
        raise DataError(path, problem)
    return _label_order(labels)


def read_label(path: Path, line: int, row: dict[str, str], target: str) -> str:
    """The stripped target value of one row; :class:`DataError` naming the line and column when it is missing."""
    value = row[target].strip()
    if is_missing(value):
        raise DataError(path, f"column '{target}' (the target) is empty", line=line)
    return value


@dataclass(frozen=True)
class TabularRow:
    """One typed row: per feature column of the state, a float (numeric), a string (categorical) or ``None``
    (missing); ``label`` the class index, ``None`` for rows to be scored."""

    values: tuple[float | str | None, ...]
    label: int | None = None


def parse_row(
    path: Path, line: int, row: dict[str, str], state: dict[str, Any], with_label: bool = False
) -> TabularRow:
    """Type one CSV row with the columns of ``state`` (:func:`fit_tabular_state`); extra columns are ignored."""
    values: list[float | str | None] = []
    for spec in state["columns"]:
        name, raw = spec["name"], row.get(spec["name"])
        if raw is None:
            raise DataError(path, f"missing column '{name}' (the model was trained with it)", line=line)
        if is_missing(raw):
            values.append(None)
        elif spec["kind"] == "numeric":
            number = parse_float(path, line, name, raw)
            if number is not None and abs(number) > MAX_ABS_VALUE:
                problem = f"column '{name}' has value {raw.strip()!r}, beyond +-{MAX_ABS_VALUE:g}"
                raise DataError(path, problem, line=line)
            values.append(number)
        else:
            values.append(raw.strip())
    label = None
    if with_label:
        target, names = state["target_column"], state["class_names"]
        if target not in row:
            raise DataError(path, f"missing target column '{target}'", line=line)
        value = read_label(path, line, row, target)
        if value not in names:
            raise DataError(
                path, f"column '{target}' has class {value!r}, not one of the training classes {names}", line=line
            )
        label = names.index(value)
    return TabularRow(tuple(values), label)


def parse_rows(
    path: Path, rows: Sequence[tuple[int, dict[str, str]]], state: dict[str, Any], with_label: bool
) -> list[TabularRow]:
    return [parse_row(path, line, row, state, with_label) for line, row in rows]


def quantile_edges(numbers: Sequence[float], bins: int) -> list[float]:
    """Up to ``bins + 1`` increasing bin edges at the quantiles of the distinct values among ``numbers`` (a column
    with fewer distinct values gets fewer bins); ``[]`` when that leaves fewer than :data:`MIN_BINS` bins.

    Quantiles of the distinct values, not of all rows: a column that is mostly one value (adult's capital-gain is 0
    in 92% of rows) would otherwise spend its bins on that value and get 3 edges where the informative thresholds
    lie in the tail (on adult: validation accuracy 0.8655 instead of 0.8554 at 32 bins, 3 seeds)."""
    distinct = sorted({float(number) for number in numbers})
    if bins < MIN_BINS or len(distinct) <= MIN_BINS:
        return []
    last = len(distinct) - 1
    return sorted({distinct[round(last * k / bins)] for k in range(bins + 1)})


#: Training rows from which a table gets :data:`LARGE_TABLE_BINS` piecewise-linear bins per numeric column, not 32
#: (``lightning_app.data_rules.TABLE_LARGE_ROWS``, where the table learning rate changes, is the same number).
LARGE_TABLE_ROWS = 10_000
SMALL_TABLE_BINS, LARGE_TABLE_BINS = 32, 128


def bins_for_rows(train_rows: int) -> int:
    """Piecewise-linear bins per numeric column for a training part of ``train_rows`` rows: 128 from 10,000 rows
    (adult's 27,700: validation loss 0.281 vs 0.287 with 32, accuracy 0.8675 vs 0.8655, seeds 42-46), else 32
    (chosen on german_credit and wine_quality; their validation parts cannot tell 32 from 128: german_credit's 120
    rows are too few, wine_quality's share exact duplicates with its training part)."""
    return LARGE_TABLE_BINS if train_rows >= LARGE_TABLE_ROWS else SMALL_TABLE_BINS


def fit_tabular_state(
    rows: Sequence[TabularRow],
    kinds: dict[str, str],
    target: str,
    id_columns: Sequence[str],
    class_names: list[str],
    numeric_bins: int = 0,
) -> dict[str, Any]:
    """The preprocessing state fitted on the training part's ``rows`` (typed against ``kinds``).

    ``numeric_bins > 0`` adds to each numeric column the edges of up to that many quantile bins of its training
    values (``bin_edges``, see :func:`quantile_edges`): the column is then also encoded piecewise-linearly.
    """
    if not rows:
        raise ValueError("cannot fit a tabular encoding on zero rows")
    columns: list[dict[str, Any]] = []
    for at, (name, kind) in enumerate(kinds.items()):
        present = [row.values[at] for row in rows if row.values[at] is not None]
        has_missing = len(present) < len(rows)
        if kind == "numeric":
            numbers = sorted(float(value) for value in present)  # type: ignore[arg-type]
            median = numbers[len(numbers) // 2] if numbers else 0.0
            filled = torch.tensor(
                [median if row.values[at] is None else row.values[at] for row in rows], dtype=torch.float64
            )
            std = float(filled.std(unbiased=False)) if len(rows) > 1 else 1.0
            columns.append(
                {
                    "name": name,
                    "kind": "numeric",
                    "median": median,
                    "mean": float(filled.mean()),
                    "std": max(std, 1e-6),
                    "missing_indicator": has_missing,
                    "bin_edges": quantile_edges(numbers, numeric_bins),
                }
            )
        else:
            counts = Counter(str(value) for value in present if value not in (MISSING_LEVEL, OTHER_LEVEL))
            # Most frequent first; ties in the order of the text, so the levels do not depend on the row order.
            frequent = [level for level in counts if counts[level] >= MIN_LEVEL_COUNT]
            kept = sorted(frequent, key=lambda level: (-counts[level], level))[:MAX_LEVELS]
            levels = sorted(kept) + ([MISSING_LEVEL] if has_missing else []) + [OTHER_LEVEL]
            columns.append({"name": name, "kind": "categorical", "levels": levels})
    return {
        "feature_set": "generic",
        "target_column": target,
        "id_columns": list(id_columns),
        "class_names": list(class_names),
        "numeric_bins": numeric_bins,
        "columns": columns,
    }


def feature_names(state: dict[str, Any]) -> list[str]:
    """Names of the encoded features, in order: ``<column>`` and ``<column>_missing``, or ``<column>=<level>``."""
    names = []
    for spec in state["columns"]:
        if spec["kind"] == "numeric":
            names += [spec["name"]] + ([f"{spec['name']}_missing"] if spec["missing_indicator"] else [])
        else:
            names += [f"{spec['name']}={level}" for level in spec["levels"]]
    for spec in state["columns"]:
        names += [f"{spec['name']}_bin{k}" for k in range(len(spec.get("bin_edges", [])[1:]))]
    return names


def piecewise_linear(numbers: torch.Tensor, edges: Sequence[float]) -> torch.Tensor:
    """``float32[N, len(edges) - 1]``: per bin ``[lo, hi]``, 1 when a number is at or above ``hi``, 0 below ``lo``,
    else ``(number - lo) / (hi - lo)`` (Gorishniy et al. 2022, "On Embeddings for Numerical Features in Tabular
    Deep Learning"; clipped to [0, 1], so values beyond the training range saturate)."""
    bounds = torch.tensor(edges, dtype=torch.float64)
    low, high = bounds[:-1], bounds[1:]
    fraction = (numbers.to(torch.float64).unsqueeze(-1) - low) / (high - low)
    return fraction.clamp(0.0, 1.0).to(torch.float32)


def filled_number(value: float | str | None, spec: dict[str, Any]) -> float:
    """A numeric column's value, or its training median where it is missing (``None``)."""
    return spec["median"] if value is None else float(value)


def encode_rows(rows: Sequence[TabularRow], state: dict[str, Any]) -> torch.Tensor:
    """``float32[N, len(feature_names(state))]``: numeric columns standardised (missing: the training median, plus
    the indicator), categorical ones one-hot (missing: ``<missing>`` if the training part had it, else ``<other>``;
    a level not kept: ``<other>``), then the piecewise-linear bins of the numeric columns that have ``bin_edges``
    (missing: the training median's)."""
    encoded = []
    binned: list[tuple[int, list[float]]] = []
    for at, spec in enumerate(state["columns"]):
        if spec.get("bin_edges"):
            binned.append((at, spec["bin_edges"]))
    for row in rows:
        features: list[float] = []
        for value, spec in zip(row.values, state["columns"], strict=True):
            if spec["kind"] == "numeric":
                features.append((filled_number(value, spec) - spec["mean"]) / spec["std"])
                if spec["missing_indicator"]:
                    features.append(float(value is None))
            else:
                levels = spec["levels"]
                level = MISSING_LEVEL if value is None else str(value)
                if level not in levels or (value is not None and level in (MISSING_LEVEL, OTHER_LEVEL)):
                    level = OTHER_LEVEL
                features += [1.0 if level == choice else 0.0 for choice in levels]
        encoded.append(features)
    width = len(feature_names(state))
    bins = sum(len(edges) - 1 for _, edges in binned)
    blocks = [torch.tensor(encoded, dtype=torch.float32).reshape(len(rows), width - bins)]
    for at, edges in binned:
        spec = state["columns"][at]
        numbers = torch.tensor([filled_number(row.values[at], spec) for row in rows], dtype=torch.float64)
        blocks.append(piecewise_linear(numbers, edges).reshape(len(rows), len(edges) - 1))
    return torch.cat(blocks, dim=1)


def tabular_labels(rows: Sequence[TabularRow]) -> torch.Tensor:
    return torch.tensor([row.label for row in rows], dtype=torch.long)
