"""COVID-19 series functions, DataModule splits and the forecast roll-out."""

from __future__ import annotations

import math

import pytest
import torch

from datamodules import PACKAGED_DATA_DIR, Covid19DataModule, DataError
from datamodules.count_series import COUNT_COLUMNS, daily_differences, level_index, make_windows, read_counts
from datamodules.covid import forecast_samples
from lightning_app.metrics import MeanSquaredPercentageError, mean_squared_percentage_error
from lightning_app.models import Covid19Module
from lightning_app.models.covid import LEVELS
from lightning_app.registry import CHINA_ONLY

#: The previous default: persistence on log counts plus learned corrections, all starting at zero.
LOG_TREND = {"net": "log_trend", "hidden_size": 16}


def test_reads_the_bundled_file():
    dates, _, counts = read_counts(PACKAGED_DATA_DIR / "covid19" / "covid-19.csv", "cumulative")
    assert (dates[0], dates[-1], counts.shape) == ("2020-01-24", "2020-03-10", (47, 3))
    assert counts[0].tolist() == [830.0, 34.0, 25.0]


def test_differences_and_windows():
    cumulative = torch.tensor([[1.0], [3.0], [6.0], [10.0], [15.0]])
    diffs = daily_differences(cumulative)
    assert diffs.squeeze(1).tolist() == [2.0, 3.0, 4.0, 5.0]
    inputs, targets = make_windows(diffs, window=2)
    assert inputs.squeeze(-1).tolist() == [[2.0, 3.0], [3.0, 4.0]]
    assert targets.squeeze(-1).tolist() == [4.0, 5.0]


def test_splits_are_in_time_order():
    dm = Covid19DataModule(**CHINA_ONLY)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (24, 7, 7)
    diffs = daily_differences(dm.cumulative)
    # The next-day targets of the test windows are the last seven days; validation the seven before them.
    assert torch.equal(dm.test_set.tensors[1][:, 0], diffs[-7:])
    assert torch.equal(dm.val_set.tensors[1][:, 0], diffs[-14:-7])
    assert torch.equal(dm.train_set.tensors[1][-1, 0], diffs[-15])
    # Later days of a sample stop at the end of its split: no split sees the next one.
    assert torch.equal(dm.test_set.tensors[1][0], diffs[-7:])
    assert dm.val_set.tensors[1][-1, 1:].isnan().all() and not dm.val_set.tensors[1][0].isnan().any()
    assert dm.train_set.tensors[1][-1, 1:].isnan().all()
    window, target, series, baseline = next(iter(dm.train_dataloader()))
    assert window.shape[1:] == (8, 3) and target.shape[1:] == (7, 3) and baseline.shape[1:] == (7, 3, len(LEVELS))
    assert (series == 0).all()


def test_the_default_trains_on_the_bundled_panel_and_tests_on_china_only():
    dm = Covid19DataModule()
    dm.setup("fit")
    assert dm.series_names[0] == "covid19" and len(dm.series_names) == 35
    assert len(dm.test_set) == 7 and (dm.test_set.tensors[2] == 0).all()
    assert set(dm.train_set.tensors[2].tolist()) == set(range(35))
    assert dm.preprocessing_state()["series_names"] == ["covid19"]


def test_mspe_matches_the_tutorial_formula():
    preds, target = torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0]])
    expected = ((2 - 1) ** 2 / 4 + 0) / 2
    assert mean_squared_percentage_error(preds, target).item() == expected
    metric = MeanSquaredPercentageError()
    metric.update(preds, target)
    metric.update(target, target)
    assert metric.compute().item() == expected / 2


def test_forecast_rolls_forward_from_the_stored_history():
    dm = Covid19DataModule(**CHINA_ONLY)
    dm.setup("fit")
    module = Covid19Module(**LOG_TREND, preprocessing=dm.preprocessing_state())
    forecast = module.forecast(days=5).point
    assert forecast.shape == (5, 3)
    # Untrained, the default net is exactly persistence: every day repeats the last known day.
    last_day = daily_differences(dm.cumulative)[-1]
    assert torch.allclose(forecast, last_day.expand(5, 3))
    # Feeding each forecast back in: the second day is the model applied to a window ending in day one.
    torch.manual_seed(0)
    tutorial = Covid19Module(net="tutorial", preprocessing=dm.preprocessing_state()).eval()
    tutorial.hparams.horizon = 2  # one quantile_forecast call, then a second one from the first's medians
    history = daily_differences(dm.cumulative)[-8:]
    rolled = tutorial.forecast(days=2).point
    with torch.no_grad():
        first = tutorial(history.unsqueeze(0))[0]
        second = tutorial(torch.cat([history[1:], first.unsqueeze(0)]).unsqueeze(0))[0]
    assert not torch.allclose(first, second)
    assert torch.allclose(rolled, torch.stack([first, second]))


