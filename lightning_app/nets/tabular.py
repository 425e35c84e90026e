"""Networks for tabular features (Titanic)."""

from __future__ import annotations

import torch
from torch import nn


class TutorialMLP(nn.Module):
    """The tutorial's Titanic network: Linear 15-20-15-1 with ReLU.

    Returns one logit per row (the tutorial's final Sigmoid lives in the loss).
    """

    def __init__(self, num_features: int = 15) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(num_features, 20),
            nn.ReLU(),
            nn.Linear(20, 15),
            nn.ReLU(),
            nn.Linear(15, 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features).squeeze(-1)


class ResidualMLP(nn.Module):
    """A small MLP with residual blocks, LayerNorm and dropout for standardised features.

    ``float32[B, num_features] -> float32[B]`` logits.
    """

    def __init__(self, num_features: int, hidden: int = 64, depth: int = 2, dropout: float = 0.2) -> None:
        super().__init__()
        self.stem = nn.Linear(num_features, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, hidden))
            for _ in range(depth)
        )
        self.head = nn.Sequential(nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        hidden = self.stem(features)
        for block in self.blocks:
            hidden = hidden + block(hidden)
        return self.head(hidden).squeeze(-1)
