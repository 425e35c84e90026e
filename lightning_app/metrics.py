"""Metrics torchmetrics does not ship."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from datamodules.count_series import level_index
from lightning_app.forecast_scores import (
    CENTRAL_INTERVALS,
    relative_score,
    weighted_interval_score,
)


def mean_squared_percentage_error(preds: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """The tutorial's MSPE: ``mean((target - preds)^2 / max(target^2, eps))``."""
    return ((target - preds) ** 2 / torch.clamp_min(target**2, eps)).mean()


class MeanSquaredPercentageError(Metric):
    """Running :func:`mean_squared_percentage_error` over all elements seen."""

    is_differentiable = True
    higher_is_better = False
    full_state_update = False

    def __init__(self, eps: float = 1e-7, **kwargs) -> None:
        super().__init__(**kwargs)
        self.eps = eps
        self.add_state("sum_error", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        error = (target - preds) ** 2 / torch.clamp_min(target**2, self.eps)
        self.sum_error += error.sum().to(torch.float64)
        self.count += error.numel()

    def compute(self) -> torch.Tensor:
        return (self.sum_error / self.count).float()


class _SeriesAbsoluteErrors(Metric):
    """Sums of absolute errors per series (last dimension) of ``preds`` or of another named forecast."""

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, num_series: int, forecast: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        #: ``None``: score ``preds``; a name: score the step output of that name (e.g. ``"trend"``).
        self.forecast = forecast
        self.add_state("sum_error", default=torch.zeros(num_series, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def _forecast(self, preds: torch.Tensor, others: dict[str, torch.Tensor]) -> torch.Tensor:
        return preds if self.forecast is None else others[self.forecast]

    def _add(self, forecast: torch.Tensor, target: torch.Tensor) -> None:
        errors = (forecast - target).abs().reshape(-1, target.shape[-1])
        self.sum_error += errors.sum(0).to(torch.float64)
        self.count += errors.shape[0]


class SeriesMeanAbsoluteError(_SeriesAbsoluteErrors):
    """Mean absolute error per series: ``float32[C]`` (their mean is the overall MAE)."""

    def update(self, preds: torch.Tensor, target: torch.Tensor, **others: torch.Tensor) -> None:
        self._add(self._forecast(preds, others), target)

    def compute(self) -> torch.Tensor:
        return (self.sum_error / self.count.clamp_min(1)).float()


class MeanAbsoluteScaledError(_SeriesAbsoluteErrors):
    """MASE per series: the forecast's MAE / the ``baseline``'s (naive forecast's) MAE on the same days.

    ``float32[C]``; below 1 beats the baseline. Updated with ``(preds, target, baseline=...)`` and,
    for ``forecast="trend"``, ``trend=...``. A series the baseline forecasts exactly (MAE 0) gets
    MASE 1 when the forecast is exact too, else infinity.
    """

    def __init__(self, num_series: int, forecast: str | None = None, **kwargs) -> None:
        super().__init__(num_series, forecast, **kwargs)
        self.add_state("sum_baseline", default=torch.zeros(num_series, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor, baseline: torch.Tensor, **others: torch.Tensor) -> None:
        self._add(self._forecast(preds, others), target)
        self.sum_baseline += (baseline - target).abs().reshape(-1, target.shape[-1]).sum(0).to(torch.float64)

    def compute(self) -> torch.Tensor:
        ratio = self.sum_error / self.sum_baseline
        return torch.where(self.sum_error == self.sum_baseline, torch.ones_like(ratio), ratio).float()


class ForecastScores(Metric):
    """Hub-style scores of multi-horizon quantile forecasts, pooled and per horizon and per series.

    ``update(quantiles, target, baseline, series)`` with ``float[N, H, C, L]`` forecast quantiles at ``levels``,
    ``float[N, H, C]`` observations (NaN: not scored), ``float[N, H, C, L]`` the hub baseline's quantiles (its
    median is the last value held flat: persistence) and ``int64[N]`` series indices. :meth:`compute` returns:

    * ``wis``: the mean weighted interval score; ``relative_wis``: the geometric mean over series x columns of
      the model's mean WIS / the baseline's (:func:`~lightning_app.forecast_scores.relative_score`);
    * ``mae`` of the median and ``relative_mae`` against persistence, pooled the same way;
    * ``coverage_50|80|95``: the share of observations inside each central interval;
    * each of these per horizon with a ``_h<N>`` suffix.

    :meth:`per_series` gives the same relative figures for each series.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, levels: Sequence[float], **kwargs) -> None:
        super().__init__(**kwargs)
        self.levels = tuple(levels)
        self.median = level_index(0.5, self.levels)
        #: ``(lower, upper)`` level indices of each central interval in :data:`CENTRAL_INTERVALS`.
        self.bounds = [
            (level_index((1 - width / 100) / 2, self.levels), level_index((1 + width / 100) / 2, self.levels))
            for width in CENTRAL_INTERVALS
        ]
        for name in ("wis", "baseline_wis", "abs_error", "baseline_abs_error", "inside", "series"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(
        self, quantiles: torch.Tensor, target: torch.Tensor, baseline: torch.Tensor, series: torch.Tensor
    ) -> None:
        self.wis.append(weighted_interval_score(quantiles, self.levels, target))
        self.baseline_wis.append(weighted_interval_score(baseline, self.levels, target))
        self.abs_error.append((quantiles[..., self.median] - target).abs())
        self.baseline_abs_error.append((baseline[..., self.median] - target).abs())
        inside = [(quantiles[..., lo] <= target) & (target <= quantiles[..., hi]) for lo, hi in self.bounds]
        inside = torch.stack(inside, dim=-1).to(quantiles.dtype)
        self.inside.append(inside.masked_fill(target.isnan().unsqueeze(-1), float("nan")))
        self.series.append(series)

    def _states(self) -> dict[str, torch.Tensor]:
        names = ("wis", "baseline_wis", "abs_error", "baseline_abs_error", "inside", "series")
        return {name: dim_zero_cat(getattr(self, name)) for name in names}

    @staticmethod
    def _relative(model: torch.Tensor, baseline: torch.Tensor, series: torch.Tensor) -> torch.Tensor:
        """Geometric mean over series x columns of the model's mean score / the baseline's, each mean over the
        series' scored origins and horizons (``float[N, H, C]`` scores, NaN: not scored)."""
        model_means, baseline_means = [], []
        for index in series.unique():
            rows = series == index
            model_means.append(model[rows].nanmean((0, 1)))
            baseline_means.append(baseline[rows].nanmean((0, 1)))
        model_means, baseline_means = torch.stack(model_means), torch.stack(baseline_means)
        scored = ~(model_means.isnan() | baseline_means.isnan())
        return relative_score(model_means[scored], baseline_means[scored])

    def compute(self) -> dict[str, torch.Tensor]:
        state = self._states()
        series = state["series"]
        values: dict[str, torch.Tensor] = {}
        horizon = state["wis"].shape[1]
        for suffix, cut in [("", slice(None)), *((f"_h{h + 1}", slice(h, h + 1)) for h in range(horizon))]:
            wis, baseline_wis = state["wis"][:, cut], state["baseline_wis"][:, cut]
            errors, baseline_errors = state["abs_error"][:, cut], state["baseline_abs_error"][:, cut]
            values[f"wis{suffix}"] = wis.nanmean()
            values[f"relative_wis{suffix}"] = self._relative(wis, baseline_wis, series)
            values[f"mae{suffix}"] = errors.nanmean()
            values[f"relative_mae{suffix}"] = self._relative(errors, baseline_errors, series)
            inside = state["inside"][:, cut]
            for index, width in enumerate(CENTRAL_INTERVALS):
                values[f"coverage_{width}{suffix}"] = inside[..., index].nanmean()
        return {name: value.float() for name, value in values.items()}

    def per_series(self) -> dict[int, dict[str, float]]:
        """``{series index: {"relative_wis", "relative_mae", "coverage_80", "mase_h1"}}`` pooled over the series'
        columns, origins and horizons (``mase_h1``: one-step MAE / persistence's)."""
        state = self._states()
        result = {}
        for index in state["series"].unique().tolist():
            rows = state["series"] == index
            pick = {name: value[rows] for name, value in state.items() if name != "series"}
            ids = torch.zeros(int(rows.sum()), dtype=torch.long)
            h1 = pick["abs_error"][:, 0].nanmean(0), pick["baseline_abs_error"][:, 0].nanmean(0)
            result[index] = {
                "relative_wis": float(self._relative(pick["wis"], pick["baseline_wis"], ids)),
                "relative_mae": float(self._relative(pick["abs_error"], pick["baseline_abs_error"], ids)),
                "coverage_80": float(pick["inside"][..., CENTRAL_INTERVALS.index(80)].nanmean()),
                "mase_h1": float((h1[0] / h1[1]).nanmean()),
            }
        return result
