"""COVID-19 daily forecast (time series, regression), or any daily count series.

The file holds a ``date`` column and one or more numeric count columns
(tab or comma separated), cumulative counts by default or already daily
counts (``counts="daily"``); the model sees the daily values. A sample is a
window of ``window`` consecutive days and the target is the next day. Splits
are in time order: the last ``test_days`` target days are the test period, the
``val_days`` before them the validation period, everything earlier is training.
"""

from __future__ import annotations

import datetime as dt
import itertools
import warnings
from pathlib import Path
from typing import Any, Literal

import torch

from datamodules.base import TaskDataModule, parse_float, read_csv_rows
from datamodules.batches import BatchIndexedTensors
from datamodules.errors import DataError

DATE_COLUMN = "date"
#: The count columns of the bundled file; a file of your own may have any others.
COUNT_COLUMNS = ["confirmed_num", "cured_num", "dead_num"]
#: Largest count accepted: far above any real count, far below float32's limit.
MAX_COUNT = 1e12
Counts = Literal["cumulative", "daily"]
#: Days listed by name in the warning about negative daily values.
LISTED_DAYS = 10


def _parse_count(path: Path, line: int, column: str, value: str, allow_negative: bool = False) -> float:
    count = parse_float(path, line, column, value)
    low = -MAX_COUNT if allow_negative else 0
    if not low <= count <= MAX_COUNT:
        what = "a value" if allow_negative else "a count"
        what = f"{what} between {low:g} and {MAX_COUNT:g}"
        raise DataError(path, f"column '{column}' must be {what}, got {value!r}", line=line)
    return count


def sniff_delimiter(path: Path) -> str:
    """Tab unless the header line has commas and no tab."""
    try:
        with path.open(encoding="utf-8-sig", errors="replace") as handle:
            header = handle.readline()
    except OSError:
        return "\t"
    return "," if "," in header and "\t" not in header else "\t"


def read_counts(path: str | Path, counts: Counts = "cumulative") -> tuple[list[str], list[str], torch.Tensor]:
    """Read a ``date`` column plus every other column as counts: ``(dates, columns, float32[days, columns])``.

    Tab- or comma-separated; one row per day (YYYY-MM-DD, consecutive: see :func:`check_consecutive_days`).
    Cumulative counts must be non-negative; daily counts may be negative (corrections).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    delimiter = sniff_delimiter(path)
    rows = read_csv_rows(path, [DATE_COLUMN], delimiter=delimiter)
    columns = [name for name in rows[0][1] if name != DATE_COLUMN]
    if not columns:
        raise DataError(path, f"no count columns besides '{DATE_COLUMN}'", line=1)
    dates, values = parse_count_rows(path, rows, columns, counts)
    return dates, columns, values


def parse_count_rows(
    path: Path, rows: list[tuple[int, dict[str, str]]], columns: list[str], counts: Counts = "cumulative"
) -> tuple[list[str], torch.Tensor]:
    """The ``date`` and ``columns`` of rows read from ``path`` (``(line, row)`` pairs, as
    :func:`datamodules.base.read_csv_rows` gives): ``(ISO dates, float32[days, columns])``, checked as
    :func:`read_counts` checks them (dates consecutive, counts in range)."""
    dates = [row[DATE_COLUMN].strip() for _, row in rows]
    days = [_parse_date(path, line, date) for (line, _), date in zip(rows, dates, strict=True)]
    values = [
        [_parse_count(path, line, column, row[column], allow_negative=counts == "daily") for column in columns]
        for line, row in rows
    ]
    check_consecutive_days(path, [line for line, _ in rows], days)
    return [day.isoformat() for day in days], torch.tensor(values, dtype=torch.float32)


def _parse_date(path: Path, line: int, value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        problem = f"column '{DATE_COLUMN}' must be a date as YYYY-MM-DD, got {value!r}"
        raise DataError(path, problem, line=line) from None


def check_consecutive_days(path: Path, lines: list[int], days: list[dt.date]) -> None:
    """A :class:`DataError` naming the file, line and dates at the first day that does not follow the one before
    by exactly one day: the model differences consecutive rows as days, so a gap, a repeat or a step back would
    silently shift every window after it."""
    for line, (before, day) in zip(lines[1:], itertools.pairwise(days), strict=True):
        step = (day - before).days
        if step == 1:
            continue
        if step == 0:
            problem = f"{day} appears twice"
        elif step < 0:
            problem = f"{before} is followed by {day} (dates must increase)"
        else:
            problem = f"{before} is followed by {day} ({step - 1} day{'s' if step > 2 else ''} missing)"
        raise DataError(path, f"dates must be consecutive days: {problem}", line=line)


def daily_differences(cumulative: torch.Tensor) -> torch.Tensor:
    """Day-over-day increments (one row fewer than ``cumulative``)."""
    return cumulative[1:] - cumulative[:-1]


def make_windows(series: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sliding windows ``float32[N, window, C]`` and next-day targets ``float32[N, C]``."""
    n = len(series) - window
    if n <= 0:
        raise ValueError(f"a series of {len(series)} days is too short for a {window}-day window")
    inputs = torch.stack([series[i : i + window] for i in range(n)])
    return inputs, series[window:]


def warn_negative_days(path: Path, dates: list[str], columns: list[str], daily: torch.Tensor) -> int:
    """Warn, naming the file and the days, when daily values are below zero; returns how many are."""
    negative = (daily < 0).nonzero().tolist()
    if negative:
        listed = ", ".join(f"{dates[day]} ({columns[column]})" for day, column in negative[:LISTED_DAYS])
        more = f" and {len(negative) - LISTED_DAYS} more" if len(negative) > LISTED_DAYS else ""
        warnings.warn(
            f"{path}: {len(negative)} daily value(s) below zero (corrections of a cumulative count): {listed}{more}; "
            "the model reads them as 0 (its log1p inputs are clamped at 0), the metrics score them as they are",
            UserWarning,
            stacklevel=2,
        )
    return len(negative)


