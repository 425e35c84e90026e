"""The COVID-19 task on panels of series: quantile forecasts, hub-style scores, panels end to end."""

from __future__ import annotations

import copy
import datetime as dt
import math
from pathlib import Path

import pytest
import torch

from datamodules import Covid19DataModule, DataError
from datamodules.count_series import level_index
from lightning_app.forecast_scores import hub_baseline_quantiles, relative_score, weighted_interval_score
from lightning_app.metrics import ForecastScores
from lightning_app.models import Covid19Module
from lightning_app.models.covid import LEVELS
from lightning_app.nets import QuantileCovidNet


def write_csv(path: Path, columns: list[str], rows: list[list[float]], series: str | None = None) -> Path:
    """Rows of counts from 2020-03-01 on; with ``series``, as rows of a long file (header written by the caller)."""
    start = dt.date(2020, 3, 1)
    lines = [] if series else ["\t".join(["date", *columns])]
    for day, row in enumerate(rows):
        fields = [(start + dt.timedelta(days=day)).isoformat(), *(f"{v:g}" for v in row)]
        lines.append("\t".join([series, *fields] if series else fields))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


def noisy_daily(days: int, level: float, sigma: float, generator: torch.Generator, columns: int = 2) -> torch.Tensor:
    """Daily counts ``exp(log(level) + sigma * N(0, 1))``: flat on the log scale with known noise."""
    return torch.exp(math.log(level) + sigma * torch.randn(days, columns, generator=generator)).round()


@pytest.mark.parametrize("anchor", ["last", "baseline"])
def test_quantiles_never_cross_and_are_never_negative(anchor):
    torch.manual_seed(0)
    net = QuantileCovidNet(num_series=3, window=14, horizon=7, levels=LEVELS, hidden_size=16, anchor=anchor)
    for parameter in net.parameters():  # away from the zero start, where every gap is equal
        parameter.data.add_(torch.randn_like(parameter))  # some counts reach the 1e12 cap
    window = torch.cat([torch.zeros(4, 14, 3), torch.rand(60, 14, 3) * 10 ** torch.rand(60, 1, 1) * 5])
    window[5, 3, 1] = -40.0  # a correction
    quantiles = net(window)
    assert quantiles.shape == (64, 7, 3, len(LEVELS))
    assert (quantiles >= 0).all() and (quantiles.diff(dim=-1) >= 0).all() and quantiles.isfinite().all()


def test_untrained_quantile_net_has_persistence_as_its_median():
    net = QuantileCovidNet(num_series=2, window=14, horizon=3, levels=LEVELS)
    window = torch.rand(5, 14, 2) * 100
    median = net(window)[..., level_index(0.5)]
    assert torch.allclose(median, window[:, -1:, :].expand(-1, 3, -1), rtol=1e-5)


def test_untrained_baseline_anchored_net_is_the_hub_baseline_of_its_window():
    # Untrained, anchor="baseline" gives the hubs' baseline computed from the window alone (extra gaps start at
    # softplus(-8), a few 1e-4 on the log1p scale), whatever the members and dropout.
    torch.manual_seed(0)
    net = QuantileCovidNet(num_series=2, window=14, horizon=7, levels=LEVELS, members=3, anchor="baseline", dropout=0.1)
    window = torch.rand(5, 14, 2) * 10 ** torch.rand(5, 1, 2) * 50
    window[0, :, 0] = 0.0  # a series of zeros: a fan of zero width
    expected = torch.stack([hub_baseline_quantiles(one, range(1, 8), LEVELS) for one in window])
    quantiles = net.eval()(window)
    assert torch.allclose(torch.log1p(quantiles), torch.log1p(expected), atol=5e-3)
    assert torch.allclose(quantiles[..., level_index(0.5)], window[:, -1:, :].expand(-1, 7, -1), rtol=1e-5)


def test_widen_scales_the_forecast_fan_around_the_median_but_not_the_trained_one():
    torch.manual_seed(0)
    plain = QuantileCovidNet(num_series=2, window=14, horizon=3, levels=LEVELS, anchor="baseline")
    wide = copy.deepcopy(plain)
    wide.widen_by = 1.5
    window = torch.rand(4, 14, 2) * 100 + 50
    torch.testing.assert_close(wide.forward_log(window), plain.forward_log(window))
    logs, median = plain.forward_log(window), plain.forward_log(window)[..., level_index(0.5)].unsqueeze(-1)
    expected = torch.expm1((median + 1.5 * (logs - median)).clamp_min(0))
    torch.testing.assert_close(wide(window), expected)


def test_an_unknown_anchor_is_an_error():
    with pytest.raises(ValueError, match="anchor must be 'last' or 'baseline'"):
        QuantileCovidNet(num_series=2, anchor="mean")


