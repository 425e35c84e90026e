"""Daily count forecast LightningModule (COVID-19 by default, any daily series or panel of series with --data-dir)."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple, Protocol, get_args, runtime_checkable

import torch
from torch import nn
from torchmetrics import MetricCollection

from datamodules.count_series import level_index
from datamodules.covid import daily_from_state
from lightning_app.forecast_scores import QUANTILE_LEVELS, pinball_loss
from lightning_app.metrics import (
    ForecastScores,
    MeanAbsoluteScaledError,
    MeanSquaredPercentageError,
    SeriesMeanAbsoluteError,
    mean_squared_percentage_error,
)
from lightning_app.models.base import Stage, TaskModule
from lightning_app.nets import (
    LogTrendCovidNet,
    QuantileCovidNet,
    ResidualCovidNet,
    TutorialCovidNet,
    damped_log_trend,
    log1p_counts,
)
from lightning_app.nets.sequence import MAX_LOG_COUNT
from lightning_app.optim import OptimizerSpec, check_choice

CovidNet = Literal["quantile_mlp", "log_trend", "residual_lstm", "tutorial"]
CovidLoss = Literal["pinball", "log_l1", "mase", "mspe"]
CovidOptimizer = Literal["adam", "adamw", "adagrad"]
CovidAnchor = Literal["last", "baseline"]
#: Metrics computed per series (vectors over the file's columns).
PER_SERIES_METRICS = ("mae", "mase", "trend_mae", "trend_mase")
#: Days of the multi-step forecast scored at the start of the test period.
ROLLOUT_DAYS = 7
#: The quantile levels every forecast gives (the US COVID-19 Forecast Hub's 23).
LEVELS = QUANTILE_LEVELS
#: Per-series test figures logged as ``test/series/<name>/<figure>``.
SERIES_FIGURES = ("relative_wis", "relative_mae", "coverage_80", "mase_h1")


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
    """A multi-day forecast of ``C`` series: the median ``point``, the ``lower`` / ``upper`` ends of the module's
    ``interval`` and all ``quantiles`` at :data:`LEVELS` (``float32[days, C]``, ``[days, C]``, ``[days, C]``,
    ``[days, C, L]``)."""

    point: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    quantiles: torch.Tensor

    def interval(self, width: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lower, upper)`` of the central ``width``% interval (50, 80, 95, ... : a pair of :data:`LEVELS`)."""
        tail = (1 - width / 100) / 2
        return self.quantiles[..., level_index(tail)], self.quantiles[..., level_index(1 - tail)]


