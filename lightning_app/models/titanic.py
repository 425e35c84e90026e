"""Titanic survival LightningModule; also any CSV table's classes (binary or multi-class)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch import nn

from datamodules import tabular
from datamodules.titanic import EXTENDED_FEATURES, Passenger, encode_passengers, parse_passenger
from lightning_app.models.classifier import ClassifierModule
from lightning_app.nets import ResidualMLP, TutorialMLP
from lightning_app.optim import OptimizerSpec, check_choice

TitanicNet = Literal["residual_mlp", "tutorial"]
TitanicOptimizer = Literal["adamw", "adam"]


class TitanicModule(ClassifierModule):
    """Binary survival classifier over encoded passenger features; any table's classifier with ``num_classes``.

    Batch: ``(features float32[B, num_features], label int64[B])``.
    ``preds`` are survival probabilities ``float32[B]`` (two classes) or ``float32[B, num_classes]``.
    Built with no arguments it is the registry's default model for the default ``TitanicDataModule()``.

    Args:
        num_features: input width (from ``TitanicDataModule.model_kwargs()``; the default
            is the width of the default ``"extended"`` feature set).
        num_classes: classes of the target (from ``model_kwargs()``; 2 for Titanic): one logit for two, else
            one per class.
        net: ``"residual_mlp"`` (:class:`~lightning_app.nets.ResidualMLP`), ``"tutorial"``
            (the tutorial's 15-20-15-1 MLP), or any ``nn.Module`` mapping
            ``float32[B, num_features]`` to logits ``float32[B]`` (``float32[B, num_classes]`` above two classes).
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
    sizes_from_data = ("num_features", "num_classes")
    default_class_names = ("died", "survived")
    legacy_settings = (("optimizer", {"tutorial": {"optimizer": "adam"}}),)

    def __init__(
        self,
        num_features: int = len(EXTENDED_FEATURES),
        num_classes: int = 2,
        net: TitanicNet | nn.Module = "residual_mlp",
        lr: float = 3e-3,
        optimizer: TitanicOptimizer = "adamw",
        weight_decay: float = 1e-2,
        hidden: int = 64,
        dropout: float = 0.3,
        preprocessing: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(num_classes=num_classes, preprocessing=preprocessing)
        self.save_hyperparameters(ignore=["net", "preprocessing"], logger=False)
        check_choice("Titanic optimizer", optimizer, get_args(TitanicOptimizer))
        self.example_input_array = torch.zeros(1, num_features)
        self.net = self.build_net(
            net,
            {
                "residual_mlp": lambda: ResidualMLP(
                    num_features, hidden=hidden, dropout=dropout, num_outputs=self.num_outputs
                ),
                "tutorial": lambda: TutorialMLP(num_features, num_outputs=self.num_outputs),
            },
        )

    def optimizer_spec(self) -> OptimizerSpec:
        """``optimizer`` at a constant ``lr``; ``weight_decay`` applies to AdamW only (decoupled), the tutorial's
        Adam has none."""
        weight_decay = self.hparams.weight_decay if self.hparams.optimizer == "adamw" else None
        return OptimizerSpec(self.hparams.optimizer, lr=self.hparams.lr, weight_decay=weight_decay)

    def predict_raw(self, rows: Sequence[Passenger | tabular.TabularRow | dict[str, str]]) -> list[dict[str, Any]]:
        """Score raw rows with the encoding and training statistics stored with the checkpoint.

        ``rows`` are parsed passengers (``datamodules.titanic.read_passengers(path, with_label=False)``) for the
        Titanic encodings, typed rows (``datamodules.tabular.parse_row``) for a table's, or CSV rows as
        ``{column: text}`` dicts for either. Returns
        :meth:`~lightning_app.models.classifier.ClassifierModule.label_records`: for Titanic ``label`` is
        ``"survived"`` or ``"died"`` and ``probabilities["survived"]`` the survival probability; for a table the
        class names are its target's values.
        """
        if not rows:
            return []
        state = self.preprocessing
        given = Path("<rows>")
        if state.get("feature_set") == "generic":
            typed = [
                tabular.parse_row(given, at, row, state) if isinstance(row, dict) else row
                for at, row in enumerate(rows, start=1)
            ]
            if not all(isinstance(row, tabular.TabularRow) for row in typed):
                raise TypeError("this checkpoint encodes table rows: pass dicts of CSV values or TabularRow")
            return self.score_encoded(tabular.encode_rows(typed, state))  # type: ignore[arg-type]
        passengers = [
            parse_passenger(given, at, row, with_label=False) if isinstance(row, dict) else row
            for at, row in enumerate(rows, start=1)
        ]
        if not all(isinstance(p, Passenger) for p in passengers):
            raise TypeError("this checkpoint encodes Titanic passengers: pass Passenger or dicts of CSV values")
        return self.score_encoded(encode_passengers(passengers, state))  # type: ignore[arg-type]