def test_forecast_scores_equal_the_scores_computed_by_hand():
    generator = torch.Generator().manual_seed(1)
    target = torch.rand(6, 2, 3, generator=generator) * 50
    target[5, 1] = float("nan")  # a day past the end of the split: not scored
    model = (torch.rand(6, 2, 3, 1, generator=generator) * 50 + torch.linspace(-20, 20, len(LEVELS))).clamp_min(0)
    baseline = (target.nan_to_num(10).unsqueeze(-1) + torch.linspace(-30, 30, len(LEVELS))).clamp_min(0)
    series = torch.tensor([0, 0, 1, 1, 2, 2])
    metric = ForecastScores(LEVELS)
    metric.update(model[:3], target[:3], baseline[:3], series[:3])
    metric.update(model[3:], target[3:], baseline[3:], series[3:])
    values = metric.compute()
    wis = weighted_interval_score(model, LEVELS, target)
    base = weighted_interval_score(baseline, LEVELS, target)
    assert values["wis"].item() == pytest.approx(wis.nanmean().item(), rel=1e-5)
    model_means = torch.stack([wis[series == s].nanmean((0, 1)) for s in range(3)])
    base_means = torch.stack([base[series == s].nanmean((0, 1)) for s in range(3)])
    assert values["relative_wis"].item() == pytest.approx(relative_score(model_means, base_means).item(), rel=1e-5)
    h2 = relative_score(
        torch.stack([wis[series == s, 1].nanmean(0) for s in range(3)]),
        torch.stack([base[series == s, 1].nanmean(0) for s in range(3)]),
    )
    assert values["relative_wis_h2"].item() == pytest.approx(h2.item(), rel=1e-5)
    lo, hi = model[..., level_index(0.1)], model[..., level_index(0.9)]
    inside = ((lo <= target) & (target <= hi)).float()[~target.isnan()]
    assert values["coverage_80"].item() == pytest.approx(inside.mean().item())
    assert set(metric.per_series()) == {0, 1, 2}


def test_the_datamodule_serves_the_hub_baseline_of_each_origin(tmp_path):
    generator = torch.Generator().manual_seed(0)
    daily = noisy_daily(40, 50, 0.3, generator)
    write_csv(tmp_path / "a.csv", ["x", "y"], daily.tolist())
    dm = Covid19DataModule(data_dir=tmp_path / "a.csv", counts="daily", window=8)
    dm.setup("fit")
    window, target, _, baseline = dm.test_set.tensors
    origin = 40 - 7 - 1  # the last day before the test week
    assert torch.equal(window[0], daily[origin - 7 : origin + 1]) and torch.equal(target[0], daily[origin + 1 :])
    assert torch.allclose(baseline[0], hub_baseline_quantiles(daily[: origin + 1], range(1, 8)))


def test_coverage_is_close_to_nominal_on_a_synthetic_panel_with_known_noise(tmp_path):
    """Log-normal noise around flat levels: the best forecast is a fixed band around each series' level, which
    the quantile net can learn from 40 series. Trained as ``fit`` trains it: the weights of the step with the best
    validation relative WIS are kept (kept longer, the MLP memorises the training noise and its intervals shrink:
    80% coverage 0.69 after 150 full-batch steps at lr 0.01, 0.37 after 300). Tolerance: 40 series x 2 columns
    x 7 test days x up to 7 horizons gives about 1,600 scored pairs, but days are shared between horizons, so
    about 560 independent ones: a binomial standard error of 0.017 at 80%; 0.08 leaves room for the fit's own
    error (measured: 0.45 / 0.76 / 0.93 for 50 / 80 / 95%)."""
    generator = torch.Generator().manual_seed(0)
    for index in range(40):
        level = float(10 ** (1 + 2 * torch.rand(1, generator=generator)))
        write_csv(tmp_path / "panel" / f"s{index:02d}.csv", ["x", "y"], noisy_daily(50, level, 0.3, generator).tolist())
    torch.manual_seed(0)
    dm = Covid19DataModule(data_dir=tmp_path / "panel", counts="daily", batch_size=128)
    dm.setup("fit")
    module = Covid19Module(**dm.model_kwargs(), preprocessing=dm.preprocessing_state())
    optimizer = module.configure_optimizers()
    best_score, best_state = math.inf, None
    for step in range(1, 141):
        optimizer.zero_grad()
        module.shared_step(dm.train_set.tensors)["loss"].backward()
        optimizer.step()
        if step % 20 == 0:
            score = _scores(module, dm.val_set.tensors)["relative_wis"].item()
            if score < best_score:
                best_score, best_state = score, copy.deepcopy(module.state_dict())
    module.load_state_dict(best_state)
    values = _scores(module, dm.test_set.tensors)
    assert abs(values["coverage_80"].item() - 0.8) < 0.08, values["coverage_80"]
    assert abs(values["coverage_50"].item() - 0.5) < 0.08, values["coverage_50"]
    assert abs(values["coverage_95"].item() - 0.95) < 0.05, values["coverage_95"]
    # A fixed band around the level beats the baseline's band around a noisy last value.
    assert values["relative_wis"].item() < 0.9


