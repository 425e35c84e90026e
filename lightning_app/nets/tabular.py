"""Networks for tabular features (Titanic, any CSV table)."""

from __future__ import annotations

import torch
from torch import nn


class TutorialMLP(nn.Module):
    """The tutorial's Titanic network: Linear 15-20-15-1 with ReLU.

    Returns one logit per row (the tutorial's final Sigmoid lives in the loss), or ``num_outputs`` logits per row
    (``float32[B, num_outputs]``) for more than two classes.
    """

    def __init__(self, num_features: int = 15, num_outputs: int = 1) -> None:
        super().__init__()
        self.num_outputs = num_outputs
        self.layers = nn.Sequential(
            nn.Linear(num_features, 20),
            nn.ReLU(),
            nn.Linear(20, 15),
            nn.ReLU(),
            nn.Linear(15, num_outputs),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.layers(features)
        return logits.squeeze(-1) if self.num_outputs == 1 else logits


class ResidualMLP(nn.Module):
    """A small MLP with residual blocks, LayerNorm and dropout for standardised features.

    ``float32[B, num_features] -> float32[B]`` logits, or ``float32[B, num_outputs]`` when ``num_outputs > 1``.
    """

    def __init__(
        self, num_features: int, hidden: int = 64, depth: int = 2, dropout: float = 0.2, num_outputs: int = 1
    ) -> None:
        super().__init__()
        self.num_outputs = num_outputs
        self.stem = nn.Linear(num_features, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, hidden))
            for _ in range(depth)
        )
        self.head = nn.Sequential(nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, num_outputs))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        hidden = self.stem(features)
        for block in self.blocks:
            hidden = hidden + block(hidden)
        logits = self.head(hidden)
        return logits.squeeze(-1) if self.num_outputs == 1 else logits
