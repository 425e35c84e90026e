"""Forecast-hub scores: hand-computed WIS and interval scores, the hub baseline on a tiny series, coverage."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_app.forecast_scores import (
    CENTRAL_INTERVALS,
    QUANTILE_LEVELS,
    hub_baseline_quantiles,
    interval_coverage,
    interval_score,
    monotone_quantiles,
    pinball_loss,
    relative_score,
    weighted_interval_score,
)


def test_the_hub_levels_are_23_symmetric_levels_with_the_median():
    assert len(QUANTILE_LEVELS) == 23
    assert QUANTILE_LEVELS[:4] == (0.01, 0.025, 0.05, 0.1)
    assert QUANTILE_LEVELS[-4:] == (0.9, 0.95, 0.975, 0.99)
    assert 0.5 in QUANTILE_LEVELS
    for low, high in zip(QUANTILE_LEVELS, reversed(QUANTILE_LEVELS), strict=True):
        assert low + high == pytest.approx(1.0)
    assert CENTRAL_INTERVALS == (50, 80, 95)


def test_interval_score_by_hand():
    # 80% interval [2, 6], alpha = 0.2, so the penalty factor is 2 / 0.2 = 10:
    #   y = 4 inside:  width 4                      = 4
    #   y = 1 below:   4 + 10 * (2 - 1)             = 14
    #   y = 8 above:   4 + 10 * (8 - 6)             = 24
    #   y = 2 on the bound counts as inside         = 4
    y = torch.tensor([4.0, 1.0, 8.0, 2.0])
    score = interval_score(torch.tensor(2.0), torch.tensor(6.0), y, 0.2)
    torch.testing.assert_close(score, torch.tensor([4.0, 14.0, 24.0, 4.0]))


def test_weighted_interval_score_by_hand():
    # Levels (0.1, 0.5, 0.9), quantiles (2, 4, 6): K = 1 interval, alpha = 0.2.
    #   y = 7: 0.5 * |7 - 4| = 1.5; IS = 4 + 10 * (7 - 6) = 14, times alpha/2 = 0.1 -> 1.4
    #          WIS = (1.5 + 1.4) / 1.5 = 1.9333...
    #   y = 4: 0 + 0.1 * 4 = 0.4, WIS = 0.4 / 1.5 = 0.2666...
    quantiles = torch.tensor([[2.0, 4.0, 6.0], [2.0, 4.0, 6.0]])
    wis = weighted_interval_score(quantiles, (0.1, 0.5, 0.9), torch.tensor([7.0, 4.0]))
    torch.testing.assert_close(wis, torch.tensor([2.9 / 1.5, 0.4 / 1.5]))

    # Levels (0.025, 0.25, 0.5, 0.75, 0.975), quantiles (0, 3, 5, 8, 20), y = 1: K = 2, alphas 0.5 and 0.05.
    #   0.5 * |1 - 5|                           = 2
    #   IS_0.5  [3, 8]:  5 + (2/0.5) * (3 - 1) = 13, times 0.25  = 3.25
    #   IS_0.05 [0, 20]: 20 (inside),                times 0.025 = 0.5
    #   WIS = (2 + 3.25 + 0.5) / 2.5 = 2.3
    wis = weighted_interval_score(torch.tensor([0.0, 3.0, 5.0, 8.0, 20.0]), (0.025, 0.25, 0.5, 0.75, 0.975), 1.0)
    torch.testing.assert_close(wis, torch.tensor(2.3))

    # The median alone: WIS = 0.5 * |y - m| / 0.5 = absolute error.
    torch.testing.assert_close(
        weighted_interval_score(torch.tensor([[3.0]]), [0.5], torch.tensor([5.0])), torch.tensor([2.0])
    )


def test_wis_is_twice_the_mean_pinball_loss():
    # By hand for levels (0.1, 0.5, 0.9), quantiles (2, 4, 6), y = 7:
    #   pinball: 0.1 * (7 - 2) = 0.5, 0.5 * (7 - 4) = 1.5, 0.9 * (7 - 6) = 0.9 -> sum 2.9, WIS = 2.9 / 1.5
    loss = pinball_loss(torch.tensor([2.0, 4.0, 6.0]), (0.1, 0.5, 0.9), torch.tensor(7.0))
    torch.testing.assert_close(loss, torch.tensor([0.5, 1.5, 0.9]))
    # In general (alpha/2 * IS_alpha = pinball at alpha/2 + pinball at 1 - alpha/2): WIS = sum / (K + 1/2) = 2 * mean.
    generator = torch.Generator().manual_seed(0)
    quantiles = monotone_quantiles(torch.randn(50, 7, len(QUANTILE_LEVELS), generator=generator, dtype=torch.float64))
    y = 2 * torch.randn(50, 7, generator=generator, dtype=torch.float64)
    wis = weighted_interval_score(quantiles, QUANTILE_LEVELS, y)
    torch.testing.assert_close(wis, 2 * pinball_loss(quantiles, QUANTILE_LEVELS, y).mean(-1))


@pytest.mark.parametrize(
    ("levels", "message"),
    [((0.1, 0.5, 0.8), "symmetric"), ((0.1, 0.9), "median"), ((0.1, 0.25, 0.5, 0.9), "0.25 has no partner 0.75")],
)
def test_wis_refuses_asymmetric_levels_or_no_median(levels, message):
    with pytest.raises(ValueError, match=message):
        weighted_interval_score(torch.zeros(len(levels)), levels, torch.tensor(0.0))


def test_levels_must_match_and_increase():
    with pytest.raises(ValueError, match="last dimension"):
        weighted_interval_score(torch.zeros(4), (0.1, 0.5, 0.9), torch.tensor(0.0))
    with pytest.raises(ValueError, match="increasing"):
        weighted_interval_score(torch.zeros(3), (0.9, 0.5, 0.1), torch.tensor(0.0))


def test_hub_baseline_on_a_tiny_series():
    # History [10, 12, 11, 15]: changes [2, -1, 4], symmetrised and sorted [-4, -2, -1, 1, 2, 4] (n = 6).
    # torch.quantile interpolates at position tau * (n - 1) = 5 tau:
    #   tau 0.5  -> 2.5  -> (-1 + 1) / 2        = 0     -> median 15 (last value)
    #   tau 0.25 -> 1.25 -> -2 + 0.25 * 1       = -1.75 -> 13.25;  tau 0.75 -> 16.75
    #   tau 0.1  -> 0.5  -> -4 + 0.5 * 2        = -3    -> 12;     tau 0.9  -> 18
    #   tau 0.05 -> 0.25 -> -4 + 0.25 * 2       = -3.5  -> 11.5;   tau 0.95 -> 18.5
    # Horizon 4 multiplies the spread by sqrt(4) = 2: 0.1 -> 15 - 6 = 9, 0.9 -> 21.
    # Horizon 25 (x5): 0.05 -> 15 - 17.5 < 0, clamped to 0; 0.1 -> 15 - 15 = 0; 0.25 -> 15 - 8.75 = 6.25.
    levels = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)
    forecast = hub_baseline_quantiles(torch.tensor([10.0, 12.0, 11.0, 15.0]), [1, 4, 25], levels)
    assert forecast.shape == (3, len(levels))
    torch.testing.assert_close(forecast[0], torch.tensor([11.5, 12.0, 13.25, 15.0, 16.75, 18.0, 18.5]))
    torch.testing.assert_close(forecast[1], torch.tensor([8.0, 9.0, 11.5, 15.0, 18.5, 21.0, 22.0]))
    torch.testing.assert_close(forecast[2], torch.tensor([0.0, 0.0, 6.25, 15.0, 23.75, 30.0, 32.5]))


def test_hub_baseline_series_side_by_side_never_cross_and_never_go_negative():
    generator = torch.Generator().manual_seed(1)
    history = torch.poisson(torch.full((30, 3), 5.0), generator=generator)
    history[:, 2] = 0.0  # a series of zeros: no spread, every quantile 0
    forecast = hub_baseline_quantiles(history, range(1, 8))
    assert forecast.shape == (7, 3, len(QUANTILE_LEVELS))
    for s in range(3):
        torch.testing.assert_close(forecast[:, s], hub_baseline_quantiles(history[:, s], range(1, 8)))
    assert bool((forecast.diff(dim=-1) >= 0).all())
    assert bool((forecast >= 0).all())
    torch.testing.assert_close(forecast[:, :, QUANTILE_LEVELS.index(0.5)], history[-1].expand(7, 3))
    assert bool((forecast[:, 2] == 0).all())
    with pytest.raises(ValueError, match="at least 2"):
        hub_baseline_quantiles(torch.tensor([3.0]), [1])
    with pytest.raises(ValueError, match="positive"):
        hub_baseline_quantiles(torch.tensor([3.0, 4.0]), [0])


def test_coverage_of_a_calibrated_gaussian_is_near_nominal():
    # y ~ N(0, 1) scored with the exact N(0, 1) quantiles: each hit is Bernoulli(p), so the coverage over
    # n = 20000 draws has standard deviation sqrt(p (1 - p) / n) <= 0.0036 (p = 0.5); 0.015 is over 4 of them
    # for every width (and the seed is fixed, so the test cannot flake).
    n = 20_000
    generator = torch.Generator().manual_seed(2)
    y = torch.randn(n, generator=generator, dtype=torch.float64)
    levels = torch.tensor(QUANTILE_LEVELS, dtype=torch.float64)
    quantiles = torch.distributions.Normal(0.0, 1.0).icdf(levels).expand(n, -1)
    for width in CENTRAL_INTERVALS:
        assert float(interval_coverage(quantiles, QUANTILE_LEVELS, y, width)) == pytest.approx(width / 100, abs=0.015)
    # Too narrow a forecast (half the spread) under-covers.
    assert float(interval_coverage(quantiles / 2, QUANTILE_LEVELS, y, 80)) < 0.6
    # By hand, per row: quantiles [0.1, 0.5, 0.9] = [2, 4, 6]; y = 1, 2, 6, 7 -> in 0, 1, 1, 0.
    small = torch.tensor([2.0, 4.0, 6.0]).expand(2, 2, 3)
    y = torch.tensor([[1.0, 2.0], [6.0, 7.0]])
    torch.testing.assert_close(interval_coverage(small, (0.1, 0.5, 0.9), y, 80, dim=1), torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(interval_coverage(small, (0.1, 0.5, 0.9), y, 80, dim=0), torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="50% central interval"):
        interval_coverage(small, (0.1, 0.5, 0.9), y, 50)


def test_monotone_quantiles_repairs_crossing_and_keeps_ordered_ones():
    crossed = torch.tensor([[3.0, 1.0, 2.0, 5.0, 4.0], [0.0, 1.0, 2.0, 3.0, 4.0]])
    repaired = monotone_quantiles(crossed)
    assert bool((repaired.diff(dim=-1) >= 0).all())
    torch.testing.assert_close(repaired[1], crossed[1])
    # Sorting never makes the score worse.
    levels, y = (0.1, 0.25, 0.5, 0.75, 0.9), torch.tensor([2.5, 2.5])
    assert bool((weighted_interval_score(repaired, levels, y) <= weighted_interval_score(crossed, levels, y)).all())


def test_relative_score_is_the_geometric_mean_of_per_series_ratios():
    # Ratios 1 / 2 = 0.5 and 4 / 1 = 4: geometric mean sqrt(0.5 * 4) = sqrt(2) (a ratio of sums would be 5/3).
    torch.testing.assert_close(
        relative_score(torch.tensor([1.0, 4.0]), torch.tensor([2.0, 1.0])), torch.tensor(math.sqrt(2))
    )
    # Series x columns pool the same way; a 0 / 0 entry is left out.
    model, baseline = torch.tensor([[1.0, 0.0], [8.0, 3.0]]), torch.tensor([[2.0, 0.0], [1.0, 3.0]])
    torch.testing.assert_close(relative_score(model, baseline), torch.tensor((0.5 * 8 * 1) ** (1 / 3)))
    assert math.isnan(float(relative_score(torch.zeros(2), torch.zeros(2))))
    with pytest.raises(ValueError, match="differ"):
        relative_score(torch.ones(2), torch.ones(3))