def _scores(module: Covid19Module, tensors: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
    """The test-stage forecast scores of ``module`` (in eval mode) on ``tensors``."""
    with module.eval_mode():
        module._score_forecasts("test", tensors)
    values = module.test_forecast_scores.compute()
    module.test_forecast_scores.reset()
    return values


@pytest.mark.filterwarnings("ignore:`torch.jit.\\w+` is deprecated:FutureWarning")
@pytest.mark.parametrize("layout", ["folder", "long_file"])
def test_a_panel_through_fit_predict_and_export(tmp_path, capsys, layout):
    from lightning_app import export as export_cli
    from lightning_app import predict as predict_cli
    from lightning_app.checkpoints import load_checkpoint
    from lightning_app.training import FitConfig, fit

    generator = torch.Generator().manual_seed(0)
    names = ["alpha", "beta", "gamma"]
    if layout == "folder":
        for name in names:
            rows = noisy_daily(40, 30, 0.2, generator).cumsum(0).tolist()
            write_csv(tmp_path / "data" / name / "covid-19.csv", ["x", "y"], rows)
        source = tmp_path / "data"
    else:
        source = tmp_path / "panel.tsv"
        source.write_text("series\tdate\tx\ty\n")
        for name in names:
            write_csv(source, ["x", "y"], noisy_daily(40, 30, 0.2, generator).cumsum(0).tolist(), series=name)
    result = fit(FitConfig(task="covid19", data_dir=str(source), max_epochs=2, log_dir=str(tmp_path / "runs")))
    assert {f"test/series/{name}/relative_wis" for name in names} <= set(result.metrics)
    capsys.readouterr()  # fit's own output
    module = load_checkpoint(result.best_model_path).module
    assert module.panel_names == names
    ckpt = ["--task", "covid19", "--ckpt", result.best_model_path, "--format", "csv", "--days", "3"]
    assert predict_cli.main(ckpt) == 0  # from the series stored in the checkpoint
    _, *rows = capsys.readouterr().out.strip().splitlines()
    assert [row.split(",")[0] for row in rows] == [name for name in names for _ in range(3)]
    assert rows[0].split(",")[1] == "2020-04-10"
    other = tmp_path / "new.csv"
    write_csv(other, ["x", "y"], noisy_daily(20, 30, 0.2, generator).cumsum(0).tolist())
    assert predict_cli.main([*ckpt, "--input-file", str(other)]) == 0  # a user's new series
    _, *rows = capsys.readouterr().out.strip().splitlines()
    assert len(rows) == 3 and rows[0].startswith("new,2020-03-21,")
    out = tmp_path / "export"
    assert export_cli.main(["--ckpt", result.best_model_path, "--format", "torchscript", "--output-dir", str(out)]) == 0
    scripted = torch.jit.load(str(out / "model.pt"))
    window = torch.rand(2, 14, 2) * 100
    assert torch.allclose(scripted(window), module.quantile_forecast(window), atol=1e-4)


def test_panel_errors_name_the_file_and_the_series(tmp_path):
    generator = torch.Generator().manual_seed(0)
    write_csv(tmp_path / "p" / "long.csv", ["x"], noisy_daily(40, 30, 0.2, generator, 1).cumsum(0).tolist())
    write_csv(tmp_path / "p" / "short.csv", ["x"], noisy_daily(20, 30, 0.2, generator, 1).cumsum(0).tolist())
    with pytest.raises(DataError, match=r"short\.csv: series 'short': 20 days give 5 windows of 14 days: too few"):
        Covid19DataModule(data_dir=tmp_path / "p").setup("fit")
    write_csv(tmp_path / "q" / "a.csv", ["x"], noisy_daily(40, 30, 0.2, generator, 1).cumsum(0).tolist())
    write_csv(tmp_path / "q" / "b.csv", ["y"], noisy_daily(40, 30, 0.2, generator, 1).cumsum(0).tolist())
    with pytest.raises(DataError, match=r"b\.csv: columns \['y'\] differ from \['x'\]"):
        Covid19DataModule(data_dir=tmp_path / "q").setup("fit")
    with pytest.raises(DataError, match=r"countries\.csv: columns \['confirmed_num'.* differ from \['x'\]"):
        Covid19DataModule(data_dir=tmp_path / "q" / "a.csv", extra_series="countries").setup("fit")