class Covid19DataModule(TaskDataModule):
    """Daily count series forecast one day ahead: China's COVID-19 counts (2020-01-24 .. 2020-03-10) by default.

    A batch is ``(window, target)``: ``float32[B, window, C]`` daily values of the
    file's ``C`` count columns (the bundled file: confirmed, cured, dead) and
    ``float32[B, C]`` the next day's values.

    Args:
        data_dir: folder with ``covid-19.csv``: a ``date`` column (ISO dates, one row per day: a missing or
            repeated day is an error naming the dates) and one or
            more count columns, tab or comma separated (default: the bundled data).
        window: days of history per sample (the tutorial's 8).
        test_days: last target days held out for testing.
        val_days: target days before the test period used for validation.
        batch_size: windows per batch (the tutorial's 38 takes all training windows at once).
        counts: ``"cumulative"`` (running totals, differenced into daily values: a total that falls
            gives a negative day, counted in a warning) or ``"daily"`` (the file already holds daily values).
    """

    packaged_subdir = "covid19"
    file_name = "covid-19.csv"

    def __init__(
        self,
        data_dir: str | Path | None = None,
        window: int = 8,
        test_days: int = 7,
        val_days: int = 7,
        batch_size: int = 38,
        num_workers: int = 0,
        counts: Counts = "cumulative",
    ) -> None:
        if counts not in ("cumulative", "daily"):
            raise ValueError(f"counts must be 'cumulative' or 'daily', got {counts!r}")
        super().__init__(data_dir)
        self.save_hyperparameters(ignore=["data_dir"], logger=False)
        self.dates: list[str] = []
        self.columns: list[str] = []
        self.cumulative: torch.Tensor | None = None
        #: Daily values ``float32[T, C]`` and their dates (without the first date of a cumulative file).
        self.daily: torch.Tensor | None = None
        self.daily_dates: list[str] = []
        self.negative_days = 0

    def prepare_data(self) -> None:
        self.require_file(self.file_name)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        path = self.require_file(self.file_name)
        counts = self.hparams.counts
        dates, columns, values = read_counts(path, counts)
        window, test_days, val_days = self.hparams.window, self.hparams.test_days, self.hparams.val_days
        lost = 1 if counts == "cumulative" else 0  # differencing costs the first day
        n_windows = max(len(dates) - lost - window, 0)  # what make_windows gives
        n_train = n_windows - test_days - val_days
        if n_train < 1:
            needed = window + 1 + val_days + test_days + lost
            raise DataError(
                path,
                f"{len(dates)} days give {n_windows} windows of {window} days: too few for "
                f"{val_days} validation and {test_days} test days (needs at least {needed} days: "
                f"{window}-day window + 1 training day + {val_days} validation + {test_days} test"
                + (" + 1 for differencing cumulative counts)" if lost else ")"),
            )
        daily = daily_differences(values) if counts == "cumulative" else values
        daily_dates = dates[lost:]
        self.negative_days = warn_negative_days(path, daily_dates, columns, daily)
        inputs, targets = make_windows(daily, window)
        self.dates, self.columns, self.daily, self.daily_dates = dates, columns, daily, daily_dates
        self.cumulative = values if counts == "cumulative" else None
        n_val_end = n_train + val_days
        self.train_set = BatchIndexedTensors(inputs[:n_train], targets[:n_train])
        self.val_set = BatchIndexedTensors(inputs[n_train:n_val_end], targets[n_train:n_val_end])
        self.test_set = BatchIndexedTensors(inputs[n_val_end:], targets[n_val_end:])

    def rollout_period(self, days: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
        """``(history float32[window, C], actual float32[D, C])``: the days before the test period and its first
        ``D = min(days, test_days)`` days, to score a multi-day forecast that feeds itself back (the
        ``lightning_app.models.covid.RolloutSource`` protocol ``Covid19Module`` reads when tested with this)."""
        if self.test_set is None:
            raise RuntimeError("call setup() before rollout_period()")
        windows, targets = self.test_set.tensors
        return windows[0], targets[: min(days, len(targets))]

    def model_kwargs(self) -> dict[str, Any]:
        if not self.columns:
            raise RuntimeError("call setup() before model_kwargs()")
        return {"num_series": len(self.columns)}

    def preprocessing_state(self) -> dict[str, Any]:
        """The whole series (tens of days: small), so a reloaded model can forecast from its end and plot it."""
        if self.daily is None:
            raise RuntimeError("call setup() before preprocessing_state()")
        state: dict[str, Any] = {
            "window": self.hparams.window,
            "columns": list(self.columns),
            "counts": self.hparams.counts,
            "dates": list(self.dates),
        }
        if self.cumulative is not None:
            state["cumulative"] = self.cumulative.tolist()
        else:
            state["daily"] = self.daily.tolist()
        return state


def daily_from_state(state: dict[str, Any]) -> tuple[list[str], torch.Tensor]:
    """The daily values ``float32[T, C]`` and their dates from a ``preprocessing_state()`` (also an older one)."""
    if "daily" in state:
        return list(state["dates"]), torch.tensor(state["daily"], dtype=torch.float32)
    if "cumulative" in state:
        return list(state["dates"][1:]), daily_differences(torch.tensor(state["cumulative"], dtype=torch.float32))
    raise ValueError("no series stored in this preprocessing state")
