"""Panels of daily count series: several ``covid-19.csv``-style series read together.

:func:`read_panel` reads one of these layouts into a list of :class:`Series`, sorted by name:

(a) one file in today's layout (a ``date`` column and count columns): one series, named after its parent folder
    when the file is ``covid-19.csv``, else after its stem;
(b) a folder holding ``covid-19.csv`` (today's ``--data-dir``): that one series, named after the folder (any
    other file there is not read, as today);
(c) a folder of ``<name>/covid-19.csv`` sub-folders and/or ``<name>.csv`` files: one series each;
(d) one long file with a series column (``series`` by default) beside ``date`` and the counts: one series per
    value of that column; a series' rows keep their file order and must be consecutive days.

Every file is read as :func:`datamodules.count_series.read_counts` reads it (tab or comma separated, a byte-order mark
ignored, ``counts`` cumulative or daily). All series must have the same count columns in the same order; a
problem stops with a one-line :class:`~datamodules.errors.DataError` naming the file (and the series and dates
where they matter).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from datamodules.base import csv_header, read_csv_rows
from datamodules.count_series import (
    DATE_COLUMN,
    Counts,
    daily_differences,
    parse_count_rows,
    read_counts,
    sniff_delimiter,
)
from datamodules.errors import DataError

#: The file a series folder holds (as ``--data-dir`` does today).
SERIES_FILE = "covid-19.csv"


@dataclass
class Series:
    """One daily count series of a panel.

    Attributes:
        name: the series' name (folder, file stem or value of the series column).
        path: the file it was read from (a long file's path for each of its series).
        dates: ISO dates ``YYYY-MM-DD``, consecutive days, one per row of ``values``.
        columns: the count columns, in file order.
        values: ``float32[days, columns]``, the counts as :func:`~datamodules.count_series.read_counts` returns them
            (cumulative totals, or daily values for ``counts="daily"``).
    """

    name: str
    path: Path
    dates: list[str]
    columns: list[str]
    values: torch.Tensor

    def daily(self, counts: Counts) -> tuple[list[str], torch.Tensor]:
        """The daily values ``float32[T, C]`` and their dates: ``values`` themselves for ``counts="daily"``, their
        day-over-day differences (without the first date) for cumulative totals."""
        if counts == "cumulative":
            return self.dates[1:], daily_differences(self.values)
        return self.dates, self.values


def read_panel(
    source: str | Path, counts: Counts = "cumulative", min_days: int = 1, series_column: str = "series"
) -> list[Series]:
    """Read every series under ``source`` (a file or folder in one of the layouts of this module's docstring).

    Returns:
        the series sorted by name, each ``values`` ``float32[days_i, C]`` with the same ``C`` columns in the same
        order (``days_i`` may differ between series, and the dates need not overlap).

    Raises:
        DataError: a missing source, an empty folder, a file :func:`~datamodules.count_series.read_counts` rejects, a
            series with gaps or repeated dates, columns that differ from the first series', a series of fewer
            than ``min_days`` days, or two series with the same name.
        ValueError: ``counts`` is not ``"cumulative"`` or ``"daily"``, or ``min_days`` is below 1.
    """
    if counts not in ("cumulative", "daily"):
        raise ValueError(f"counts must be 'cumulative' or 'daily', got {counts!r}")
    if min_days < 1:
        raise ValueError(f"min_days must be at least 1, got {min_days}")
    source = Path(source)
    long_file = False
    if source.is_file():
        long_file = series_column in _header(source)
        if long_file:
            series = _read_long_file(source, counts, series_column)
        else:
            series = [_read_series_file(source, _file_series_name(source), counts, series_column)]
    elif source.is_dir():
        series = [_read_series_file(path, name, counts, series_column) for name, path in _series_files(source)]
    else:
        raise DataError(source, "file or folder not found")
    series.sort(key=lambda one: one.name)
    _check_panel(series, min_days, long_file)
    return series


def _header(path: Path) -> list[str]:
    return csv_header(path, [], delimiter=sniff_delimiter(path))


def _file_series_name(path: Path) -> str:
    """A file's series name: its folder's for ``covid-19.csv``, else its stem."""
    return path.resolve().parent.name if path.name == SERIES_FILE else path.stem


def _series_files(folder: Path) -> list[tuple[str, Path]]:
    """``(name, path)`` of each series file in ``folder`` (layouts (b) and (c)), sorted by name; names that two
    files would share are an error."""
    if (folder / SERIES_FILE).is_file():
        return [(folder.resolve().name, folder / SERIES_FILE)]
    found: dict[str, Path] = {}
    candidates = [(sub.name, sub / SERIES_FILE) for sub in folder.iterdir() if sub.is_dir()]
    candidates += [(file.stem, file) for file in folder.glob("*.csv")]
    for name, path in sorted(candidates, key=lambda candidate: (candidate[0], str(candidate[1]))):
        if name.startswith(".") or not path.is_file():
            continue
        if name in found:
            raise DataError(path, f"series name '{name}' is also {found[name]}: rename one of them")
        found[name] = path
    if not found:
        raise DataError(
            folder,
            f"no {SERIES_FILE} or *.csv under {folder} (expected {SERIES_FILE}, "
            f"<name>/{SERIES_FILE} or <name>.csv files)",
        )
    return list(found.items())


def _read_series_file(path: Path, name: str, counts: Counts, series_column: str) -> Series:
    if series_column in _header(path):
        raise DataError(path, f"has a '{series_column}' column: pass a long file of several series on its own")
    dates, columns, values = read_counts(path, counts)
    return Series(name, path, dates, columns, values)


def _read_long_file(path: Path, counts: Counts, series_column: str) -> list[Series]:
    """Layout (d): one :class:`Series` per value of ``series_column``, in order of first appearance."""
    rows = read_csv_rows(path, [DATE_COLUMN, series_column], delimiter=sniff_delimiter(path))
    columns = [name for name in rows[0][1] if name not in (DATE_COLUMN, series_column)]
    if not columns:
        raise DataError(path, f"no count columns besides '{DATE_COLUMN}' and '{series_column}'", line=1)
    groups: dict[str, list[tuple[int, dict[str, str]]]] = {}
    for line, row in rows:
        name = row[series_column].strip()
        if not name:
            raise DataError(path, f"column '{series_column}' is empty", line=line)
        groups.setdefault(name, []).append((line, row))
    series = []
    for name, group in groups.items():
        try:
            dates, values = parse_count_rows(path, group, columns, counts)
        except DataError as err:
            raise DataError(path, f"series '{name}': {err.problem}", line=err.line) from None
        series.append(Series(name, path, dates, columns, values))
    return series


def _check_panel(series: list[Series], min_days: int, long_file: bool) -> None:
    """Same columns everywhere (as the first series has them) and at least ``min_days`` days per series."""
    first = series[0]
    for one in series:
        if one.columns != first.columns:
            raise DataError(one.path, f"columns {one.columns} differ from {first.columns} in {first.path}")
        if len(one.dates) < min_days:
            label = f"series '{one.name}' has" if long_file else "has"
            problem = f"{label} {len(one.dates)} day(s) ({one.dates[0]} .. {one.dates[-1]}), fewer than the minimum"
            raise DataError(one.path, f"{problem} min_days={min_days}")
