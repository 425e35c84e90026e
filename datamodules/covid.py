"""COVID-19 daily forecast (time series, regression), or any daily count series.

The file holds a ``date`` column and one or more numeric count columns
(tab or comma separated), cumulative counts by default or already daily
counts (``counts="daily"``); the model sees the daily values. A sample is a
window of ``window`` consecutive days and the target is the next day. Splits
are in time order: the last ``test_days`` target days are the test period, the
``val_days`` before them the validation period, everything earlier is training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from datamodules.base import PACKAGED_DATA_DIR, TaskDataModule
from datamodules.batches import BatchIndexedTensors
from datamodules.count_series import (
    QUANTILE_LEVELS,
    Counts,
    daily_differences,
    hub_baseline_quantiles,
    warn_negative_days,
)
from datamodules.errors import DataError
from datamodules.panels import Series, read_panel

#: The bundled panel of 34 national 2020 series (Johns Hopkins CSSE, CC BY 4.0): one long file, a ``series`` column.
BUNDLED_PANEL = PACKAGED_DATA_DIR / "covid19-countries" / "countries.csv"


class Covid19DataModule(TaskDataModule):
    """Daily count series forecast 1..``horizon`` days ahead: China's COVID-19 counts (2020-01-24 .. 2020-03-10) by
    default, or a panel of series (``--data-dir``: one file, a folder of series, or a long file; see
    :mod:`datamodules.panels`).

    A batch is ``(window, target, series, baseline)``: ``float32[B, window, C]`` daily values of the ``C`` count
    columns (the bundled file: confirmed, cured, dead) up to a forecast origin, ``float32[B, horizon, C]`` the
    next ``horizon`` days (NaN where a day lies past the end of the sample's split), ``int64[B]`` the series a
    window comes from (index into :attr:`series_names`) and ``float32[B, horizon, C, L]`` the forecast hubs'
    baseline quantiles at :data:`~lightning_app.forecast_scores.QUANTILE_LEVELS` (last value held flat, spread from
    the series' own symmetrised past one-day changes up to the origin, widened by sqrt(h)).

    Every series is split by time on the first forecast day of a sample: the last ``test_days`` days are test, the
    ``val_days`` before them validation, everything earlier training; a target day past the end of its sample's
    split is NaN, so no split sees a later one. ``extra_series`` adds series for training and validation only
    (their test weeks stay unused): ``"countries"`` is the bundled panel of 34 national 2020 series (Johns
    Hopkins CSSE, CC BY 4.0), or give a file or folder of your own.

    Args:
        data_dir: ``covid-19.csv`` (a ``date`` column, ISO dates, one row per day, and one or more count
            columns, tab or comma separated), a folder of ``<name>/covid-19.csv`` and/or ``<name>.csv`` series, or a
            long file with a ``series_column`` (default: the bundled China file).
        window: days of history per sample (the tutorial had 8).
        horizon: days forecast from each origin (targets per sample).
        test_days: last days of each series held out for testing (0: no test set, e.g. for backtests).
        val_days: days before the test period used for validation.
        batch_size: windows per batch (the tutorial's 38 took all of China's 8-day training windows at once).
        counts: ``"cumulative"`` (running totals, differenced into daily values: a total that falls
            gives a negative day, counted in a warning) or ``"daily"`` (the files already hold daily values).
        extra_series: series used for training and validation only: ``"countries"`` (the bundled panel), a path,
            ``None``, or ``"auto"``: the bundled panel beside the bundled China file, none beside your own data.
        series_column: the series column of a long file.
    """

    packaged_subdir = "covid19"
    file_name = "covid-19.csv"

    def __init__(
        self,
        data_dir: str | Path | None = None,
        window: int = 14,
        horizon: int = 7,
        test_days: int = 7,
        val_days: int = 7,
        batch_size: int = 64,
        num_workers: int = 0,
        counts: Counts = "cumulative",
        extra_series: str | None = "auto",
        series_column: str = "series",
    ) -> None:
        if counts not in ("cumulative", "daily"):
            raise ValueError(f"counts must be 'cumulative' or 'daily', got {counts!r}")
        for name, value, low in (("window", window, 1), ("horizon", horizon, 1), ("test_days", test_days, 0)):
            if value < low:
                raise ValueError(f"{name} must be at least {low}, got {value}")
        if val_days < 0:
            raise ValueError(f"val_days must be at least 0, got {val_days}")
        super().__init__(data_dir)
        self.save_hyperparameters(ignore=["data_dir"], logger=False)
        #: Series given in memory instead of read from ``data_dir`` (see :meth:`from_series`).
        self.given_series: tuple[list[Series], list[Series]] | None = None
        self.series: list[Series] = []
        self.extra: list[Series] = []
        self.columns: list[str] = []
        #: Daily values ``float32[T, C]`` and their dates of each series (without the first date of a cumulative
        #: file), in :attr:`series_names` order: the scored series first, then the extra ones.
        self.daily: list[torch.Tensor] = []
        self.daily_dates: list[list[str]] = []
        self.negative_days = 0

    @classmethod
    def from_series(cls, series: list[Series], extra: list[Series] | None = None, **kwargs: Any) -> Covid19DataModule:
        """A DataModule over series already in memory (e.g. a backtest's truncated or held-out panel): ``series``
        are split into train/val/test, ``extra`` into train/val only; ``kwargs`` as for the constructor."""
        datamodule = cls(**kwargs)
        datamodule.given_series = (list(series), list(extra or []))
        return datamodule

    @property
    def series_names(self) -> list[str]:
        return [one.name for one in (*self.series, *self.extra)]

    @property
    def dates(self) -> list[str]:
        """The first scored series' dates (as in the file)."""
        return self.series[0].dates if self.series else []

    @property
    def cumulative(self) -> torch.Tensor | None:
        """The first scored series' cumulative counts, ``None`` for daily counts."""
        if not self.series or self.hparams.counts != "cumulative":
            return None
        return self.series[0].values

    def prepare_data(self) -> None:
        if self.given_series is None:
            self._source()

    def _source(self) -> Path:
        """The file or folder the series come from: ``data_dir/covid-19.csv`` when it exists, else ``data_dir``
        itself (a series file, a folder of series, or a long file)."""
        if (self.data_dir / self.file_name).is_file():
            return self.data_dir / self.file_name
        if (
            self.data_dir.is_file()
            or any(self.data_dir.glob("*.csv"))
            or any(self.data_dir.glob(f"*/{self.file_name}"))
        ):
            return self.data_dir
        return self.require_file(self.file_name)  # the error naming what was expected

    def load_series(self) -> tuple[list[Series], list[Series]]:
        """``(scored series, extra series)`` as :func:`~datamodules.panels.read_panel` reads them."""
        if self.given_series is not None:
            return self.given_series
        counts, column = self.hparams.counts, self.hparams.series_column
        series = read_panel(self._source(), counts, series_column=column)
        extra_source = self.hparams.extra_series
        if extra_source == "auto":
            extra_source = "countries" if self.data_dir == PACKAGED_DATA_DIR / self.packaged_subdir else None
        if extra_source is None:
            return series, []
        path = BUNDLED_PANEL if extra_source == "countries" else Path(extra_source)
        extra = read_panel(path, counts, series_column=column)
        names = {one.name for one in series}
        extra = [one for one in extra if one.name not in names]
        if extra and extra[0].columns != series[0].columns:
            raise DataError(extra[0].path, f"columns {extra[0].columns} differ from {series[0].columns}")
        return series, extra

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        series, extra = self.load_series()
        window, horizon = self.hparams.window, self.hparams.horizon
        test_days, val_days = self.hparams.test_days, self.hparams.val_days
        lost = 1 if self.hparams.counts == "cumulative" else 0  # differencing costs the first day
        needed = window + 1 + val_days + test_days + lost
        for one in series:
            if len(one.dates) < needed:
                n_windows = max(len(one.dates) - lost - window, 0)
                raise DataError(
                    one.path,
                    f"{'series ' + repr(one.name) + ': ' if len(series) > 1 else ''}"
                    f"{len(one.dates)} days give {n_windows} windows of {window} days: too few for "
                    f"{val_days} validation and {test_days} test days (needs at least {needed} days: "
                    f"{window}-day window + 1 training day + {val_days} validation + {test_days} test"
                    + (" + 1 for differencing cumulative counts)" if lost else ")"),
                )
        extra = [one for one in extra if len(one.dates) >= needed - test_days]
        splits: dict[str, list[tuple[torch.Tensor, ...]]] = {"train": [], "val": [], "test": []}
        self.daily, self.daily_dates = [], []
        for index, one in enumerate([*series, *extra]):
            dates, daily = one.daily(self.hparams.counts)
            self.daily.append(daily)
            self.daily_dates.append(dates)
            samples = forecast_samples(daily, window, horizon, index, self.split_starts(len(daily)))
            for name, tensors in samples.items():
                if name != "test" or index < len(series):
                    splits[name].append(tensors)
        self.series, self.extra, self.columns = series, extra, list(series[0].columns)
        self.negative_days = self._warn_negative_days()
        empty = _no_samples(window, horizon, len(self.columns))
        self.train_set, self.val_set, self.test_set = (
            BatchIndexedTensors(*(torch.cat(parts) for parts in zip(empty, *splits[name], strict=True)))
            for name in ("train", "val", "test")
        )

    def _warn_negative_days(self) -> int:
        """One warning per file naming the days (and series, for a file of several) whose daily value is negative."""
        by_file: dict[Path, list[int]] = {}
        everything = [*self.series, *self.extra]
        for index, one in enumerate(everything):
            by_file.setdefault(one.path, []).append(index)
        total = 0
        for path, indices in by_file.items():
            several = len(indices) > 1
            labels = [f"{everything[i].name} {day}" if several else day for i in indices for day in self.daily_dates[i]]
            daily = torch.cat([self.daily[i] for i in indices])
            total += warn_negative_days(path, labels, self.columns, daily)
        return total

    def split_starts(self, days: int) -> tuple[int, int]:
        """First day index of the validation and of the test period in a series of ``days`` daily values."""
        test_start = days - self.hparams.test_days
        return test_start - self.hparams.val_days, test_start

    def rollout_period(self, days: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
        """``(history float32[T, C], actual float32[D, C])``: the first scored series' days before its test period
        and the first ``D = min(days, test_days)`` days of it, to score a multi-day forecast (the
        ``lightning_app.models.covid.RolloutSource`` protocol ``Covid19Module`` reads when tested with this)."""
        if not self.daily:
            raise RuntimeError("call setup() before rollout_period()")
        daily = self.daily[0]
        test_start = self.split_starts(len(daily))[1]
        return daily[:test_start], daily[test_start : test_start + min(days, self.hparams.test_days)]

    def model_kwargs(self) -> dict[str, Any]:
        if not self.columns:
            raise RuntimeError("call setup() before model_kwargs()")
        return {"num_series": len(self.columns), "horizon": self.hparams.horizon, "window": self.hparams.window}

    def preprocessing_state(self) -> dict[str, Any]:
        """The scored series (tens of days each: small), so a reloaded model can forecast from their ends and plot
        them; the first one's as ``dates`` plus ``cumulative`` or ``daily`` (the layout of a one-series state)."""
        if not self.daily:
            raise RuntimeError("call setup() before preprocessing_state()")
        state: dict[str, Any] = {
            "window": self.hparams.window,
            "horizon": self.hparams.horizon,
            "columns": list(self.columns),
            "counts": self.hparams.counts,
            "series_names": [one.name for one in self.series],
        }
        stored = [_stored_series(one, self.hparams.counts) for one in self.series]
        state.update(stored[0])
        if len(stored) > 1:
            state["panel"] = stored
        return state


def _stored_series(series: Series, counts: Counts) -> dict[str, Any]:
    key = "cumulative" if counts == "cumulative" else "daily"
    return {"name": series.name, "dates": list(series.dates), key: series.values.tolist()}


def _no_samples(window: int, horizon: int, columns: int) -> tuple[torch.Tensor, ...]:
    """The tensors of a split without samples (``test_days=0``), shaped as :func:`forecast_samples` gives them."""
    levels = len(QUANTILE_LEVELS)
    return (
        torch.zeros(0, window, columns),
        torch.zeros(0, horizon, columns),
        torch.zeros(0, dtype=torch.int64),
        torch.zeros(0, horizon, columns, levels),
    )


def forecast_samples(
    daily: torch.Tensor, window: int, horizon: int, series_index: int, split_starts: tuple[int, int]
) -> dict[str, tuple[torch.Tensor, ...]]:
    """The samples of one series by split, as :class:`Covid19DataModule` batches them: for every origin ``t``
    (the last day of a ``window``-day window, ``window - 1 <= t <= T - 2``) the window, the next ``horizon`` days
    (NaN past the end of the split the first of them falls in), the series index and the hub baseline's quantiles.
    ``split_starts`` are the first days of the validation and test periods."""
    days = len(daily)
    val_start, test_start = split_starts
    origins = torch.arange(window - 1, days - 1)
    first = origins + 1
    split_of = torch.where(first >= test_start, 2, torch.where(first >= val_start, 1, 0))
    ends = torch.tensor([val_start, test_start, days])[split_of]
    offsets = first.unsqueeze(1) + torch.arange(horizon)  # [N, H]
    padded = torch.cat([daily, torch.full((horizon, daily.shape[1]), float("nan"))])
    targets = padded[offsets]
    targets[offsets >= ends.unsqueeze(1)] = float("nan")
    windows = torch.stack([daily[t - window + 1 : t + 1] for t in origins.tolist()])
    steps = list(range(1, horizon + 1))
    # One day of history has no change to spread: the baseline is then that day held flat, without an interval.
    histories = [daily[: t + 1] for t in origins.tolist()]
    histories = [history.repeat(2, 1) if len(history) < 2 else history for history in histories]
    baseline = torch.stack([hub_baseline_quantiles(history.clamp_min(0), steps) for history in histories])
    index = torch.full((len(origins),), series_index, dtype=torch.int64)
    result = {}
    for code, name in enumerate(("train", "val", "test")):
        keep = split_of == code
        if bool(keep.any()):
            result[name] = (windows[keep], targets[keep], index[keep], baseline[keep])
    return result


def daily_from_state(state: dict[str, Any]) -> tuple[list[str], torch.Tensor]:
    """The daily values ``float32[T, C]`` and their dates from a ``preprocessing_state()`` (also an older one)."""
    if "daily" in state:
        return list(state["dates"]), torch.tensor(state["daily"], dtype=torch.float32)
    if "cumulative" in state:
        return list(state["dates"][1:]), daily_differences(torch.tensor(state["cumulative"], dtype=torch.float32))
    raise ValueError("no series stored in this preprocessing state")
