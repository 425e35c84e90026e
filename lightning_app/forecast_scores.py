"""Probabilistic forecast scores as the COVID-19 forecast hubs compute them, in plain torch.

Building blocks for a quantile forecaster; nothing here imports Lightning. A forecast is a tensor of quantiles
``float[..., L]`` at ``L`` levels (increasing, e.g. :data:`QUANTILE_LEVELS`), scored against observations
``float[...]`` (broadcastable against the quantiles' leading dimensions).

- :func:`interval_score` and :func:`weighted_interval_score`: Bracher, Ray, Gneiting and Reich (2021),
  "Evaluating epidemic forecasts in an interval format", PLoS Comput Biol 17(2): e1008618.
- :func:`pinball_loss`: the quantile loss; WIS = 2 x the mean pinball loss over the levels.
- :func:`interval_coverage`: how often observations fall inside a central interval.
- :func:`hub_baseline_quantiles`: the hubs' baseline (last value held flat, spread from symmetrised past
  one-day changes, widened by sqrt(h)).
- :func:`relative_score`: geometric mean over series of model / baseline score ratios.
- :func:`monotone_quantiles`: repairs crossing quantiles by sorting them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from datamodules.count_series import (
    LEVEL_TOLERANCE,
    QUANTILE_LEVELS,
    find_level,
    hub_baseline_quantiles,
    monotone_quantiles,
)

__all__ = [
    "CENTRAL_INTERVALS",
    "QUANTILE_LEVELS",
    "hub_baseline_quantiles",
    "interval_coverage",
    "interval_score",
    "monotone_quantiles",
    "pinball_loss",
    "relative_score",
    "weighted_interval_score",
]

#: Central prediction intervals (in %) whose coverage is reported.
CENTRAL_INTERVALS: tuple[int, ...] = (50, 80, 95)

Levels = Sequence[float] | torch.Tensor


def _levels_tensor(levels: Levels, like: torch.Tensor) -> torch.Tensor:
    """``levels`` as a float64 tensor ``[L]``, checked to be strictly increasing inside (0, 1)."""
    lv = torch.as_tensor(levels, dtype=torch.float64).flatten().cpu()
    if lv.numel() == 0:
        raise ValueError("levels is empty")
    if not bool(((lv > 0) & (lv < 1)).all()):
        raise ValueError(f"quantile levels must lie strictly between 0 and 1, got {lv.tolist()}")
    if lv.numel() > 1 and not bool((lv[1:] > lv[:-1]).all()):
        raise ValueError(f"quantile levels must be strictly increasing, got {lv.tolist()}")
    if like.shape[-1] != lv.numel():
        raise ValueError(f"quantiles have {like.shape[-1]} values in their last dimension but {lv.numel()} levels")
    return lv


def _symmetric_pairs(lv: torch.Tensor) -> tuple[int, list[tuple[int, int, float]]]:
    """The median's index and ``(lower index, upper index, alpha)`` for each central interval in ``lv``.

    Raises ValueError when 0.5 is missing or a level below 0.5 has no partner ``1 - level`` (or vice versa).
    """
    median = find_level(0.5, lv)
    if median is None:
        raise ValueError(f"quantile levels must contain the median 0.5, got {lv.tolist()}")
    pairs = []
    for i, level in enumerate(lv.tolist()):
        partner = find_level(1.0 - level, lv)
        if partner is None:
            raise ValueError(f"quantile levels must be symmetric around 0.5: {level} has no partner {1.0 - level:g}")
        if level < 0.5 - LEVEL_TOLERANCE:
            pairs.append((i, partner, 2.0 * level))
    return median, pairs


def interval_score(
    lower: torch.Tensor, upper: torch.Tensor, y: torch.Tensor, alpha: float | torch.Tensor
) -> torch.Tensor:
    """Interval score of the central ``(1 - alpha)`` interval ``[lower, upper]`` (Bracher et al. 2021, eq. 1).

    ``IS_alpha = (upper - lower) + 2/alpha * (lower - y) * 1{y < lower} + 2/alpha * (y - upper) * 1{y > upper}``:
    the interval's width plus a penalty for each observation outside it. All arguments broadcast together
    (e.g. ``float[N]`` bounds and observations); returns the broadcast shape. Lower is better.
    """
    below = torch.clamp_min(lower - y, 0.0)
    above = torch.clamp_min(y - upper, 0.0)
    return (upper - lower) + (2.0 / alpha) * (below + above)


def weighted_interval_score(quantiles: torch.Tensor, levels: Levels, y: torch.Tensor | float) -> torch.Tensor:
    """Weighted interval score (WIS, Bracher et al. 2021, eq. 2) of quantile forecasts.

    ``quantiles`` is ``float[..., L]`` at the increasing, symmetric ``levels`` (``[L]``, containing 0.5);
    ``y`` is ``float[...]`` (broadcastable). With the K central intervals of levels ``(alpha_k/2, 1 - alpha_k/2)``:
    ``WIS = (0.5 * |y - median| + sum_k alpha_k/2 * IS_alpha_k) / (K + 0.5)``. Returns ``float[...]``, lower is
    better; with the median alone it is the absolute error. Raises ValueError on asymmetric levels or no median.
    """
    y = torch.as_tensor(y, dtype=quantiles.dtype, device=quantiles.device)
    lv = _levels_tensor(levels, quantiles)
    median, pairs = _symmetric_pairs(lv)
    total = 0.5 * (y - quantiles[..., median]).abs()
    for lo, hi, alpha in pairs:
        total = total + (alpha / 2.0) * interval_score(quantiles[..., lo], quantiles[..., hi], y, alpha)
    return total / (len(pairs) + 0.5)


def pinball_loss(quantiles: torch.Tensor, levels: Levels, y: torch.Tensor | float) -> torch.Tensor:
    """Pinball (quantile) loss per level: ``max(tau * (y - q), (tau - 1) * (y - q))``.

    ``quantiles`` is ``float[..., L]`` at ``levels`` (``[L]``, increasing, need not be symmetric); ``y`` is
    ``float[...]``. Returns ``float[..., L]`` unreduced (``.mean()`` is a training loss). For symmetric levels
    containing 0.5, ``weighted_interval_score == 2 * pinball_loss(...).mean(-1)``.
    """
    y = torch.as_tensor(y, dtype=quantiles.dtype, device=quantiles.device)
    lv = _levels_tensor(levels, quantiles).to(dtype=quantiles.dtype, device=quantiles.device)
    error = y.unsqueeze(-1) - quantiles
    return torch.maximum(lv * error, (lv - 1.0) * error)


def interval_coverage(
    quantiles: torch.Tensor,
    levels: Levels,
    y: torch.Tensor | float,
    width: float,
    dim: int | tuple[int, ...] | None = None,
) -> torch.Tensor:
    """Fraction of observations inside the central ``width``% interval, bounds included.

    The interval runs from the quantile at level ``(1 - width/100) / 2`` to the one at ``1 - (1 - width/100) / 2``
    (both must be in ``levels``, else ValueError): 50 -> [0.25, 0.75], 80 -> [0.1, 0.9], 95 -> [0.025, 0.975].
    ``quantiles`` is ``float[..., L]``, ``y`` ``float[...]``. Returns the mean of the hits over ``dim``
    (default: all elements, a scalar), as a float tensor.
    """
    y = torch.as_tensor(y, dtype=quantiles.dtype, device=quantiles.device)
    lv = _levels_tensor(levels, quantiles)
    tail = (1.0 - width / 100.0) / 2.0
    lo, hi = find_level(tail, lv), find_level(1.0 - tail, lv)
    if lo is None or hi is None or not 0 < width < 100:
        raise ValueError(f"a {width}% central interval needs levels {tail:g} and {1 - tail:g}, got {lv.tolist()}")
    hits = ((quantiles[..., lo] <= y) & (y <= quantiles[..., hi])).to(quantiles.dtype)
    return hits.mean() if dim is None else hits.mean(dim)


def relative_score(model_scores: torch.Tensor, baseline_scores: torch.Tensor) -> torch.Tensor:
    """Relative score: the geometric mean over series of ``model_score / baseline_score``.

    ``model_scores`` and ``baseline_scores`` hold one mean score per series (``float[S]``; or ``float[S, C]`` for
    series x columns, pooled the same way), lower is better, same shape. Returns the scalar
    ``exp(mean_i log(model_i / baseline_i))`` over all elements (equal to the ratio of the geometric means): below 1
    the model beats the baseline. Unlike a ratio of summed scores, large-count series do not dominate. Entries where
    both scores are 0 carry no information and are left out; a 0 baseline against a positive model score gives inf,
    a 0 model score against a positive baseline gives 0 (both at once: nan). Returns nan when nothing is left.
    """
    model = torch.as_tensor(model_scores, dtype=torch.float64)
    baseline = torch.as_tensor(baseline_scores, dtype=torch.float64)
    if model.shape != baseline.shape:
        raise ValueError(f"model scores {tuple(model.shape)} and baseline scores {tuple(baseline.shape)} differ")
    if bool((model < 0).any()) or bool((baseline < 0).any()):
        raise ValueError("scores must be non-negative")
    keep = (model > 0) | (baseline > 0)
    if not bool(keep.any()):
        return torch.tensor(math.nan)
    log_ratio = model[keep].log() - baseline[keep].log()
    return log_ratio.mean().exp().to(torch.get_default_dtype())
