"""The benchmark harness runs end to end on a tiny setting (timings are never asserted)."""

from __future__ import annotations

import pytest

from benchmarks import peers
from benchmarks import run as harness
from benchmarks.sections import PEERS


def _quick_harness_text(tmp_path, *flags: str) -> str:
    """RESULTS.md after ``python -m benchmarks.run --quick *flags`` over a file that already holds a peers row."""
    output = tmp_path / "RESULTS.md"
    rows = [peers.Row("titanic", "default", "this project", "test/acc", [0.8, 0.82, 0.81], [1.0, 1.1, 1.2])]
    PEERS.write(peers.section(rows, [0, 1, 2]), output)
    harness.main(["--quick", *flags, "--output", str(output)])
    return output.read_text()


def _assert_titanic_rows(text: str) -> None:
    assert text.startswith("# Benchmark results")
    assert "torch " in text and "pytorch-lightning " in text
    for row in ("| titanic / default |", "| titanic / tutorial |", "| titanic | test/acc >= 0.82 |"):
        assert row in text
    assert "start to summary" in text and "| titanic | " in text.split("start to summary")[1]
    assert "| titanic | default | this project | test/acc | 0.8100 (0.8000-0.8200) | 1.1 (1.0-1.2) | 3 |" in text
    (row,) = [line for line in text.splitlines() if line.startswith("| titanic | test/acc >= ")]
    _, _, target, measured, reached, *_ = (cell.strip() for cell in row.split("|"))
    threshold = float(target.removeprefix("test/acc >= "))
    assert reached == ("1/1" if float(measured) >= threshold else "0/1"), row  # computed from the measured value


def test_harness_writes_a_results_table_and_keeps_the_peers_section(tmp_path):
    """One task, no torch.compile section (compiling and a second fit process cost most of the run): the slow
    test below runs the harness over two tasks with the compile section."""
    text = _quick_harness_text(tmp_path, "--tasks", "titanic", "--no-compile")
    _assert_titanic_rows(text)
    assert "torch.compile" not in text and "covid19" not in text


@pytest.mark.slow
def test_harness_over_two_tasks_with_the_compile_section(tmp_path):
    text = _quick_harness_text(tmp_path, "--tasks", "titanic", "covid19")
    _assert_titanic_rows(text)
    assert "| covid19 / default |" in text and "| covid19 | test/relative_wis < 1 |" in text
    assert "| covid19 | " in text.split("start to summary")[1]
    compiled = text.split("torch.compile (fit --compile)")[1]
    assert "| titanic | " in compiled and "| covid19 | " in compiled


def test_peers_section_replaces_the_previous_one(tmp_path):
    output = tmp_path / "RESULTS.md"
    output.write_text("# Benchmark results\n\nearlier sections\n")
    first = peers.section([peers.Row("imdb", "x", "peer", "test/acc", [0.5], [2.0])], [0])
    PEERS.write(first, output)
    second = peers.section([peers.Row("imdb", "y", "peer", "test/acc", [0.6], [3.0])], [0])
    PEERS.write(second, output)
    text = output.read_text()
    assert text.count(PEERS.start) == 1 and "| imdb | y | peer |" in text and "| imdb | x |" not in text
    assert text.startswith("# Benchmark results\n\nearlier sections")
    titanic = peers.section([peers.Row("titanic", "z", "peer", "test/acc", [0.8], [1.0])], [0])
    PEERS.write(titanic, output)
    assert peers.kept_rows(output, ["imdb"]) == [titanic.splitlines()[-2]]  # a rerun of imdb keeps titanic's row


def test_tutorial_recipe_trains_the_tutorial_network_in_a_plain_loop():
    row = peers.tutorial_recipe("titanic")
    assert row.kind == "plain PyTorch loop" and row.metric == "test/acc"
    assert 0.7 <= row.values[0] <= 1.0 and row.seconds[0] > 0


