"""Titanic survival LightningModule."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, get_args

import torch
from torch import nn

from datamodules.titanic import EXTENDED_FEATURES, Passenger, encode_passengers
from lightning_app.models.classifier import ClassifierModule
from lightning_app.nets import ResidualMLP, TutorialMLP
from lightning_app.optim import OptimizerSpec, check_choice

TitanicNet = Literal["residual_mlp", "tutorial"]
TitanicOptimizer = Literal["adamw", "adam"]


class TitanicModule(ClassifierModule):
    """Binary survival classifier over encoded passenger features.

    Batch: ``(features float32[B, num_features], survived int64[B])``.
    ``preds`` are survival probabilities ``float32[B]``. Built with no arguments
    it is the registry's default model for the default ``TitanicDataModule()``.

    Args:
        num_features: input width (from ``TitanicDataModule.model_kwargs()``; the default
            is the width of the default ``"extended"`` feature set).
        net: ``"residual_mlp"`` (:class:`~lightning_app.nets.ResidualMLP`), ``"tutorial"``
            (the tutorial's 15-20-15-1 MLP), or any ``nn.Module`` mapping
            ``float32[B, num_features]`` to logits ``float32[B]``.
        lr: learning rate.
        optimizer: ``"adamw"`` (with ``weight_decay``) or ``"adam"`` (the tutorial's, no weight decay); a name
            of :data:`lightning_app.optim.OPTIMIZERS` (see :meth:`optimizer_spec`).
        weight_decay: AdamW weight decay (``"adam"`` ignores it, as the tutorial has none).
        hidden: width of the residual MLP.
        dropout: dropout of the residual MLP.
        preprocessing: ``TitanicDataModule.preprocessing_state()`` (feature set and training statistics).
    """

    monitor = "val/loss"
    monitor_mode = "min"
    sizes_from_data = ("num_features",)
    default_class_names = ("died", "survived")
    legacy_settings = (("optimizer", {"tutorial": {"optimizer": "adam"}}),)

    def __init__(
        self,
        num_features: int = len(EXTENDED_FEATURES),
        net: TitanicNet | nn.Module = "residual_mlp",
        lr: float = 3e-3,
        optimizer: TitanicOptimizer = "adamw",
        weight_decay: float = 1e-2,
        hidden: int = 64,
        dropout: float = 0.3,
        preprocessing: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(num_classes=2, preprocessing=preprocessing)
        self.save_hyperparameters(ignore=["net", "preprocessing"], logger=False)
        check_choice("Titanic optimizer", optimizer, get_args(TitanicOptimizer))
        self.example_input_array = torch.zeros(1, num_features)
        self.net = self.build_net(
            net,
            {
                "residual_mlp": lambda: ResidualMLP(num_features, hidden=hidden, dropout=dropout),
                "tutorial": lambda: TutorialMLP(num_features),
            },
        )

    def optimizer_spec(self) -> OptimizerSpec:
        """``optimizer`` at a constant ``lr``; ``weight_decay`` applies to AdamW only (decoupled), the tutorial's
        Adam has none."""
        weight_decay = self.hparams.weight_decay if self.hparams.optimizer == "adamw" else None
        return OptimizerSpec(self.hparams.optimizer, lr=self.hparams.lr, weight_decay=weight_decay)

    def predict_raw(self, passengers: Sequence[Passenger]) -> list[dict[str, Any]]:
        """Score parsed passengers (``datamodules.titanic.read_passengers(path, with_label=False)``).

        Uses the encoding and training statistics stored with the checkpoint. Returns
        :meth:`~lightning_app.models.classifier.ClassifierModule.label_records`: ``label`` is ``"survived"``
        or ``"died"``, ``probabilities["survived"]`` the survival probability.
        """
        if not passengers:
            return []
        return self.score_encoded(encode_passengers(list(passengers), self.preprocessing))