def mean_absolute_scaled_loss(preds: torch.Tensor, target: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
    """Mean over series of MAE / the baseline's MAE on the batch (at least 1 count a day, so a flat batch is safe)."""
    scale = (baseline - target).abs().mean(0).clamp_min(1.0)
    return ((preds - target).abs().mean(0) / scale).mean()


def masked_log_pinball_loss(log_quantiles: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean pinball loss of ``float[B, H, C, L]`` quantiles on the ``log1p`` scale against ``float[B, H, C]``
    counts, NaN targets left out (their terms are multiplied by 0, so their gradients are 0 too)."""
    scored = ~target.isnan()
    counts = torch.where(scored, target, torch.zeros_like(target))
    losses = pinball_loss(log_quantiles, LEVELS, log1p_counts(counts)).mean(-1)
    return (losses * scored).sum() / scored.sum().clamp_min(1)


class Covid19Module(TaskModule):
    """Forecaster of daily counts 1..``horizon`` days ahead, with quantiles (the bundled file: confirmed, cured,
    dead; any series or panel of series with ``--data-dir``).

    Batch: ``(window float32[B, window, C], target float32[B, horizon, C], series int64[B],
    baseline float32[B, horizon, C, L])`` as :class:`~datamodules.Covid19DataModule` serves it.

    Scores, logged per stage:

    * one day ahead, against persistence (tomorrow = today): ``<stage>/mae`` and ``<stage>/persistence_mae``
      overall and per column (``<stage>/mae_<column>``), ``<stage>/mase_<column>`` = model MAE / persistence MAE
      and their mean ``<stage>/mase``, the same for a damped log-trend baseline (``<stage>/trend_mase``), and the
      tutorial's MSPE;
    * (validation and test) every horizon, as the forecast hubs score: ``<stage>/wis`` (weighted interval score),
      ``<stage>/relative_wis`` against the hubs' baseline (last value flat, quantiles from the series' past
      one-day changes widened by sqrt(h)), ``<stage>/mae_median`` and ``<stage>/relative_mae`` against
      persistence, ``<stage>/coverage_50|80|95``, each also per horizon (``_h<N>``); the test stage adds
      ``test/series/<name>/<figure>`` per series (:data:`SERIES_FIGURES`) and a 7-day roll-out from the start of
      the test period when the DataModule is a :class:`RolloutSource` (``test/rollout_mae``).

    The console report is :func:`lightning_app.reporting.forecast_sections`. Built with no arguments it is the
    registry's default model. Checkpoints are selected on ``val/relative_wis``.

    Quantiles: ``"quantile_mlp"`` forecasts them directly (trained with the pinball loss on ``log1p`` counts, every
    horizon and level); by default (``anchor="baseline"``) it starts from the hubs' baseline computed from the
    window and learns corrections of its whole quantile fan. The point nets forecast one day; they are rolled out
    ``horizon`` days (feeding forecasts back) and given quantiles from the validation residuals: after every
    validation epoch the module keeps the quantiles of the one-day ``log1p`` residuals per column (a buffer, so a
    checkpoint holds those of its own weights) and widens them with the square root of the horizon.

    Args:
        num_series: count columns per day (from ``Covid19DataModule.model_kwargs()``).
        horizon: days forecast (from ``Covid19DataModule.model_kwargs()``).
        window: days of history per forecast (from ``Covid19DataModule.model_kwargs()``; checkpoints from before it
            was a hyperparameter keep theirs in the preprocessing state).
        net: ``"quantile_mlp"`` (:class:`~lightning_app.nets.QuantileCovidNet`, the default: MLPs across series,
            windows scaled by their level on the ``log1p`` scale, all horizons and quantiles at once as corrections
            of the hubs' baseline fan),
            ``"log_trend"`` (:class:`~lightning_app.nets.LogTrendCovidNet`: persistence on log counts plus learned
            level and trend coefficients), ``"residual_lstm"`` (an LSTM correction of persistence), ``"tutorial"``
            (5-layer LSTM of width ``num_series`` on raw counts with the multiplicative block), or an ``nn.Module``
            mapping ``float32[B, window, num_series]`` to ``float32[B, num_series]`` (a point net) or a
            :class:`~lightning_app.nets.QuantileCovidNet` subclass.
        lr: learning rate.
        loss: ``"pinball"`` (the quantile loss on ``log1p`` counts; ``"quantile_mlp"`` only), ``"log_l1"`` (mean
            absolute error on ``log1p`` counts), ``"mase"`` (MAE per column divided by persistence's on the batch) or
            ``"mspe"`` (the tutorial's); ``None``: ``"pinball"`` for ``"quantile_mlp"``, else ``"log_l1"``.
        optimizer: ``"adam"``, ``"adamw"`` or ``"adagrad"`` (the tutorial's): a name of
            :data:`lightning_app.optim.OPTIMIZERS`.
        weight_decay: weight decay of the optimizer.
        num_layers: LSTM layers (``"residual_lstm"``, ``"tutorial"``: the tutorial's 5).
        hidden_size: width of ``"quantile_mlp"``, of ``"residual_lstm"``'s LSTM, of ``"log_trend"``'s heads.
        heads: MLP correction heads averaged on top of ``"log_trend"``'s coefficients (0: none).
        members: MLPs of ``"quantile_mlp"`` trained side by side and averaged (an ensemble).
        anchor: where ``"quantile_mlp"``'s quantiles start: ``"last"`` (the last day, with learned gaps) or
            ``"baseline"`` (the hubs' baseline computed from the window, its whole quantile fan, which the MLPs
            shift and rescale; untrained it is the baseline).
        dropout: dropout after each hidden layer of ``"quantile_mlp"``'s MLPs (training only).
        widen: factor on ``"quantile_mlp"``'s distances from the median on the ``log1p`` scale in its forecasts
            (not in the loss; 1: none): 1.04 lifts 80% coverage on series not trained on to 0.76-0.77 (backtest).
        interval: coverage of :class:`Forecast`'s ``lower`` / ``upper`` (0.8: the 10th to the 90th percentile).
    """

    monitor = "val/relative_wis"
    monitor_mode = "min"
    sizes_from_data = ("num_series", "horizon", "window")
    baseline_name = "persistence"
    #: Checkpoints from before ``optimizer`` existed trained both nets with Adagrad on MSPE.
    legacy_settings = (("optimizer", {"*": {"optimizer": "adagrad", "loss": "mspe"}}),)

    def __init__(
        self,
        num_series: int = 3,
        horizon: int = 7,
        window: int = 14,
        net: CovidNet | nn.Module = "quantile_mlp",
        lr: float = 0.003,
        loss: CovidLoss | None = None,
        optimizer: CovidOptimizer = "adamw",
        weight_decay: float = 1e-4,
        num_layers: int = 1,
        hidden_size: int = 64,
        heads: int = 0,
        members: int = 5,
        anchor: CovidAnchor = "baseline",
        dropout: float = 0.2,
        widen: float = 1.04,
        interval: float = 0.8,
        preprocessing: dict[str, Any] | None = None,
    ) -> None:
        direct = net == "quantile_mlp" or isinstance(net, QuantileCovidNet)
        loss = loss or ("pinball" if direct else "log_l1")
        check_choice("COVID-19 loss", loss, get_args(CovidLoss))
        if (loss == "pinball") != direct:
            raise ValueError("loss 'pinball' goes with net 'quantile_mlp' (quantiles), and only with it")
        check_choice("COVID-19 optimizer", optimizer, get_args(CovidOptimizer))
        check_choice("COVID-19 anchor", anchor, get_args(CovidAnchor))
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
        self.hparams["loss"] = loss
        window = int(self.preprocessing.get("window", window))
        self.example_input_array = torch.zeros(1, window, num_series)
        self.net = self.build_net(
            net,
            {
                "quantile_mlp": lambda: QuantileCovidNet(
                    num_series,
                    window,
                    horizon,
                    LEVELS,
                    hidden_size=hidden_size,
                    members=members,
                    anchor=anchor,
                    dropout=dropout,
                    widen=widen,
                ),
                "log_trend": lambda: LogTrendCovidNet(num_series, window, heads=heads, hidden_size=hidden_size),
                "residual_lstm": lambda: ResidualCovidNet(num_series, hidden_size=hidden_size, num_layers=num_layers),
                "tutorial": lambda: TutorialCovidNet(num_series=num_series, num_layers=num_layers),
            },
        )
        self.direct_quantiles = isinstance(self.net, QuantileCovidNet)
        self.val_forecast_scores = ForecastScores(LEVELS)
        self.test_forecast_scores = ForecastScores(LEVELS)
        #: Quantiles at :data:`LEVELS` of the last validation epoch's one-day log1p residuals, ``float32[L, C]``.
        self.register_buffer("residual_quantiles", torch.zeros(len(LEVELS), num_series))
        self._val_residuals: list[torch.Tensor] = []

    @property
    def series_names(self) -> list[str]:
        """The count columns (``confirmed_num``, ...)."""
        columns = self.preprocessing.get("columns")
        return list(columns) if columns else [f"series{i}" for i in range(self.hparams.num_series)]

    @property
    def panel_names(self) -> list[str]:
        """The scored series of the training data (their index in a batch's ``series``), e.g. ``["covid19"]``."""
        return list(self.preprocessing.get("series_names", []))

    def shared_step(self, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        window, target = batch[0], batch[1]
        next_day = target[:, 0]
        if self.direct_quantiles:
            log_quantiles = self.net.forward_log(window)
            loss = masked_log_pinball_loss(log_quantiles, target)
            # The loss is a mean over the scored days: weigh it by them in the epoch's mean, so that the logged
            # loss of a split does not depend on how it is cut into batches or shared between processes.
            weight = (~target.isnan()).sum()
            preds = torch.expm1(log_quantiles[:, 0, :, level_index(0.5)].clamp(0, MAX_LOG_COUNT))
            return {"loss": loss, "loss_weight": weight, **self._one_day_outputs(preds, next_day, window)}
        preds = self(window)
        loss = self.point_loss(preds, next_day, window[:, -1, :])
        return {"loss": loss, **self._one_day_outputs(preds, next_day, window)}

    @staticmethod
    def _one_day_outputs(preds: torch.Tensor, next_day: torch.Tensor, window: torch.Tensor) -> dict[str, torch.Tensor]:
        """The one-day forecast beside persistence and the damped log-trend, as the one-day metrics read them."""
        return {
            "preds": preds,
            "target": next_day,
            "baseline": window[:, -1, :].contiguous(),
            "trend": damped_log_trend(window),
        }

    def point_loss(self, preds: torch.Tensor, target: torch.Tensor, persistence: torch.Tensor) -> torch.Tensor:
        if self.hparams.loss == "mspe":
            return mean_squared_percentage_error(preds, target)
        if self.hparams.loss == "mase":
            return mean_absolute_scaled_loss(preds, target, persistence)
        return (log1p_counts(preds) - log1p_counts(target)).abs().mean()

    def optimizer_spec(self) -> OptimizerSpec:
        """``optimizer`` with ``weight_decay`` at a constant ``lr``."""
        return OptimizerSpec(self.hparams.optimizer, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    # -- forecasts ------------------------------------------------------------
    def quantile_forecast(self, window: torch.Tensor) -> torch.Tensor:
        """Count quantiles at :data:`LEVELS` for the next ``horizon`` days: ``float32[B, window, C]`` daily counts
        (the model's window; longer windows are cut to their last days) -> ``float32[B, horizon, C, L]``, never
        negative, never crossing."""
        window = window[:, -self.example_input_array.shape[1] :]
        if self.direct_quantiles:
            return self.net(window)
        points = []
        for _ in range(self.hparams.horizon):
            next_day = self(window)
            points.append(next_day)
            window = torch.cat([window[:, 1:], next_day.unsqueeze(1)], dim=1)
        center = log1p_counts(torch.stack(points, dim=1)).unsqueeze(-1)  # [B, H, C, 1]
        widen = torch.arange(1, self.hparams.horizon + 1, device=center.device).sqrt().view(1, -1, 1, 1)
        spread = self.residual_quantiles.T.unsqueeze(0).unsqueeze(0)  # [1, 1, C, L]
        return torch.expm1((center + spread * widen).clamp_min(0))

    @torch.no_grad()
    def forecast(self, days: int, recent_increments: torch.Tensor | None = None) -> Forecast:
        """Forecast ``days`` days past ``recent_increments`` (``float32[T >= window, C]`` daily values; default: the
        end of the first series stored in the checkpoint): the median, the ``interval`` and every quantile.

        Beyond ``horizon`` days the forecast continues from its own medians, horizon by horizon (its intervals then
        understate the uncertainty)."""
        if days < 1:
            raise ValueError(f"days must be at least 1, got {days}")
        if recent_increments is None:
            try:
                recent_increments = daily_from_state(self.preprocessing)[1]
            except ValueError:
                raise ValueError("no history given and none stored in this module's preprocessing state") from None
        window_size = self.example_input_array.shape[1]
        if len(recent_increments) < window_size:
            raise ValueError(f"need at least {window_size} days of history, got {len(recent_increments)}")
        history = recent_increments[-window_size:].to(self.device, torch.float32).unsqueeze(0)
        chunks = []
        with self.eval_mode():
            while sum(len(chunk) for chunk in chunks) < days:
                quantiles = self.quantile_forecast(history)  # [1, H, C, L]
                chunks.append(quantiles[0])
                history = torch.cat([history, quantiles[:, :, :, level_index(0.5)]], dim=1)[:, -window_size:]
        quantiles = torch.cat(chunks)[:days].cpu()
        tail = (1 - self.hparams.interval) / 2
        lower, upper = quantiles[..., level_index(tail)], quantiles[..., level_index(1 - tail)]
        return Forecast(quantiles[..., level_index(0.5)], lower, upper, quantiles)

    # -- metrics --------------------------------------------------------------
    def scalar_metrics(self, name: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-column metrics become ``<name>`` (their mean over columns) and ``<name>_<column>``."""
        metric = name.rpartition("/")[2].removeprefix(f"{self.baseline_name}_")
        if metric not in PER_SERIES_METRICS:
            return super().scalar_metrics(name, value)
        value = value.reshape(-1)  # torchmetrics returns a one-series vector as a scalar
        values = {name: value.mean()}
        values.update({f"{name}_{column}": item for column, item in zip(self.series_names, value, strict=True)})
        return values

    def _score_forecasts(self, stage: Stage, batch: tuple[torch.Tensor, ...]) -> None:
        window, target, series, baseline = batch
        with torch.no_grad():
            quantiles = self.quantile_forecast(window)
        getattr(self, f"{stage}_forecast_scores").update(quantiles, target, baseline, series)

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        out = super().validation_step(batch, batch_idx)
        self._score_forecasts("val", batch)
        self._val_residuals.append(log1p_counts(out["target"]) - log1p_counts(out["preds"]))
        return out

    def test_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        out = super().test_step(batch, batch_idx)
        self._score_forecasts("test", batch)
        return out

    def compute_epoch_metrics(self, stage: Stage) -> dict[str, torch.Tensor]:
        """The base's metrics plus, for validation and test, the forecast scores (and, for test, per series)."""
        values = super().compute_epoch_metrics(stage)
        scores: ForecastScores | None = getattr(self, f"{stage}_forecast_scores", None)
        if scores is None or scores.update_count == 0:
            return values
        for name, value in scores.compute().items():
            values[f"{stage}/{name.replace('mae', 'mae_median', 1) if name.startswith('mae') else name}"] = value
        if stage == "test":
            names = self.panel_names
            with scores.sync_context():  # per_series reads the states: those of every process
                per_series = scores.per_series()
            for index, figures in per_series.items():
                label = names[index] if index < len(names) else f"series{index}"
                values.update({f"test/series/{label}/{name}": torch.tensor(figures[name]) for name in SERIES_FIGURES})
        scores.reset()
        return values

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if not self._val_residuals:
            return
        residuals = torch.cat(self._val_residuals)
        self._val_residuals.clear()
        if self.trainer is not None and self.trainer.world_size > 1:
            residuals = self.all_gather(residuals).reshape(-1, residuals.shape[-1])
        levels = torch.tensor(LEVELS, device=residuals.device)
        quantiles = torch.quantile(residuals.float(), levels, dim=0)  # [L, C]
        # The median is the point forecast itself, and the interval always holds it.
        below, above = levels < 0.5, levels > 0.5
        quantiles[below] = quantiles[below].clamp_max(0)
        quantiles[above] = quantiles[above].clamp_min(0)
        quantiles[~(below | above)] = 0
        self.residual_quantiles.copy_(quantiles)

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
        if "window" not in (checkpoint.get("hyper_parameters") or {}):  # its window is in its preprocessing state
            window = int(self.preprocessing.get("window", self.example_input_array.shape[1]))
            self.example_input_array = torch.zeros(1, window, self.hparams.num_series)
        state = checkpoint.get("state_dict", {})
        saved = state.get("residual_quantiles")
        if saved is None or saved.shape != self.residual_quantiles.shape:
            # Written before forecast intervals existed, or with two levels only: a zero-width interval.
            state["residual_quantiles"] = torch.zeros_like(self.residual_quantiles)
