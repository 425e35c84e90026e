"""COVID-19 daily forecast LightningModule."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import MeanAbsoluteError, MetricCollection

from datamodules.covid import daily_differences
from lightning_app.metrics import MeanSquaredPercentageError, mean_squared_percentage_error
from lightning_app.models.base import TaskModule
from lightning_app.nets import ResidualCovidNet, TutorialCovidNet


class Covid19Module(TaskModule):
    """One-day-ahead forecaster of daily (confirmed, cured, dead) increments.

    Batch: ``(window float32[B, window, 3], target float32[B, 3])``. Trained
    with the tutorial's MSPE loss and Adagrad. Every stage also scores the
    persistence forecast (tomorrow = today) as ``<stage>/persistence_mspe`` and
    ``<stage>/persistence_mae``, so the model is always read against it.

    Args:
        num_series: series per day (from ``Covid19DataModule.model_kwargs()``).
        net: ``"tutorial"`` (5-layer LSTM of width 3 on raw counts) or ``"residual_lstm"``
            (:class:`~lightning_app.nets.ResidualCovidNet`, which starts as persistence).
        lr: Adagrad learning rate (the tutorial's 0.1).
        num_layers: LSTM layers (the tutorial's 5).
        hidden_size: LSTM width of ``"residual_lstm"`` (the tutorial's net has width ``num_series``).
    """

    monitor = "val/mspe"
    monitor_mode = "min"
    baseline_name = "persistence"

    def __init__(
        self,
        num_series: int = 3,
        net: str = "tutorial",
        lr: float = 0.1,
        num_layers: int = 5,
        hidden_size: int = 16,
        preprocessing: dict[str, Any] | None = None,
    ) -> None:
        metrics = MetricCollection({"mspe": MeanSquaredPercentageError(), "mae": MeanAbsoluteError()})
        super().__init__(metrics, preprocessing)
        self.save_hyperparameters(ignore=["preprocessing"], logger=False)
        window = int(self.preprocessing.get("window", 8))
        self.example_input_array = torch.zeros(1, window, num_series)
        if net == "tutorial":
            self.net = TutorialCovidNet(num_series=num_series, num_layers=num_layers)
        elif net == "residual_lstm":
            self.net = ResidualCovidNet(num_series=num_series, hidden_size=hidden_size, num_layers=num_layers)
        else:
            raise ValueError(f"unknown COVID-19 net {net!r}; choose 'tutorial' or 'residual_lstm'")

    def shared_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        window, target = batch
        preds = self(window)
        return {
            "loss": mean_squared_percentage_error(preds, target),
            "preds": preds,
            "target": target,
            "baseline": window[:, -1, :].contiguous(),
        }

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adagrad(self.parameters(), lr=self.hparams.lr)

    @torch.no_grad()
    def forecast(self, days: int, recent_increments: torch.Tensor | None = None) -> torch.Tensor:
        """Roll the model forward ``days`` days, feeding each forecast back as input.

        ``recent_increments`` (``float32[T >= window, 3]`` daily increments)
        defaults to the end of the series stored in the checkpoint. Returns
        ``float32[days, 3]`` forecast daily increments.
        """
        if days < 1:
            raise ValueError(f"days must be at least 1, got {days}")
        if recent_increments is None:
            if "cumulative" not in self.preprocessing:
                raise ValueError("no history given and none stored in this module's preprocessing state")
            recent_increments = daily_differences(torch.tensor(self.preprocessing["cumulative"]))
        window_size = int(self.preprocessing.get("window", len(recent_increments)))
        if len(recent_increments) < window_size:
            raise ValueError(f"need at least {window_size} days of history, got {len(recent_increments)}")
        window = recent_increments[-window_size:].to(self.device, torch.float32).unsqueeze(0)
        forecasts = []
        with self.eval_mode():
            for _ in range(days):
                next_day = self(window)
                forecasts.append(next_day[0])
                window = torch.cat([window[:, 1:], next_day.unsqueeze(1)], dim=1)
        return torch.stack(forecasts).cpu()
