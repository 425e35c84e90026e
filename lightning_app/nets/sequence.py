"""Networks for the COVID-19 daily forecast."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


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
    ) -> None:
        super().__init__()
        if len(levels) % 2 != 1 or abs(levels[len(levels) // 2] - 0.5) > 1e-6:
            raise ValueError(f"levels must be symmetric with 0.5 in the middle, got {list(levels)}")
        self.num_series, self.horizon, self.num_levels = num_series, horizon, len(levels)
        self.level_days = min(level_days, window)
        self.register_buffer("column_codes", torch.eye(num_series), persistent=False)
        gaps = torch.full((horizon, self.num_levels), math.log(math.expm1(initial_gap)))  # softplus^-1
        gaps[:, self.num_levels // 2] = 0.0
        self.members = nn.ModuleList()
        for _ in range(members):
            mlp = nn.Sequential(
                nn.Linear(window + num_series, hidden_size),
                nn.GELU(),
                nn.Linear(hidden_size, hidden_size),
                nn.GELU(),
                nn.Linear(hidden_size, horizon * self.num_levels),
            )
            nn.init.zeros_(mlp[-1].weight)
            with torch.no_grad():
                mlp[-1].bias.copy_(gaps.flatten())
            self.members.append(mlp)

    def forward_log(self, window: torch.Tensor) -> torch.Tensor:
        """The quantiles on the ``log1p`` scale, ``float32[B, horizon, C, L]``."""
        logs = log1p_counts(window).transpose(1, 2)  # [B, C, W]
        level = logs[..., -self.level_days :].mean(-1, keepdim=True)  # [B, C, 1]
        codes = self.column_codes.expand(logs.shape[0], -1, -1)  # shape[0], not len(): exports keep the batch free
        inputs = torch.cat([logs - level, codes], dim=-1)
        quantiles = torch.stack([self._member_quantiles(mlp(inputs)) for mlp in self.members]).mean(0)
        return (quantiles + logs[..., -1:].unsqueeze(-1)).permute(0, 2, 1, 3)

    def _member_quantiles(self, out: torch.Tensor) -> torch.Tensor:
        """One member's raw outputs ``[B, C, horizon * L]`` -> ordered log-quantile offsets ``[B, C, horizon, L]``."""
        out = out.unflatten(-1, (self.horizon, self.num_levels))
        middle = self.num_levels // 2
        median = out[..., middle : middle + 1]
        above = torch.cumsum(nn.functional.softplus(out[..., middle + 1 :]), dim=-1)
        below = torch.cumsum(nn.functional.softplus(out[..., :middle].flip(-1)), dim=-1).flip(-1)
        return torch.cat([median - below, median, median + above], dim=-1)

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        return torch.expm1(self.forward_log(window).clamp_min(0.0).clamp_max(MAX_LOG_COUNT))
