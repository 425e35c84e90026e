"""Networks for the COVID-19 daily forecast."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from datamodules.count_series import interpolation_points, level_index, symmetric_change_quantiles


class MultiplicativeBlock(nn.Module):
    """The tutorial's ``Block``: tomorrow = max((1 + x) * today, 0).

    ``x`` is the network's relative change; with ``x == 0`` it is the
    persistence forecast, and the output is never negative.
    """

    def forward(self, relative_change: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
        return torch.clamp_min((1 + relative_change) * window[:, -1, :], 0.0)


class TutorialCovidNet(nn.Module):
    """The tutorial's forecaster: a 5-layer LSTM, a Linear layer and :class:`MultiplicativeBlock`.

    ``float32[B, window, C]`` daily increments -> ``float32[B, C]`` next-day increments.
    """

    def __init__(self, num_series: int = 3, num_layers: int = 5) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size=num_series, hidden_size=num_series, num_layers=num_layers, batch_first=True)
        self.linear = nn.Linear(num_series, num_series)
        self.block = MultiplicativeBlock()

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        last_hidden = self.lstm(window)[0][:, -1, :]
        return self.block(self.linear(last_hidden), window)


class ResidualCovidNet(nn.Module):
    """A forecaster that starts as the persistence forecast and learns corrections to it.

    The LSTM reads ``log1p`` of the increments (raw counts span 0..15,000 and
    saturate the tutorial's LSTM); the output layer starts at zero, so before
    training :class:`MultiplicativeBlock` returns today's value unchanged and
    training can only move away from persistence where the loss says so.
    ``float32[B, window, C]`` -> ``float32[B, C]``.
    """

    def __init__(self, num_series: int = 3, hidden_size: int = 16, num_layers: int = 1) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size=num_series, hidden_size=hidden_size, num_layers=num_layers, batch_first=True)
        self.linear = nn.Linear(hidden_size, num_series)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.block = MultiplicativeBlock()

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        last_hidden = self.lstm(torch.log1p(window.clamp_min(0)))[0][:, -1, :]
        return self.block(torch.tanh(self.linear(last_hidden)), window)


def log1p_counts(values: torch.Tensor) -> torch.Tensor:
    """``log1p`` of daily counts, values below zero (corrections) read as 0 first."""
    return torch.log1p(values.clamp_min(0))


def damped_log_trend(window: torch.Tensor, damping: float = 0.5) -> torch.Tensor:
    """A simple statistical baseline: tomorrow = today x (mean daily growth over the window) ^ ``damping``.

    On ``log1p`` counts: ``expm1(l[T] + damping * (l[T] - l[0]) / (window - 1))``.
    ``float32[B, window, C]`` -> ``float32[B, C]``.
    """
    logs = log1p_counts(window)
    growth = (logs[:, -1] - logs[:, 0]) / max(window.shape[1] - 1, 1)
    return torch.expm1(logs[:, -1] + damping * growth)


class LogTrendCovidNet(nn.Module):
    """Persistence on ``log1p`` counts plus learned level and trend corrections per series.

    With ``l`` the window's ``log1p`` counts (negative values read as 0), series ``c`` is forecast as
    ``expm1(l[T] + a_c * (mean(l) - l[T]) + b_c * g + heads)``: ``a_c`` pulls towards the window's
    level (smoothing noisy days), ``b_c`` follows the mean daily log-growth ``g`` over the window
    (a damped trend), and ``heads`` (optional, ``heads > 0``) is the mean of small MLP corrections
    bounded by ``max_step`` that read the window relative to its last day. Every coefficient and
    every head's output layer starts at zero, so the untrained network is exactly the persistence
    forecast and training moves away from it only where the loss says so.
    ``float32[B, window, C]`` daily counts -> ``float32[B, C]`` next-day counts.
    """

    def __init__(
        self, num_series: int = 3, window: int = 8, heads: int = 0, hidden_size: int = 16, max_step: float = 1.0
    ) -> None:
        super().__init__()
        self.window, self.heads, self.max_step = window, heads, max_step
        self.level = nn.Parameter(torch.zeros(num_series))
        self.trend = nn.Parameter(torch.zeros(num_series))
        if heads > 0:
            features = window  # window - 1 days relative to the last one, and the trend
            self.head_in = nn.Parameter(torch.randn(heads, features, hidden_size) / features**0.5)
            self.head_bias = nn.Parameter(torch.zeros(heads, 1, 1, hidden_size))
            self.series_embedding = nn.Parameter(0.1 * torch.randn(heads, 1, num_series, hidden_size))
            self.head_out = nn.Parameter(torch.zeros(heads, hidden_size))

    def forward_log(self, window: torch.Tensor) -> torch.Tensor:
        """The forecast on the ``log1p`` scale, ``float32[B, C]``."""
        logs = log1p_counts(window).transpose(1, 2)  # [B, C, W]
        last = logs[..., -1]
        growth = (logs[..., -1] - logs[..., 0]) / max(logs.shape[-1] - 1, 1)
        out = last + self.level * (logs.mean(-1) - last) + self.trend * growth
        if self.heads > 0:
            features = torch.cat([logs[..., :-1] - last.unsqueeze(-1), growth.unsqueeze(-1)], dim=-1)
            hidden = torch.einsum("bcf,kfh->kbch", features, self.head_in) + self.head_bias + self.series_embedding
            hidden = torch.tanh(hidden)
            corrections = self.max_step * torch.tanh(torch.einsum("kbch,kh->kbc", hidden, self.head_out))
            out = out + corrections.mean(0)
        return out

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        return torch.expm1(self.forward_log(window).clamp_min(0))


#: Levels whose distance from the median, one day ahead in the window's baseline, joins the inputs of
#: ``QuantileCovidNet(anchor="baseline")``: the series' recent volatility.
SPREAD_FEATURE_LEVELS = (0.1, 0.25, 0.75, 0.9)

#: ``log1p`` of the largest count a forecast gives (1e12, as the data readers accept): no overflow to infinity.
MAX_LOG_COUNT = math.log1p(1e12)


class QuantileCovidNet(nn.Module):
    """A global multi-horizon quantile forecaster: one MLP shared by every series and count column.

    Each column's window is read on the ``log1p`` scale relative to its level (the mean of its last
    ``level_days`` days), so series of any size share the same inputs; a one-hot code of the column
    (confirmed, cured, dead behave differently) joins them. The MLP gives, for every horizon, the median
    as a change from the last day and positive gaps to the neighbouring levels (softplus, summed outwards),
    so the quantiles never cross; the counts are ``expm1`` of ``log1p(last day) + quantile`` clamped at 0, so
    they are never negative. The output layer starts at zero (gaps at ``initial_gap``): untrained, the median
    is the persistence forecast, and training moves away from it only where the loss says so. With
    ``members > 1`` that many MLPs, initialised apart, are averaged on the ``log1p`` scale (an ensemble; the
    mean of ordered quantiles is ordered).

    ``anchor="baseline"`` anchors the whole quantile fan, not only the median: the start is the forecast hubs'
    baseline computed from the window (last day held flat, quantiles of the window's symmetrised one-day changes
    widened by sqrt(h), clamped at 0; :meth:`baseline_log`), and each MLP gives, per horizon and level, a shift
    of the median and a factor (``exp``) on the baseline's gap to the next level plus a positive extra gap
    (``softplus``, starting near 0, so a flat window's zero-width fan can widen). Its inputs add the window's
    level (``log1p`` mean of the last ``level_days`` days, / 10) and the baseline's one-day distances from the
    median at :data:`SPREAD_FEATURE_LEVELS` (the series' recent volatility). Untrained it is the baseline.
    ``dropout`` (after each hidden layer) regularises the MLPs in training. ``widen`` multiplies every
    quantile's distance from the median on the ``log1p`` scale in the forecasts (1: none; the loss trains the
    fan before it): MLPs fitted on windows of the series they were trained on give slightly narrow intervals on
    other series.

    ``float32[B, window, C]`` daily counts -> ``float32[B, horizon, C, L]`` count quantiles at ``levels``
    (sorted, with 0.5 in the middle).
    """

    def __init__(
        self,
        num_series: int = 3,
        window: int = 14,
        horizon: int = 7,
        levels: Sequence[float] = (0.1, 0.5, 0.9),
        hidden_size: int = 64,
        level_days: int = 7,
        initial_gap: float = 0.05,
        members: int = 1,
        anchor: str = "last",
        dropout: float = 0.0,
        widen: float = 1.0,
    ) -> None:
        super().__init__()
        if widen <= 0:
            raise ValueError(f"widen must be positive, got {widen}")
        self.widen_by = widen
        if len(levels) % 2 != 1 or abs(levels[len(levels) // 2] - 0.5) > 1e-6:
            raise ValueError(f"levels must be symmetric with 0.5 in the middle, got {list(levels)}")
        if anchor not in ("last", "baseline"):
            raise ValueError(f"anchor must be 'last' or 'baseline', got {anchor!r}")
        if anchor == "baseline" and window < 2:
            raise ValueError(f"anchor 'baseline' needs a window of at least 2 days, got {window}")
        self.num_series, self.horizon, self.num_levels = num_series, horizon, len(levels)
        self.anchor = anchor
        self.level_days = min(level_days, window)
        self.register_buffer("column_codes", torch.eye(num_series), persistent=False)
        if anchor == "baseline":
            self._init_baseline(window, horizon, levels)
            # Per horizon and level: (gap scale, extra gap) to the next level; the last level's first slot is the
            # median's shift. Shift 0, scales exp(0) = 1, extras softplus(-8) ~ 0: untrained, the baseline's fan.
            gaps = torch.zeros(horizon, self.num_levels, 2)
            gaps[..., 1] = -8.0
            features = window + num_series + 1 + len(SPREAD_FEATURE_LEVELS)
            outputs = horizon * self.num_levels * 2
        else:
            gaps = torch.full((horizon, self.num_levels), math.log(math.expm1(initial_gap)))  # softplus^-1
            gaps[:, self.num_levels // 2] = 0.0
            features = window + num_series
            outputs = horizon * self.num_levels
        self.members = nn.ModuleList()
        for _ in range(members):
            # Dropout layers only when asked for: without them the layers keep the indices of earlier versions.
            drop = [nn.Dropout(dropout)] if dropout > 0 else []
            mlp = nn.Sequential(
                nn.Linear(features, hidden_size),
                nn.GELU(),
                *drop,
                nn.Linear(hidden_size, hidden_size),
                nn.GELU(),
                *drop,
                nn.Linear(hidden_size, outputs),
            )
            nn.init.zeros_(mlp[-1].weight)
            with torch.no_grad():
                mlp[-1].bias.copy_(gaps.flatten())
            self.members.append(mlp)

    def _init_baseline(self, window: int, horizon: int, levels: Sequence[float]) -> None:
        """Constants of :meth:`baseline_log`: where each level falls among the ``2 (window - 1)`` sorted symmetrised
        changes (``torch.quantile``'s linear interpolation, as plain gathers, so exports need no quantile op)."""
        low, high, weight = interpolation_points(2 * (window - 1), levels)
        self.register_buffer("spread_low", low, persistent=False)
        self.register_buffer("spread_high", high, persistent=False)
        self.register_buffer("spread_weight", weight.float(), persistent=False)
        sqrt_horizon = torch.arange(1, horizon + 1).float().sqrt().view(1, -1, 1, 1)
        self.register_buffer("sqrt_horizon", sqrt_horizon, persistent=False)
        index = [level_index(level, levels) for level in SPREAD_FEATURE_LEVELS]
        self.register_buffer("spread_features", torch.tensor(index), persistent=False)

    def baseline_log(self, window: torch.Tensor) -> torch.Tensor:
        """The hubs' baseline computed from the window alone (last day held flat, quantiles of the window's
        symmetrised one-day changes widened by sqrt(h), clamped at 0), on the ``log1p`` scale:
        ``float32[B, W, C]`` -> ``float32[B, horizon, C, L]``."""
        counts = window.clamp_min(0).transpose(1, 2)  # [B, C, W]
        points = (self.spread_low, self.spread_high, self.spread_weight)
        spread = symmetric_change_quantiles(counts, points)  # [B, C, L]
        counts_ahead = counts[..., -1:].unsqueeze(1) + self.sqrt_horizon * spread.unsqueeze(1)  # [B, H, C, L]
        return torch.log1p(counts_ahead.clamp_min(0))

    def forward_log(self, window: torch.Tensor) -> torch.Tensor:
        """The quantiles on the ``log1p`` scale, ``float32[B, horizon, C, L]``, as trained (before ``widen``)."""
        return self._forward_baseline(window) if self.anchor == "baseline" else self._forward_last(window)

    def _forward_last(self, window: torch.Tensor) -> torch.Tensor:
        """``anchor="last"``: the median as a change from the last day, gaps from the MLPs."""
        logs = log1p_counts(window).transpose(1, 2)  # [B, C, W]
        level = logs[..., -self.level_days :].mean(-1, keepdim=True)  # [B, C, 1]
        codes = self.column_codes.expand(logs.shape[0], -1, -1)  # shape[0], not len(): exports keep the batch free
        inputs = torch.cat([logs - level, codes], dim=-1)
        quantiles = torch.stack([self._member_quantiles(mlp(inputs)) for mlp in self.members]).mean(0)
        return (quantiles + logs[..., -1:].unsqueeze(-1)).permute(0, 2, 1, 3)

    def _forward_baseline(self, window: torch.Tensor) -> torch.Tensor:
        """``anchor="baseline"``: each member moves the baseline's median and scales its gaps between neighbouring
        levels (times ``exp``, plus a ``softplus`` extra), all starting at the baseline's own fan."""
        logs = log1p_counts(window).transpose(1, 2)  # [B, C, W]
        level = logs[..., -self.level_days :].mean(-1, keepdim=True)  # [B, C, 1]
        base = self.baseline_log(window)  # [B, H, C, L]
        middle = self.num_levels // 2
        median = base[..., middle : middle + 1]
        spread = (base[:, 0] - median[:, 0])[..., self.spread_features]  # [B, C, F]: the recent volatility
        codes = self.column_codes.expand(logs.shape[0], -1, -1)
        inputs = torch.cat([logs - level, codes, level / 10, spread], dim=-1)
        gaps = base[..., 1:] - base[..., :-1]  # [B, H, C, L-1] >= 0
        members = []
        for mlp in self.members:
            out = mlp(inputs).unflatten(-1, (self.horizon, self.num_levels, 2)).transpose(1, 2)  # [B, H, C, L, 2]
            new_gaps = gaps * torch.exp(out[..., :-1, 0].clamp(-4, 4)) + nn.functional.softplus(out[..., :-1, 1])
            shift = median + out[..., -1:, 0]
            above = torch.cumsum(new_gaps[..., middle:], dim=-1)
            below = torch.cumsum(new_gaps[..., :middle].flip(-1), dim=-1).flip(-1)
            members.append(torch.cat([shift - below, shift, shift + above], dim=-1))
        return torch.stack(members).mean(0)

    def _member_quantiles(self, out: torch.Tensor) -> torch.Tensor:
        """One member's raw outputs ``[B, C, horizon * L]`` -> ordered log-quantile offsets ``[B, C, horizon, L]``."""
        out = out.unflatten(-1, (self.horizon, self.num_levels))
        middle = self.num_levels // 2
        median = out[..., middle : middle + 1]
        above = torch.cumsum(nn.functional.softplus(out[..., middle + 1 :]), dim=-1)
        below = torch.cumsum(nn.functional.softplus(out[..., :middle].flip(-1)), dim=-1).flip(-1)
        return torch.cat([median - below, median, median + above], dim=-1)

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        quantiles = self.forward_log(window)
        if self.widen_by != 1.0:
            middle = self.num_levels // 2
            median = quantiles[..., middle : middle + 1]
            quantiles = median + self.widen_by * (quantiles - median)
        return torch.expm1(quantiles.clamp_min(0.0).clamp_max(MAX_LOG_COUNT))
