"""COVID-19 daily forecast (time series, regression).

The CSV holds cumulative counts per day; the model sees the daily differences.
A sample is a window of ``window`` consecutive days of differences and the
target is the next day's differences. Splits are in time order: the last
``test_days`` target days are the test period, the ``val_days`` before them
the validation period, everything earlier is training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from datamodules.base import BatchIndexedTensors, TaskDataModule, parse_float, read_csv_rows
from datamodules.errors import DataError

DATE_COLUMN = "date"
COUNT_COLUMNS = ["confirmed_num", "cured_num", "dead_num"]
#: Largest cumulative count accepted: far above any real count, far below float32's limit.
MAX_COUNT = 1e12


def _parse_count(path: Path, line: int, column: str, value: str) -> float:
    count = parse_float(path, line, column, value)
    if not 0 <= count <= MAX_COUNT:
        raise DataError(
            path, f"column '{column}' must be a count between 0 and {MAX_COUNT:g}, got {value!r}", line=line
        )
    return count


def read_cumulative_counts(path: str | Path) -> tuple[list[str], torch.Tensor]:
    """Read the tab-separated file into dates and ``float32[days, 3]`` cumulative counts."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    rows = read_csv_rows(path, [DATE_COLUMN, *COUNT_COLUMNS], delimiter="\t")
    dates = [row[DATE_COLUMN].strip() for _, row in rows]
    values = [[_parse_count(path, line, column, row[column]) for column in COUNT_COLUMNS] for line, row in rows]
    if sorted(dates) != dates or len(set(dates)) != len(dates):
        raise DataError(path, "dates must be unique and in increasing order")
    return dates, torch.tensor(values, dtype=torch.float32)


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


class Covid19DataModule(TaskDataModule):
    """China's COVID-19 counts (2020-01-24 .. 2020-03-10), forecast one day ahead.

    A batch is ``(window, target)``: ``float32[B, window, 3]`` daily increments of
    (confirmed, cured, dead) and ``float32[B, 3]`` the next day's increments.

    Args:
        data_dir: folder with ``covid-19.csv`` (tab separated; default: bundled data).
        window: days of history per sample (the tutorial's 8).
        test_days: last target days held out for testing.
        val_days: target days before the test period used for validation.
        batch_size: windows per batch (the tutorial's 38 takes all training windows at once).
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
        seed: int = 42,
    ) -> None:
        super().__init__(data_dir)
        self.save_hyperparameters(ignore=["data_dir"], logger=False)
        self.dates: list[str] = []
        self.cumulative: torch.Tensor | None = None

    def prepare_data(self) -> None:
        self.require_file(self.file_name)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        path = self.require_file(self.file_name)
        dates, cumulative = read_cumulative_counts(path)
        window, test_days, val_days = self.hparams.window, self.hparams.test_days, self.hparams.val_days
        n_windows = max(len(dates) - 1 - window, 0)  # what make_windows gives for len(dates) - 1 increments
        n_train = n_windows - test_days - val_days
        if n_train < 1:
            raise DataError(
                path,
                f"{len(dates)} days give {n_windows} windows of {window} days: too few for "
                f"{val_days} validation and {test_days} test days",
            )
        inputs, targets = make_windows(daily_differences(cumulative), window)
        self.dates, self.cumulative = dates, cumulative
        n_val_end = n_train + val_days
        self.train_set = BatchIndexedTensors(inputs[:n_train], targets[:n_train])
        self.val_set = BatchIndexedTensors(inputs[n_train:n_val_end], targets[n_train:n_val_end])
        self.test_set = BatchIndexedTensors(inputs[n_val_end:], targets[n_val_end:])

    def model_kwargs(self) -> dict[str, Any]:
        return {"num_series": len(COUNT_COLUMNS)}

    def preprocessing_state(self) -> dict[str, Any]:
        """The whole series (47 days: small), so a reloaded model can forecast from its end and plot it."""
        if self.cumulative is None:
            raise RuntimeError("call setup() before preprocessing_state()")
        return {
            "window": self.hparams.window,
            "columns": list(COUNT_COLUMNS),
            "dates": list(self.dates),
            "cumulative": self.cumulative.tolist(),
        }
