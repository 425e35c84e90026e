"""COVID-19 daily forecast LightningModule."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn
from torchmetrics import MeanAbsoluteError, MetricCollection

from datamodules.covid import daily_differences
from lightning_app.metrics import MeanSquaredPercentageError, mean_squared_percentage_error
from lightning_app.models.base import TaskModule
from lightning_app.nets import ResidualCovidNet, TutorialCovidNet

CovidNet = Literal["residual_lstm", "tutorial"]


class Covid19Module(TaskModule):
    """One-day-ahead forecaster of daily (confirmed, cured, dead) increments.

    Batch: ``(window float32[B, window, 3], target float32[B, 3])``. Trained
    with the tutorial's MSPE loss and Adagrad. Every stage also scores the
    persistence forecast (tomorrow = today) as ``<stage>/persistence_mspe`` and
    ``<stage>/persistence_mae``, so the model is always read against it. Built
    with no arguments it is the registry's default model.

    Args:
        num_series: series per day (from ``Covid19DataModule.model_kwargs()``).
        net: ``"residual_lstm"`` (:class:`~lightning_app.nets.ResidualCovidNet`, which starts as
            persistence), ``"tutorial"`` (LSTM of width ``num_series`` on raw counts), or any
            ``nn.Module`` mapping ``float32[B, window, num_series]`` to ``float32[B, num_series]``.
        lr: Adagrad learning rate.
        loss: training loss; ``"mspe"`` (mean squared percentage error, the tutorial's).
        num_layers: LSTM layers (the tutorial's 5).
        hidden_size: LSTM width of ``"residual_lstm"`` (the tutorial's net has width ``num_series``).
    """

    monitor = "val/mspe"
    monitor_mode = "min"
    sizes_from_data = ("num_series",)
    baseline_name = "persistence"

    def __init__(
        self,
        num_series: int = 3,
        net: CovidNet | nn.Module = "residual_lstm",
        lr: float = 0.05,
        loss: Literal["mspe"] = "mspe",
        num_layers: int = 1,
        hidden_size: int = 16,
        preprocessing: dict[str, Any] | None = None,
    ) -> None:
        if loss != "mspe":
            raise ValueError(f"unknown COVID-19 loss {loss!r}; choose 'mspe'")
        metrics = MetricCollection({"mspe": MeanSquaredPercentageError(), "mae": MeanAbsoluteError()})
        super().__init__(metrics, preprocessing)
        self.save_hyperparameters(ignore=["net", "preprocessing"], logger=False)
        window = int(self.preprocessing.get("window", 8))
        self.example_input_array = torch.zeros(1, window, num_series)
        self.net = self.build_net(
            net,
            {
                "residual_lstm": lambda: ResidualCovidNet(num_series, hidden_size=hidden_size, num_layers=num_layers),
                "tutorial": lambda: TutorialCovidNet(num_series=num_series, num_layers=num_layers),
            },
        )

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
