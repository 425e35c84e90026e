"""Which simple forecasters does validation choose for the COVID-19 task, and how do they fare on the test week?

    python -m benchmarks.forecast_selection              # writes its section into benchmarks/RESULTS.md
    python -m benchmarks.forecast_selection --data-dir DIR --output /tmp/RESULTS.md

Issue 12 asks for a default whose test MASE is below 1 on every series, chosen on validation, never on
the test week. This benchmark asks whether any member of three families of parameter-free forecasters
on ``log1p`` counts can meet that honestly. Each forecast reads the last ``k`` days of a window, fits
a least-squares line to them, and predicts tomorrow as

* ``trend``: today + ``phi`` x the line's slope (persistence at ``phi = 0``);
* ``endpoint trend``: today + ``phi`` x the mean daily growth from day ``T - k + 1`` to ``T`` (the damped
  log-trend baseline of the summary table at ``k = window``, ``phi = 0.5``);
* ``smoothed trend``: ``w`` x today + ``(1 - w)`` x the line at today + ``phi`` x slope.

A configuration is chosen by its mean MASE over the series in three selection periods that end where
the test period starts: the task's validation days, twice as many days, and every day before the test
period (rolling origin: the forecasts have no fitted parameters, so the training days are out of sample
too). Then it is scored once on the test days. The last row of each family shows the best configuration
on the test days themselves, which no honest procedure may pick: it says what exists, not what to ship.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.sections import FORECAST_SELECTION
from datamodules import Covid19DataModule
from lightning_app.metrics import MeanAbsoluteScaledError
from lightning_app.nets import log1p_counts
from lightning_app.registry import CHINA_ONLY

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
DAYS_IN_WINDOW = (3, 4, 5, 6, 7, 8)
TREND_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
TODAY_WEIGHTS = (0.0, 0.25, 0.5, 0.75)


@dataclass(frozen=True)
class Forecaster:
    family: str
    days: int
    phi: float
    today_weight: float = 1.0

    def __call__(self, windows: torch.Tensor) -> torch.Tensor:
        """``float32[N, W >= days, C]`` daily counts -> ``float32[N, C]`` next-day forecasts."""
        logs = log1p_counts(windows[:, -self.days :])
        today = logs[:, -1]
        if self.family == "endpoint trend":
            slope = (today - logs[:, 0]) / (self.days - 1)
            line_today = today
        else:
            offsets = torch.arange(self.days, dtype=logs.dtype) - (self.days - 1) / 2
            slope = (logs * offsets[:, None]).sum(1) / offsets.square().sum()
            line_today = logs.mean(1) + slope * (self.days - 1) / 2
        change = (1 - self.today_weight) * (line_today - today) + self.phi * slope
        # (1 + today) x e^change - 1 rather than expm1(log1p(today) + change): exactly persistence at change 0.
        return (windows[:, -1].clamp_min(0) + 1).mul(torch.exp(change)).clamp_min(1) - 1

    def describe(self) -> str:
        smoothing = f", w {self.today_weight:g}" if self.family == "smoothed trend" else ""
        return f"k {self.days}, phi {self.phi:g}{smoothing}"


def candidates(window: int) -> dict[str, list[Forecaster]]:
    days = [k for k in DAYS_IN_WINDOW if k <= window]
    return {
        "trend": [Forecaster("trend", k, phi) for k, phi in itertools.product(days, TREND_WEIGHTS)],
        "endpoint trend": [Forecaster("endpoint trend", k, phi) for k, phi in itertools.product(days, TREND_WEIGHTS)],
        "smoothed trend": [
            Forecaster("smoothed trend", k, phi, w)
            for k, phi, w in itertools.product(days, TREND_WEIGHTS, TODAY_WEIGHTS)
        ],
    }


@dataclass(frozen=True)
class Period:
    name: str
    windows: torch.Tensor
    targets: torch.Tensor

    def mase(self, forecast: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """MASE per series, ``float32[C]``: the forecast's MAE over the period / persistence's."""
        metric = MeanAbsoluteScaledError(self.targets.shape[-1])
        metric.update(forecast(self.windows), self.targets, baseline=self.windows[:, -1])
        return metric.compute()


def periods(datamodule: Covid19DataModule) -> tuple[list[Period], Period]:
    """The selection periods (validation, twice as long, every day before test) and the test period."""
    datamodule.setup()
    # The windows and their next days (a sample's first target day; the later ones are for multi-day forecasts).
    train, val = datamodule.train_set.tensors, datamodule.val_set.tensors
    before = [torch.cat([train[0], val[0]]), torch.cat([train[1][:, 0], val[1][:, 0]])]
    val_days = len(datamodule.val_set)
    selection = [
        Period(f"{val_days} validation days", before[0][-val_days:], before[1][-val_days:]),
        Period(f"{2 * val_days} days before test", before[0][-2 * val_days :], before[1][-2 * val_days :]),
        Period(f"every day before test ({len(before[0])})", before[0], before[1]),
    ]
    test = datamodule.test_set.tensors
    return selection, Period("test", test[0], test[1][:, 0])


def choose(options: Sequence[Forecaster], period: Period) -> tuple[Forecaster, torch.Tensor]:
    """The option with the lowest mean MASE over ``period`` (the first of equals: persistence wins ties)."""
    scores = [period.mase(option) for option in options]
    best = min(range(len(options)), key=lambda i: (round(float(scores[i].mean()), 6), i))
    return options[best], scores[best]


def table(datamodule: Covid19DataModule) -> list[list[str]]:
    selection, test = periods(datamodule)
    rows = []
    for family, options in candidates(datamodule.hparams.window).items():
        for period in [*selection, test]:
            chosen, score = choose(options, period)
            on_test = test.mase(chosen)
            rows.append(
                [
                    family,
                    "the test days (not allowed)" if period is test else period.name,
                    chosen.describe(),
                    f"{float(score.mean()):.3f}",
                    " / ".join(f"{float(value):.3f}" for value in on_test),
                    "yes" if bool((on_test < 1).all()) else "no",
                ]
            )
    return rows


def section(rows: Sequence[Sequence[str]], columns: Sequence[str], source: str) -> str:
    header = ["family", "chosen on", "configuration", "its mean MASE there", f"test MASE {' / '.join(columns)}"]
    lines = [
        FORECAST_SELECTION.start,
        "### covid19: what validation chooses among simple forecasters (`python -m benchmarks.forecast_selection`)",
        "",
        f"{source}, {time.strftime('%Y-%m-%d', time.gmtime())}. MASE = MAE / persistence MAE on the same days; "
        "every forecaster works on log1p counts of the last k days (see the module docstring). Ties go to "
        "persistence.",
        "",
        "| " + " | ".join([*header, "all test series < 1"]) + " |",
        "|" + " --- |" * (len(header) + 1),
        *("| " + " | ".join(row) + " |" for row in rows),
        FORECAST_SELECTION.end,
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.forecast_selection", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--data-dir", default=None, help="a COVID-19-style file's folder (default: the bundled data)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    datamodule = Covid19DataModule(data_dir=args.data_dir, **CHINA_ONLY)
    rows = table(datamodule)
    source = f"Data: {args.data_dir}" if args.data_dir else "The bundled file (China, 2020-01-24 .. 2020-03-10)"
    text = section(rows, datamodule.columns, source)
    FORECAST_SELECTION.write(text, args.output)
    print(text)


if __name__ == "__main__":
    main()
