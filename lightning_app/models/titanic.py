"""Titanic survival LightningModule."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC, BinaryF1Score

from datamodules.titanic import Passenger, encode_passengers
from lightning_app.models.base import TaskModule
from lightning_app.nets import ResidualMLP, TutorialMLP

TitanicNet = Literal["tutorial", "residual_mlp"]


class TitanicModule(TaskModule):
    """Binary survival classifier over encoded passenger features.

    Batch: ``(features float32[B, num_features], survived int64[B])``.
    ``preds`` are survival probabilities ``float32[B]``.

    Args:
        num_features: input width (from ``TitanicDataModule.model_kwargs()``).
        net: ``"residual_mlp"`` (default) or ``"tutorial"`` (the tutorial's 15-20-15-1 MLP).
        lr: Adam(W) learning rate.
        weight_decay: AdamW weight decay.
        hidden: width of the residual MLP.
        dropout: dropout of the residual MLP.
    """

    monitor = "val/loss"
    monitor_mode = "min"

    def __init__(
        self,
        num_features: int,
        net: TitanicNet = "residual_mlp",
        lr: float = 3e-3,
        weight_decay: float = 1e-2,
        hidden: int = 64,
        dropout: float = 0.3,
        preprocessing: dict[str, Any] | None = None,
    ) -> None:
        metrics = MetricCollection({"acc": BinaryAccuracy(), "auroc": BinaryAUROC(), "f1": BinaryF1Score()})
        super().__init__(metrics, preprocessing)
        self.save_hyperparameters(ignore=["preprocessing"], logger=False)
        self.example_input_array = torch.zeros(1, num_features)
        if net == "tutorial":
            self.net = TutorialMLP(num_features)
        elif net == "residual_mlp":
            self.net = ResidualMLP(num_features, hidden=hidden, dropout=dropout)
        else:
            raise ValueError(f"unknown Titanic net {net!r}; choose 'residual_mlp' or 'tutorial'")

    def to_predictions(self, outputs: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(outputs)

    def shared_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        features, target = batch
        logits = self(features)
        loss = F.binary_cross_entropy_with_logits(logits, target.float())
        return {"loss": loss, "preds": self.to_predictions(logits), "target": target}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.hparams.net == "tutorial":
            return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    @torch.no_grad()
    def predict_raw(self, passengers: Sequence[Passenger]) -> list[dict[str, Any]]:
        """Score parsed passengers (``datamodules.titanic.read_passengers(path, with_label=False)``).

        Uses the encoding and training statistics stored with the checkpoint.
        Returns ``{"survived": 0 | 1, "probability": float}`` per passenger.
        """
        if not passengers:
            return []
        features = encode_passengers(list(passengers), self.preprocessing).to(self.device)
        with self.eval_mode():
            probabilities = self.to_predictions(self(features)).cpu().tolist()
        return [{"survived": int(p >= 0.5), "probability": p} for p in probabilities]
