"""Daily count series files (a ``date`` column plus count columns) and the forecast hubs' baseline forecast.

Reading: :func:`read_counts` (one file), :func:`parse_count_rows` (rows already read), the checks they share
(ISO dates, consecutive days, counts in range). The baseline: :func:`hub_baseline_quantiles`, the reference that
forecasts of such series are scored against (:mod:`lightning_app.forecast_scores` scores them).
"""

from __future__ import annotations

import datetime as dt
import itertools
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch

from datamodules.base import parse_float, read_csv_rows
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


#: The 23 quantile levels the US COVID-19 Forecast Hub asks for: 0.01, 0.025, 0.05, 0.10, ..., 0.95, 0.975, 0.99.
QUANTILE_LEVELS: tuple[float, ...] = (0.01, 0.025, *(round(0.05 * k, 2) for k in range(1, 20)), 0.975, 0.99)


#: Two levels closer than this are the same level (``(1 - 0.8) / 2`` is 0.09999999999999998, not 0.1).
LEVEL_TOLERANCE = 1e-6


def find_level(level: float, levels: Sequence[float] | torch.Tensor = QUANTILE_LEVELS) -> int | None:
    """Index of ``level`` among ``levels`` (within :data:`LEVEL_TOLERANCE`), or ``None``."""
    values = levels.tolist() if isinstance(levels, torch.Tensor) else levels
    return next((at for at, value in enumerate(values) if abs(value - level) < LEVEL_TOLERANCE), None)


def level_index(level: float, levels: Sequence[float] | torch.Tensor = QUANTILE_LEVELS) -> int:
    """Index of ``level`` among ``levels`` (default :data:`QUANTILE_LEVELS`); ValueError when it is not there."""
    found = find_level(level, levels)
    if found is None:
        values = levels.tolist() if isinstance(levels, torch.Tensor) else list(levels)
        raise ValueError(f"quantile level {level:g} is not among {values}")
    return found


def monotone_quantiles(quantiles: torch.Tensor) -> torch.Tensor:
    """Non-crossing quantiles: ``quantiles`` (``float[..., L]``, levels increasing) sorted along the last dimension.

    Sorting is the rearrangement of Chernozhukov, Fernandez-Val and Galichon (2010): it never increases the
    pinball loss or the WIS and leaves already monotone quantiles unchanged. Returns ``float[..., L]``.
    """
    return torch.sort(quantiles, dim=-1).values


def interpolation_points(
    sample_size: int, levels: Sequence[float] | torch.Tensor, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where each of ``levels`` falls among ``sample_size`` sorted values, as ``torch.quantile``'s linear
    interpolation between order statistics: ``(lower index int64[L], upper index int64[L], weight of the upper
    float64[L])``. Fixed for a fixed sample size, so a network can keep them as buffers and export plain gathers."""
    positions = torch.as_tensor(levels, dtype=torch.float64, device=device).flatten() * (sample_size - 1)
    low = positions.floor().long().clamp(0, sample_size - 1)
    return low, (low + 1).clamp_max(sample_size - 1), positions - low


def symmetric_change_quantiles(
    series: torch.Tensor, points: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """Quantiles of the one-day changes of ``series`` (``float[..., T]``, oldest first) and their negatives, at the
    :func:`interpolation_points` ``points`` of ``2 (T - 1)`` values: ``float[..., L]``, the spread of the hubs'
    baseline. Slices, a sort and gathers only (no ``torch.quantile``), so it exports to TorchScript and ONNX."""
    changes = series[..., 1:] - series[..., :-1]
    ordered = torch.cat([changes, -changes], dim=-1).sort(dim=-1).values
    low, high, weight = points
    weight = weight.to(ordered.dtype)
    return ordered[..., low] * (1 - weight) + ordered[..., high] * weight


def hub_baseline_quantiles(
    history: torch.Tensor,
    horizons: Sequence[int] | torch.Tensor,
    levels: Sequence[float] | torch.Tensor = QUANTILE_LEVELS,
) -> torch.Tensor:
    """The forecast hubs' baseline: last value held flat, spread from symmetrised past one-day changes.

    ``history`` is ``float[T]`` (one series) or ``float[T, S]`` (S series side by side), non-negative daily values,
    oldest first, ``T >= 2``. For each series:

    1. the one-day changes ``d_t = x_t - x_{t-1}`` (``T - 1`` of them) and their negatives form a symmetric sample
       of ``2 (T - 1)`` values;
    2. ``Q(tau)`` is that sample's empirical quantile at each level (``torch.quantile``'s linear interpolation
       between order statistics, :func:`symmetric_change_quantiles`, so ``Q(0.5) = 0`` and ``Q(1 - tau) = -Q(tau)``);
    3. the forecast at horizon ``h`` (days after the last value) is ``x_T + sqrt(h) * Q(tau)``: the median is
       the last value, the spread grows with the square root of the horizon as a random walk's would;
    4. clamped at 0 (counts are never negative) and sorted along the levels (:func:`monotone_quantiles`; the
       steps above already keep them ordered, this is a guard).

    ``horizons`` are positive integers ``[H]``. Returns ``float[H, L]`` for ``float[T]`` history, ``float[H, S, L]``
    for ``float[T, S]``, in the history's floating dtype (float32 for integer input).
    """
    history = torch.as_tensor(history)
    if not history.is_floating_point():
        history = history.to(torch.get_default_dtype())
    if history.dim() not in (1, 2):
        raise ValueError(f"history must be float[T] or float[T, S], got shape {tuple(history.shape)}")
    if history.shape[0] < 2:
        raise ValueError(f"the baseline needs at least 2 past values for one change, got {history.shape[0]}")
    steps = torch.as_tensor(horizons, dtype=history.dtype, device=history.device).flatten()
    if steps.numel() == 0 or not bool((steps >= 1).all()):
        raise ValueError(f"horizons must be positive, got {steps.tolist()}")
    series = history if history.dim() == 2 else history.unsqueeze(1)  # [T, S]
    points = interpolation_points(2 * (series.shape[0] - 1), levels, device=history.device)
    spread = symmetric_change_quantiles(series.T, points)  # [S, L]
    widen = steps.sqrt().view(-1, 1, 1)  # [H, 1, 1]
    forecast = series[-1].view(1, -1, 1) + widen * spread.unsqueeze(0)  # [H, S, L]
    forecast = monotone_quantiles(torch.clamp_min(forecast, 0.0))
    return forecast if history.dim() == 2 else forecast.squeeze(1)
