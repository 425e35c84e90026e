"""Networks for the COVID-19 daily forecast."""

from __future__ import annotations

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