# ------------------------------------------------------------------------------------------ scoring
def test_mase_and_the_baselines_on_a_hand_computed_series():
    from lightning_app.metrics import MeanAbsoluteScaledError, SeriesMeanAbsoluteError
    from lightning_app.nets import damped_log_trend

    # One series, windows of 3 days; persistence forecasts the last day of each window.
    window = torch.tensor([[[1.0], [3.0], [7.0]], [[3.0], [7.0], [15.0]]])
    target = torch.tensor([[15.0], [31.0]])
    persistence = window[:, -1]
    preds = torch.tensor([[13.0], [30.0]])
    # model errors 2 and 1 (MAE 1.5); persistence errors 8 and 16 (MAE 12): MASE 1.5 / 12
    mae, mase = SeriesMeanAbsoluteError(1), MeanAbsoluteScaledError(1)
    mae.update(preds, target)
    mase.update(preds, target, baseline=persistence)
    assert mae.compute().item() == 1.5 and mase.compute().item() == pytest.approx(0.125)
    # Damped log-trend: log1p of 1, 3, 7 is ln 2, 2 ln 2, 3 ln 2: growth ln 2 a day, half of it added to today.
    assert damped_log_trend(window).squeeze(-1).tolist() == pytest.approx([2**3.5 - 1, 2**4.5 - 1], rel=1e-6)
    trend = MeanAbsoluteScaledError(1, forecast="trend")
    trend.update(preds, target, baseline=persistence, trend=damped_log_trend(window))
    expected = (abs(2**3.5 - 1 - 15) + abs(2**4.5 - 1 - 31)) / 2 / 12
    assert trend.compute().item() == pytest.approx(expected, rel=1e-5)
    # Exact persistence scores 1; a series persistence gets exactly right scores 1 when the model does too.
    same = MeanAbsoluteScaledError(2)
    same.update(torch.tensor([[1.0, 5.0]]), torch.tensor([[2.0, 5.0]]), baseline=torch.tensor([[1.0, 5.0]]))
    assert same.compute().tolist() == [1.0, 1.0]


def test_the_module_logs_per_series_scores_named_by_column():
    dm = Covid19DataModule(**CHINA_ONLY)
    dm.setup("fit")
    module = Covid19Module(**dm.model_kwargs(), **LOG_TREND, preprocessing=dm.preprocessing_state())
    preds, target, baseline, trend = _step_outputs(module, dm.val_set.tensors)
    module.val_paired_metrics.update(preds, target, baseline=baseline, trend=trend)
    module.val_metrics.update(preds, target)
    module.val_loss.update(torch.tensor(0.0))
    module.val_baseline_metrics.update(dm.val_set.tensors[0][:, -1], dm.val_set.tensors[1][:, 0])
    values = module.compute_epoch_metrics("val")
    for column in COUNT_COLUMNS:
        # Untrained, the model is persistence: MASE 1 on every series.
        assert values[f"val/mase_{column}"].item() == pytest.approx(1.0)
        assert values[f"val/mae_{column}"].item() == pytest.approx(values[f"val/persistence_mae_{column}"].item())
        assert f"val/trend_mase_{column}" in values
    assert values["val/mae"].item() == pytest.approx(values["val/persistence_mae"].item())


def _step_outputs(module, tensors):
    out = module.shared_step(tensors)
    return out["preds"], out["target"], out["baseline"], out["trend"]


# ----------------------------------------------------------------------------- synthetic series
def _train_net(series: torch.Tensor, steps: int = 40, seed: int = 0, **settings) -> tuple[Covid19Module, tuple]:
    """Fit a net (the default unless ``settings`` say otherwise) on ``series`` (daily, float32[T, C]) with its own
    loss; the samples whose first forecast day is among the last 7 days are held out. 40 full-batch steps are what
    ``fit``'s 40 default epochs give a series this short (one batch an epoch): on a single 60-day random walk the
    default's MLP overfits with several times more (one-day MASE 1.33 after 100 steps, 2.05 after 300)."""
    torch.manual_seed(seed)
    days = len(series)
    samples = forecast_samples(series, 14, 7, 0, (days - 7, days))
    module = Covid19Module(num_series=series.shape[1], preprocessing={"window": 14}, **settings)
    optimizer = module.configure_optimizers()
    for _ in range(steps):
        optimizer.zero_grad()
        module.shared_step(samples["train"])["loss"].backward()
        optimizer.step()
    return module, samples["val"]


def _mase(module, held_out) -> float:
    """One-day MASE of the median forecast on the held-out samples."""
    inputs, targets = held_out[0], held_out[1][:, 0]
    with torch.no_grad():
        preds = module.quantile_forecast(inputs)[:, 0, :, level_index(0.5)]
    return ((preds - targets).abs().mean() / (inputs[:, -1] - targets).abs().mean()).item()


