"""``python -m lightning_app.backtest``: rows, figures recomputed from the CSV, no leaks, the baseline, errors."""

from __future__ import annotations

import csv
import datetime as dt
import re
from pathlib import Path

import pytest
import torch

from datamodules.panels import read_panel
from lightning_app.backtest import (
    CSV_COLUMNS,
    LEAVE_SERIES_OUT,
    ROLLING,
    WEEK,
    BacktestResult,
    FitRecord,
    build_parser,
    main,
    pooled_figures,
    run_backtest,
    settings_from_args,
    write_rows,
)
from lightning_app.cli import run_cli

SERIES = 5
DAYS = 50
COLUMNS = ("a", "b")
#: Every run here: one weekly origin, two folds, one epoch.
QUICK = ["--task", "covid19", "--max-epochs", "1", "--origins", "1", "--folds", "2", "--no-progress-bar"]


def write_series(path: Path, days: int, seed: int) -> None:
    """A cumulative ``date, a, b`` series of ``days`` days."""
    generator = torch.Generator().manual_seed(seed)
    daily = torch.randint(0, 30, (days, len(COLUMNS)), generator=generator) + torch.arange(days).unsqueeze(1)
    cumulative = daily.cumsum(0).tolist()
    start = dt.date(2020, 3, 1) + dt.timedelta(days=seed)
    lines = ["date," + ",".join(COLUMNS)]
    lines += [f"{start + dt.timedelta(days=i)},{a},{b}" for i, (a, b) in enumerate(cumulative)]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def panel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("panel")
    for index in range(SERIES):
        write_series(folder / f"s{index}.csv", DAYS, index)
    return folder


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture(scope="module")
def trained(panel_dir: Path) -> tuple[BacktestResult, list[FitRecord]]:
    """One backtest of the default model, its fits recorded through the ``on_fit`` hook."""
    settings = settings_from_args(build_parser().parse_args([*QUICK, "--data-dir", str(panel_dir)]))
    seen: list[FitRecord] = []
    result = run_backtest(read_panel(panel_dir), settings, on_fit=seen.append)
    return result, seen


def test_csv_rows_and_pooled_figures_recomputed_from_them(trained, tmp_path: Path) -> None:
    result, _ = trained
    path = tmp_path / "rows.csv"
    write_rows(path, result.rows)
    columns, rows = read_rows(path)
    assert columns == list(CSV_COLUMNS)
    # series x columns x origins x horizons, once per evaluation
    assert len(rows) == SERIES * len(COLUMNS) * 1 * WEEK * 2
    assert {row["fold"] for row in rows} == {ROLLING, "0", "1"}
    assert sorted({int(row["horizon"]) for row in rows}) == list(range(1, WEEK + 1))
    recomputed, returned = pooled_figures(rows), result.figures
    assert set(recomputed) == {ROLLING, LEAVE_SERIES_OUT}
    for evaluation, figures in returned.items():
        assert recomputed[evaluation] == pytest.approx(figures, rel=1e-9, nan_ok=True)
        assert {"relative_wis", "relative_mae", "coverage_50", "coverage_80", "coverage_95"} <= set(figures)
        assert {f"relative_wis_h{h}" for h in range(1, WEEK + 1)} <= set(figures)


def test_leave_series_out_never_trains_on_a_scored_series(trained) -> None:
    result, seen = trained
    assert seen == result.fits
    assert [fit.fold for fit in seen] == [ROLLING, "0", "1"]
    assert [fit.evaluation for fit in seen] == [ROLLING, LEAVE_SERIES_OUT, LEAVE_SERIES_OUT]
    names = {f"s{index}" for index in range(SERIES)}
    held_out = [fit for fit in seen if fit.evaluation == LEAVE_SERIES_OUT]
    assert sorted(name for fit in held_out for name in fit.scored) == sorted(names)
    result_last = {}  # the last day of each series: rolling origin k=1 trains on every series whole
    result_last.update(seen[0].trained_on)
    for fit in held_out:
        assert not set(fit.trained_on) & set(fit.scored)
        assert set(fit.trained_on) | set(fit.scored) == names
        # the other series are trained on whole (a new series is what leave-series-out scores)
        assert all(last == result_last[name] for name, last in fit.trained_on.items())
    rolling = seen[0]
    assert set(rolling.trained_on) == names  # its test week is the scored week, which the DataModule never trains on
    assert all(fit.seconds > 0 for fit in seen)


def test_cli_prints_the_figures_of_its_csv(panel_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    output = tmp_path / "rows.csv"
    logs = tmp_path / "logs"
    assert run_cli(main, [*QUICK, "--data-dir", str(panel_dir), "--output", str(output), "--log-dir", str(logs)]) == 0
    printed = capsys.readouterr().out
    runs = ["leave-series-out-fold0", "leave-series-out-fold1", "rolling-origin1"]
    assert sorted(path.name for path in (logs / "covid19").iterdir()) == runs
    assert all((logs / "covid19" / run / "metrics.csv").is_file() for run in runs)
    figures = pooled_figures(read_rows(output)[1])
    line = next(line for line in printed.splitlines() if line.startswith("relative_wis "))
    values = [float(value) for value in line.split()[1:]]
    expected = [figures[evaluation]["relative_wis"] for evaluation in (ROLLING, LEAVE_SERIES_OUT)]
    assert values == pytest.approx(expected, abs=1e-4)
    assert "training time per fit" in printed
    assert re.search(r"^s0\s", printed, re.MULTILINE)


def test_baseline_has_relative_wis_one(panel_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    output = tmp_path / "rows.csv"
    argv = [*QUICK, "--data-dir", str(panel_dir), "--model", "baseline", "--output", str(output)]
    assert run_cli(main, argv) == 0
    printed = capsys.readouterr().out
    for figures in pooled_figures(read_rows(output)[1]).values():
        assert figures["relative_wis"] == pytest.approx(1.0)
        assert figures["relative_mae"] == pytest.approx(1.0)
        assert 0 <= figures["coverage_80"] <= 1
    assert "training time" not in printed  # nothing trained


def test_default_data_is_china_and_the_panel(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    output = tmp_path / "rows.csv"
    argv = ["--task", "covid19", "--model", "baseline", "--origins", "2", "--output", str(output)]
    assert run_cli(main, argv) == 0
    rows = read_rows(output)[1]
    series = {row["series"] for row in rows}
    assert len(series) == 35 and "china" in series
    assert len(rows) == 35 * 3 * 2 * WEEK * 2
    assert "35 series" in capsys.readouterr().out


def test_too_short_series_names_its_file(panel_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for path in panel_dir.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    write_series(tmp_path / "short.csv", 25, 9)
    # a data problem: one line naming the file, exit 1 (as fit's data errors); usage errors exit 2
    assert run_cli(main, [*QUICK, "--data-dir", str(tmp_path)]) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "short.csv" in error and "series 'short'" in error and "--origins 1" in error


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--folds", "9"], "--folds must be between 2"),
        (["--origins", "0"], "--origins must be at least 1"),
        (["--model", "nope"], "has no model 'nope'"),
    ],
)
def test_usage_errors_are_one_line(
    panel_dir: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    assert run_cli(main, [*QUICK, "--data-dir", str(panel_dir), *argv]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1


def test_other_tasks_are_refused(capsys: pytest.CaptureFixture) -> None:
    assert run_cli(main, ["--task", "titanic"]) == 2
    assert "only --task covid19" in capsys.readouterr().err
