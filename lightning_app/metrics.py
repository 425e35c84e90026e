"""Metrics torchmetrics does not ship."""

from __future__ import annotations

import torch
from torchmetrics import Metric


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