def test_the_default_net_beats_persistence_on_steady_exponential_growth():
    days = torch.arange(60, dtype=torch.float32)
    series = (20 * torch.exp(0.08 * days)).round().unsqueeze(-1)  # +8% a day: persistence lags every day
    module, held_out = _train_net(series)
    assert _mase(module, held_out) < 0.5
    module, held_out = _train_net(series, **LOG_TREND)
    assert _mase(module, held_out) < 0.5


def test_the_default_net_loses_little_to_persistence_on_a_random_walk():
    generator = torch.Generator().manual_seed(3)
    series = torch.exp(5 + 0.1 * torch.randn(60, 2, generator=generator).cumsum(0)).round()
    module, held_out = _train_net(series)
    assert _mase(module, held_out) < 1.1


# ------------------------------------------------------------------------------- other files
def write_series(folder, columns, rows, delimiter="\t"):
    """A ``covid-19.csv`` in ``folder`` with a date column starting 2020-03-01 and the given rows."""
    import datetime as dt

    folder.mkdir(parents=True, exist_ok=True)
    start = dt.date(2020, 3, 1)
    lines = [delimiter.join(["date", *columns])]
    lines += [
        delimiter.join([(start + dt.timedelta(days=i)).isoformat(), *(f"{v:g}" for v in row)])
        for i, row in enumerate(rows)
    ]
    (folder / "covid-19.csv").write_text("\n".join(lines) + "\n")
    return folder


def growth_rows(days, num_series, seed=0):
    generator = torch.Generator().manual_seed(seed)
    daily = torch.exp(
        3 + 0.05 * torch.arange(days).unsqueeze(-1) + 0.2 * torch.randn(days, num_series, generator=generator)
    )
    return daily.round().cumsum(0).tolist()


def test_columns_come_from_the_header_comma_or_tab(tmp_path):
    folder = write_series(tmp_path / "a", ["cases"], growth_rows(40, 1), delimiter=",")
    dm = Covid19DataModule(data_dir=folder)
    dm.setup("fit")
    assert dm.columns == ["cases"] and dm.model_kwargs() == {"num_series": 1, "horizon": 7, "window": 14}
    assert dm.train_set.tensors[0].shape[1:] == (14, 1) and dm.series_names == ["a"] and dm.extra == []
    assert dm.preprocessing_state()["columns"] == ["cases"]


def test_daily_counts_are_taken_as_they_are(tmp_path):
    rows = [[float(i), float(2 * i)] for i in range(30)]
    dm = Covid19DataModule(data_dir=write_series(tmp_path, ["a", "b"], rows), counts="daily", window=8)
    dm.setup("fit")
    assert torch.equal(dm.daily[0], torch.tensor(rows))
    assert dm.test_set.tensors[1][-1, 0].tolist() == [29.0, 58.0]
    assert len(dm.train_set) == 30 - 8 - 14


def test_negative_increments_are_counted_in_a_warning_and_read_as_zero(tmp_path):
    rows = growth_rows(40, 2)
    rows[20][1] = rows[19][1] - 5  # a correction: the cumulative count falls on day 20 ...
    for later in rows[21:]:
        later[1] = max(later[1], rows[20][1])
    folder = write_series(tmp_path, ["cases", "deaths"], rows)
    with pytest.warns(UserWarning, match=r"covid-19\.csv: 1 daily value\(s\) below zero .*: 2020-03-21 \(deaths\)"):
        dm = Covid19DataModule(data_dir=folder)
        dm.setup("fit")
    assert dm.negative_days == 1
    module = Covid19Module(**dm.model_kwargs(), preprocessing=dm.preprocessing_state())
    windows = torch.cat([dm.train_set.tensors[0], dm.val_set.tensors[0]])
    assert (windows < 0).any() and torch.isfinite(module(windows)).all() and (module(windows) >= 0).all()


def test_a_file_too_short_for_window_validation_and_test_names_the_counts(tmp_path):
    folder = write_series(tmp_path, ["cases"], growth_rows(22, 1))
    with pytest.raises(
        DataError, match=r"covid-19\.csv: 22 days give 13 windows of 8 days: too few .*needs at least 24 days"
    ):
        Covid19DataModule(data_dir=folder, window=8).setup("fit")


