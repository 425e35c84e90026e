"""The benchmark harness runs end to end on a tiny setting (timings are never asserted)."""

from __future__ import annotations

from benchmarks import run as harness


def test_harness_writes_a_results_table(tmp_path):
    output = tmp_path / "RESULTS.md"
    harness.main(["--quick", "--tasks", "titanic", "covid19", "--output", str(output)])
    text = output.read_text()
    assert text.startswith("# Benchmark results")
    assert "torch " in text and "pytorch-lightning " in text
    for row in (
        "| titanic / default |",
        "| titanic / tutorial |",
        "| covid19 / default |",
        "| titanic | test/acc >= 0.82 |",
    ):
        assert row in text
    assert "| covid19 | test/mspe < test/persistence_mspe |" in text
    assert "start to summary" in text and "| titanic | " in text.split("start to summary")[1]
