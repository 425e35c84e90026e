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