def test_target_reached_compares_the_measured_metrics():
    at_least = harness.Target("test/acc", threshold=0.9)
    assert at_least.reached({"test/acc": 0.9}) and not at_least.reached({"test/acc": 0.8999})
    below = harness.Target("test/mae", lower_than="test/persistence_mae")
    assert below.reached({"test/mae": 1.0, "test/persistence_mae": 2.0})
    assert not below.reached({"test/mae": 2.0, "test/persistence_mae": 2.0})


def test_scale_measures_a_process_tree_and_reads_its_rows_back_by_what_they_measured(tmp_path, monkeypatch):
    import sys

    from benchmarks import scale

    # The child writes every page of its block and holds it until a poll has seen it (then the test lets it go), so
    # the result does not hang on how the two processes are scheduled; 120 s is a bound for a poll that never sees it.
    release = tmp_path / "seen"
    allocate = (
        "import os, sys, time; block = b'x' * (300 * 2**20); deadline = time.monotonic() + 120\n"
        "while not os.path.exists(sys.argv[1]) and time.monotonic() < deadline: time.sleep(0.01)\n"
        "print(len(block))"
    )
    tree_rss = scale._tree_rss_bytes

    def polled(pid: int) -> tuple[int, int]:
        total, largest = tree_rss(pid)
        if largest >= 300 * 2**20:
            release.touch()
        return total, largest

    monkeypatch.setattr(scale, "_tree_rss_bytes", polled)
    measured = scale.measure([sys.executable, "-c", allocate, str(release)], poll_seconds=0.05)
    assert release.exists(), "a poll saw the block"
    assert measured.stdout.strip() == str(300 * 2**20)
    assert measured.peak_rss_process >= 300 * 2**20 and measured.peak_rss_total >= measured.peak_rss_process
    output = tmp_path / "RESULTS.md"
    first = scale.Row("predict imdb", "1,000", 1, measured, 10.0)
    other = scale.Row("predict imdb", "1,000", 2, measured, 20.0)
    scale.SCALE.write(scale.section([first.markdown(), other.markdown()], "test machine"), output)
    rows = scale.earlier_rows(output)
    assert rows == [first.markdown(), other.markdown()]
    assert scale.row_key(rows[1]) == ["predict imdb", "1,000", "2"]


def _daily_series_file(folder, daily_rows):
    folder.mkdir()
    lines = ["date\tcases\tdeaths"]
    lines += [f"2020-03-{day + 1:02d}\t{a:g}\t{b:g}" for day, (a, b) in enumerate(daily_rows)]
    (folder / "covid-19.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_forecast_selection_follows_a_steady_trend_and_gives_ties_to_persistence(tmp_path):
    from benchmarks import forecast_selection
    from datamodules import Covid19DataModule

    growing = [[round(10 * 1.1**day), round(5 * 1.05**day)] for day in range(30)]
    rows = forecast_selection.table(
        Covid19DataModule(data_dir=_daily_series_file(tmp_path / "g", growing), counts="daily", window=8)
    )
    trend_rows = [row for row in rows if row[0] == "trend"]
    assert [row[1] for row in trend_rows] == [
        "7 validation days", "14 days before test", "every day before test (15)", "the test days (not allowed)"
    ]  # fmt: skip
    for row in trend_rows:
        assert "phi 1" in row[2] and row[5] == "yes", row  # growth is exactly log-linear but for rounding

    flat = [[100, 7]] * 30
    rows = forecast_selection.table(
        Covid19DataModule(data_dir=_daily_series_file(tmp_path / "f", flat), counts="daily", window=8)
    )
    assert {row[2] for row in rows if row[0] != "smoothed trend"} == {"k 3, phi 0"}
    assert {row[4] for row in rows} == {"1.000 / 1.000"} and {row[5] for row in rows} == {"no"}


def test_forecast_selection_writes_its_section(tmp_path):
    from benchmarks import forecast_selection
    from benchmarks.sections import FORECAST_SELECTION

    output = tmp_path / "RESULTS.md"
    output.write_text("# Benchmark results\n\nkept\n")
    forecast_selection.main(["--output", str(output)])
    text = output.read_text()
    assert text.startswith("# Benchmark results\n\nkept\n") and FORECAST_SELECTION.read(output).count("| trend |") == 4
