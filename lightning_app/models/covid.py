"""Daily count forecast LightningModule (COVID-19 by default, any daily series with --data-dir)."""

from __future__ import annotations

import math
from typing import Any, Literal, NamedTuple, Protocol, get_args, runtime_checkable

import torch
from torch import nn
from torchmetrics import MetricCollection

from datamodules.covid import daily_from_state
from lightning_app.metrics import (
    MeanAbsoluteScaledError,
    MeanSquaredPercentageError,
    SeriesMeanAbsoluteError,
    mean_squared_percentage_error,
)
from lightning_app.models.base import TaskModule
from lightning_app.nets import LogTrendCovidNet, ResidualCovidNet, TutorialCovidNet, damped_log_trend, log1p_counts
from lightning_app.optim import OptimizerSpec, check_choice

CovidNet = Literal["log_trend", "residual_lstm", "tutorial"]
CovidLoss = Literal["log_l1", "mase", "mspe"]
CovidOptimizer = Literal["adam", "adagrad"]
#: Metrics computed per series (vectors over the file's columns).
PER_SERIES_METRICS = ("mae", "mase", "trend_mae", "trend_mase")
#: Days of the multi-step forecast scored at the start of the test period.
ROLLOUT_DAYS = 7


@runtime_checkable
class RolloutSource(Protocol):
    """What :class:`Covid19Module` reads at the end of its test epoch to score a multi-day roll-out.

    The DataModule a Trainer tests the module with provides it (:class:`~datamodules.Covid19DataModule` does); with
    any other DataModule, or none, the test stage logs no roll-out metrics.
    """

    def rollout_period(self, days: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(history float32[T >= window, C], actual float32[D <= days, C])``: the days before the test period
        and its first ``D`` days."""
        ...


class Forecast(NamedTuple):
    """A multi-day forecast: ``float32[days, C]`` point forecasts and the interval around them."""

    point: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor


def mean_absolute_scaled_loss(preds: torch.Tensor, target: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
    """Mean over series of MAE / the baseline's MAE on the batch (at least 1 count a day, so a flat batch is safe)."""
    scale = (baseline - target).abs().mean(0).clamp_min(1.0)
    return ((preds - target).abs().mean(0) / scale).mean()


class Covid19Module(TaskModule):
    """One-day-ahead forecaster of daily counts (the bundled file: confirmed, cured, dead).

    Batch: ``(window float32[B, window, C], target float32[B, C])``. Every stage
    scores the model beside the persistence forecast (tomorrow = today) the way
    forecasters are scored: ``<stage>/mae`` and ``<stage>/persistence_mae``
    overall and per series (``<stage>/mae_<column>``), ``<stage>/mase_<column>``
    = model MAE / persistence MAE on the same days (below 1 beats it) and their
    mean ``<stage>/mase`` (checkpoints are selected on ``val/mase``), the same
    for a damped log-trend baseline (``<stage>/trend_mae_<column>``,
    ``<stage>/trend_mase_<column>``), and the tutorial's MSPE. The test stage
    also scores a 7-day roll-out from the start of the test period, the model
    feeding its forecasts back (``test/rollout_mae``), against persistence held
    flat (``test/persistence_rollout_mae``), when the test DataModule is a
    :class:`RolloutSource` (see :meth:`rollout_source`). Built with no arguments
    it is the registry's default model. The console report of these numbers is
    :func:`lightning_app.reporting.forecast_sections`.

    Forecast intervals: after every validation epoch the module keeps the
    ``(1 - interval) / 2`` and ``(1 + interval) / 2`` quantiles of the
    validation residuals on the ``log1p`` scale per series (a buffer, so every
    checkpoint holds those of its own weights); :meth:`forecast` widens them
    with the square root of the horizon.

    Args:
        num_series: series per day (from ``Covid19DataModule.model_kwargs()``).
        net: ``"log_trend"`` (:class:`~lightning_app.nets.LogTrendCovidNet`: persistence on log counts plus
            learned level and trend coefficients, all starting at zero), ``"residual_lstm"`` (an LSTM correction
            of persistence, the previous default), ``"tutorial"`` (5-layer LSTM of width ``num_series`` on raw
            counts with the multiplicative block), or any ``nn.Module`` mapping ``float32[B, window, num_series]``
            to ``float32[B, num_series]``.
        lr: learning rate.
        loss: ``"log_l1"`` (mean absolute error on ``log1p`` counts: scale-free), ``"mase"`` (MAE per series
            divided by persistence's on the batch) or ``"mspe"`` (the tutorial's mean squared percentage error).
        optimizer: ``"adam"`` or ``"adagrad"`` (the tutorial's): a name of :data:`lightning_app.optim.OPTIMIZERS`.
        weight_decay: L2 penalty of the optimizer.
        num_layers: LSTM layers (``"residual_lstm"``, ``"tutorial"``: the tutorial's 5).
        hidden_size: LSTM width of ``"residual_lstm"``, width of the correction heads of ``"log_trend"``.
        heads: MLP correction heads averaged on top of ``"log_trend"``'s coefficients (0: none).
        interval: coverage of the forecast interval (0.8: from the 10th to the 90th percentile).
    """

    monitor = "val/mase"
    monitor_mode = "min"
    sizes_from_data = ("num_series",)
    baseline_name = "persistence"
    #: Checkpoints from before ``optimizer`` existed trained both nets with Adagrad on MSPE.
    legacy_settings = (("optimizer", {"*": {"optimizer": "adagrad", "loss": "mspe"}}),)

    def __init__(
        self,
        num_series: int = 3,
        net: CovidNet | nn.Module = "log_trend",
        lr: float = 0.01,
        loss: CovidLoss = "log_l1",
        optimizer: CovidOptimizer = "adam",
        weight_decay: float = 0.0,
        num_layers: int = 1,
        hidden_size: int = 16,
        heads: int = 0,
        interval: float = 0.8,
        preprocessing: dict[str, Any] | None = None,
    ) -> None:
        if loss not in ("log_l1", "mase", "mspe"):
            raise ValueError(f"unknown COVID-19 loss {loss!r}; choose 'log_l1', 'mase' or 'mspe'")
        check_choice("COVID-19 optimizer", optimizer, get_args(CovidOptimizer))
        if not 0 < interval < 1:
            raise ValueError(f"interval must be between 0 and 1, got {interval}")
        metrics = MetricCollection(
            {"mspe": MeanSquaredPercentageError(), "mae": SeriesMeanAbsoluteError(num_series)}, compute_groups=False
        )
        paired = MetricCollection(
            {
                "mase": MeanAbsoluteScaledError(num_series),
                "trend_mae": SeriesMeanAbsoluteError(num_series, forecast="trend"),
                "trend_mase": MeanAbsoluteScaledError(num_series, forecast="trend"),
            },
            compute_groups=False,
        )
        super().__init__(metrics, preprocessing, paired_metrics=paired)
        self.save_hyperparameters(ignore=["net", "preprocessing"], logger=False)
        window = int(self.preprocessing.get("window", 8))
        self.example_input_array = torch.zeros(1, window, num_series)
        self.net = self.build_net(
            net,
            {
                "log_trend": lambda: LogTrendCovidNet(num_series, window, heads=heads, hidden_size=hidden_size),
                "residual_lstm": lambda: ResidualCovidNet(num_series, hidden_size=hidden_size, num_layers=num_layers),
                "tutorial": lambda: TutorialCovidNet(num_series=num_series, num_layers=num_layers),
            },
        )
        #: Lower and upper quantiles of the last validation epoch's log1p residuals per series, ``float32[2, C]``.
        self.register_buffer("residual_quantiles", torch.zeros(2, num_series))
        self._val_residuals: list[torch.Tensor] = []

    @property
    def series_names(self) -> list[str]:
        columns = self.preprocessing.get("columns")
        return list(columns) if columns else [f"series{i}" for i in range(self.hparams.num_series)]

    def shared_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        window, target = batch
        preds = self(window)
        persistence = window[:, -1, :].contiguous()
        if self.hparams.loss == "mspe":
            loss = mean_squared_percentage_error(preds, target)
        elif self.hparams.loss == "mase":
            loss = mean_absolute_scaled_loss(preds, target, persistence)
        else:
            loss = (log1p_counts(preds) - log1p_counts(target)).abs().mean()
        return {
            "loss": loss,
            "preds": preds,
            "target": target,
            "baseline": persistence,
            "trend": damped_log_trend(window),
        }

    def optimizer_spec(self) -> OptimizerSpec:
        """``optimizer`` with ``weight_decay`` (L2) at a constant ``lr``."""
        return OptimizerSpec(self.hparams.optimizer, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    # -- metrics --------------------------------------------------------------
    def scalar_metrics(self, name: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-series metrics become ``<name>`` (their mean over series) and ``<name>_<column>``."""
        metric = name.rpartition("/")[2].removeprefix(f"{self.baseline_name}_")
        if metric not in PER_SERIES_METRICS:
            return super().scalar_metrics(name, value)
        value = value.reshape(-1)  # torchmetrics returns a one-series vector as a scalar
        values = {name: value.mean()}
        values.update({f"{name}_{column}": item for column, item in zip(self.series_names, value, strict=True)})
        return values

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        out = super().validation_step(batch, batch_idx)
        self._val_residuals.append(log1p_counts(out["target"]) - log1p_counts(out["preds"]))
        return out

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if not self._val_residuals:
            return
        residuals = torch.cat(self._val_residuals)
        self._val_residuals.clear()
        if self.trainer is not None and self.trainer.world_size > 1:
            residuals = self.all_gather(residuals).reshape(-1, residuals.shape[-1])
        interval = self.hparams.interval
        levels = torch.tensor([(1 - interval) / 2, (1 + interval) / 2], device=residuals.device)
        quantiles = torch.quantile(residuals.float(), levels, dim=0)
        # The interval always holds the point forecast, even when every residual has one sign.
        self.residual_quantiles.copy_(torch.stack([quantiles[0].clamp_max(0), quantiles[1].clamp_min(0)]))

    def rollout_source(self) -> RolloutSource | None:
        """Hook: where the test-time roll-out reads its days: the DataModule the trainer tests with when it is a
        :class:`RolloutSource`, else ``None`` (no roll-out metrics). Override to score another period."""
        datamodule = self.trainer.datamodule
        return datamodule if isinstance(datamodule, RolloutSource) else None

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        source = self.rollout_source()
        if source is None:
            return
        history, actual = source.rollout_period(ROLLOUT_DAYS)
        rollout = self.forecast(len(actual), history).point
        self.log_dict(
            {
                "test/rollout_mae": (rollout - actual).abs().mean(),
                "test/persistence_rollout_mae": (history[-1] - actual).abs().mean(),
            },
            sync_dist=True,
        )

    # -- checkpoints ----------------------------------------------------------
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("state_dict", {})
        if "residual_quantiles" not in state:  # written before forecast intervals existed: a zero-width interval
            state["residual_quantiles"] = torch.zeros_like(self.residual_quantiles)

    # -- forecasting ----------------------------------------------------------
    @torch.no_grad()
    def forecast(self, days: int, recent_increments: torch.Tensor | None = None) -> Forecast:
        """Roll the model forward ``days`` days, feeding each forecast back as input, with an interval per day.

        ``recent_increments`` (``float32[T >= window, C]`` daily values) defaults to the end of the
        series stored in the checkpoint. Returns :class:`Forecast` of ``float32[days, C]`` tensors: the
        point forecast and the interval around it, ``expm1(log1p(point) + q * sqrt(h))`` on day ``h`` with
        ``q`` the validation residual quantiles (clamped at 0).
        """
        if days < 1:
            raise ValueError(f"days must be at least 1, got {days}")
        if recent_increments is None:
            try:
                recent_increments = daily_from_state(self.preprocessing)[1]
            except ValueError:
                raise ValueError("no history given and none stored in this module's preprocessing state") from None
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
        point = torch.stack(forecasts).cpu()
        widen = torch.tensor([math.sqrt(h) for h in range(1, days + 1)]).unsqueeze(-1)
        quantiles = self.residual_quantiles.cpu()
        center = log1p_counts(point)
        lower = torch.expm1((center + quantiles[0] * widen).clamp_min(0))
        upper = torch.expm1(center + quantiles[1] * widen)
        return Forecast(point, torch.minimum(lower, point.clamp_min(0)), torch.maximum(upper, point))