def test_point_net_intervals_hold_the_point_and_widen(tmp_path):
    dm = Covid19DataModule(**CHINA_ONLY)
    dm.setup("fit")
    module = Covid19Module(**LOG_TREND, preprocessing=dm.preprocessing_state())
    spread = torch.linspace(-0.3, 0.3, len(LEVELS))
    module.residual_quantiles.copy_(torch.stack([spread, spread / 3, torch.zeros_like(spread)], dim=1))
    forecast = module.forecast(4)
    assert (forecast.lower <= forecast.point).all() and (forecast.point <= forecast.upper).all()
    assert (forecast.quantiles.diff(dim=-1) >= 0).all()
    width = forecast.upper - forecast.lower
    assert (width[1:, :2] > width[:-1, :2]).all() and (width[:, 2] == 0).all()
    expected = torch.expm1(torch.log1p(forecast.point[1, 0]) + spread[level_index(0.9)] * math.sqrt(2))
    assert forecast.upper[1, 0].item() == pytest.approx(expected.item(), rel=1e-5)
    low_95, high_95 = forecast.interval(95)
    assert (low_95 <= forecast.lower).all() and (forecast.upper <= high_95).all()


@pytest.mark.filterwarnings("ignore:`torch.jit.\\w+` is deprecated:FutureWarning")
@pytest.mark.parametrize("num_series", [1, 5])
def test_any_number_of_series_through_fit_predict_and_export(tmp_path, capsys, num_series):
    from lightning_app import export as export_cli
    from lightning_app import predict as predict_cli
    from lightning_app.checkpoints import load_checkpoint
    from lightning_app.training import FitConfig, fit, format_summary

    columns = [f"s{i}" for i in range(num_series)]
    folder = write_series(tmp_path / "data", columns, growth_rows(45, num_series, seed=num_series))
    result = fit(
        FitConfig(
            task="covid19",
            data_dir=str(folder),
            max_epochs=3,
            log_dir=str(tmp_path / "runs"),
            enable_progress_bar=False,
        )
    )
    for column in columns:
        assert {f"test/mase_{column}", f"test/mae_{column}", f"test/persistence_mae_{column}"} <= set(result.metrics)
    assert {"test/mae", "test/persistence_mae", "test/rollout_mae", "test/persistence_rollout_mae"} <= set(
        result.metrics
    )
    scores = ("wis", "relative_wis", "relative_mae", "coverage_50", "coverage_80", "coverage_95")
    assert {f"test/{name}{suffix}" for name in scores for suffix in ("", "_h1", "_h7")} <= set(result.metrics)
    assert "test/series/data/relative_wis" in result.metrics
    summary = format_summary(result)
    assert "test series" in summary and "7-day roll-out" in summary and f"{columns[-1]} " in summary
    assert "relative WIS" in summary and "80% cover" in summary

    module = load_checkpoint(result.best_model_path).module
    assert module.hparams.num_series == num_series and module.series_names == columns
    kinds = ("new", "low_50", "high_50", "low_80", "high_80", "low_95", "high_95", "total")
    ckpt = ["--task", "covid19", "--ckpt", result.best_model_path]
    assert predict_cli.main([*ckpt, "--days", "4", "--format", "csv"]) == 0
    header, *rows = capsys.readouterr().out.strip().splitlines()
    assert header.split(",") == ["series", "date", *(f"{c}_{k}" for c in columns for k in kinds)]
    assert len(rows) == 4 and rows[0].startswith("data,2020-04-15,")
    values = [float(v) for v in rows[3].split(",")[2:]]
    for first in range(0, len(values), len(kinds)):
        new, low50, high50, low80, high80, low95, high95 = values[first : first + 7]
        assert 0 <= low95 <= low80 <= low50 <= new <= high50 <= high80 <= high95
    assert (
        export_cli.main(
            ["--ckpt", result.best_model_path, "--format", "torchscript", "--output-dir", str(tmp_path / "x")]
        )
        == 0
    )
    scripted = torch.jit.load(str(tmp_path / "x" / "model.pt"))
    window = torch.rand(2, 14, num_series) * 100
    assert torch.allclose(scripted(window), module.predict_step((window,), 0), atol=1e-4)


def test_fit_passes_no_seed_and_older_checkpoints_with_one_still_load(tiny_fit, tmp_path, capsys):
    from lightning_app import test as test_cli
    from lightning_app.checkpoints import load_checkpoint

    result = tiny_fit("covid19")
    checkpoint = torch.load(result.best_model_path, weights_only=True)
    assert "seed" not in checkpoint["datamodule_hyper_parameters"]
    # covid19 checkpoints written while Covid19DataModule took an (unused) seed hold one in their settings
    checkpoint["datamodule_hyper_parameters"]["seed"] = 42
    older = tmp_path / "older.ckpt"
    torch.save(checkpoint, older)
    assert load_checkpoint(older, "covid19").datamodule().hparams.window == 14
    assert test_cli.main(["--task", "covid19", "--ckpt", str(older), "--format", "json"]) == 0
    assert "test/mae" in capsys.readouterr().out
