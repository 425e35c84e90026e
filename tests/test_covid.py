"""COVID-19 series functions, DataModule splits and the forecast roll-out."""

from __future__ import annotations

import torch

from datamodules import PACKAGED_DATA_DIR, Covid19DataModule
from datamodules.covid import daily_differences, make_windows, read_cumulative_counts
from lightning_app.metrics import MeanSquaredPercentageError, mean_squared_percentage_error
from lightning_app.models import Covid19Module


def test_reads_the_bundled_file():
    dates, counts = read_cumulative_counts(PACKAGED_DATA_DIR / "covid19" / "covid-19.csv")
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
    dm = Covid19DataModule()
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (24, 7, 7)
    diffs = daily_differences(dm.cumulative)
    # The test targets are the last seven days; validation the seven before them.
    assert torch.equal(dm.test_set.tensors[1], diffs[-7:])
    assert torch.equal(dm.val_set.tensors[1], diffs[-14:-7])
    assert torch.equal(dm.train_set.tensors[1][-1], diffs[-15])
    window, target = next(iter(dm.train_dataloader()))
    assert window.shape[1:] == (8, 3) and target.shape[1:] == (3,)


def test_mspe_matches_the_tutorial_formula():
    preds, target = torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0]])
    expected = ((2 - 1) ** 2 / 4 + 0) / 2
    assert mean_squared_percentage_error(preds, target).item() == expected
    metric = MeanSquaredPercentageError()
    metric.update(preds, target)
    metric.update(target, target)
    assert metric.compute().item() == expected / 2


def test_forecast_rolls_forward_from_the_stored_history():
    dm = Covid19DataModule()
    dm.setup("fit")
    module = Covid19Module(net="residual_lstm", num_layers=1, preprocessing=dm.preprocessing_state())
    forecast = module.forecast(days=5)
    assert forecast.shape == (5, 3)
    # Untrained, the residual net is exactly persistence: every day repeats the last known day.
    last_day = daily_differences(dm.cumulative)[-1]
    assert torch.allclose(forecast, last_day.expand(5, 3))
    # Feeding each forecast back in: the second day is the model applied to a window ending in day one.
    torch.manual_seed(0)
    tutorial = Covid19Module(net="tutorial", preprocessing=dm.preprocessing_state()).eval()
    history = daily_differences(dm.cumulative)[-8:]
    rolled = tutorial.forecast(days=2)
    with torch.no_grad():
        first = tutorial(history.unsqueeze(0))[0]
        second = tutorial(torch.cat([history[1:], first.unsqueeze(0)]).unsqueeze(0))[0]
    assert not torch.allclose(first, second)
    assert torch.allclose(rolled, torch.stack([first, second]))
