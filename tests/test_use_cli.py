"""Using trained checkpoints: the test, predict and export command lines."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import torch

from datamodules import PACKAGED_DATA_DIR
from datamodules.titanic import read_passengers
from lightning_app import export as export_cli
from lightning_app import predict as predict_cli
from lightning_app import test as test_cli
from lightning_app.checkpoints import load_checkpoint
from lightning_app.cli import run_cli

TITANIC_TEST_CSV = PACKAGED_DATA_DIR / "titanic" / "test.csv"


def run(main, argv, capsys) -> tuple[int, str, list[str]]:
    code = run_cli(main, argv)
    captured = capsys.readouterr()
    return code, captured.out, [line for line in captured.err.splitlines() if line.strip()]


@pytest.mark.parametrize("task", ["titanic", "covid19"])
def test_test_cli_reproduces_the_fit_metrics(trained, capsys, task):
    code, out, _ = run(
        test_cli.main, ["--task", task, "--ckpt", trained[task].best_model_path, "--format", "json"], capsys
    )
    assert code == 0
    metrics = json.loads(out)
    test_keys = {key for key in trained[task].metrics if key.startswith("test/")}
    assert "test/loss" in test_keys and set(metrics) == test_keys
    for key, value in metrics.items():
        assert value == pytest.approx(trained[task].metrics[key], rel=1e-5, abs=1e-6), key


def test_test_cli_table_shows_the_baseline_column(trained, capsys):
    code, out, _ = run(test_cli.main, ["--task", "covid19", "--ckpt", trained["covid19"].best_model_path], capsys)
    assert code == 0 and out.splitlines()[0].split() == ["metric", "value", "persistence"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", "titanic", "--ckpt", "missing.ckpt"], "missing.ckpt: no such checkpoint file"),
        (["--task", "covid19", "--ckpt", "TITANIC"], "a checkpoint of task 'titanic', not 'covid19'"),
    ],
)
def test_bad_checkpoints_are_one_line_errors(trained, capsys, argv, message):
    argv = [trained["titanic"].best_model_path if arg == "TITANIC" else arg for arg in argv]
    for main in (test_cli.main, predict_cli.main):
        code, out, err = run(main, argv, capsys)
        assert code == 2 and out == "" and len(err) == 1 and message in err[0]


def test_predict_titanic_writes_the_csv_back_with_probabilities(trained, capsys, tmp_path):
    output = tmp_path / "scored.csv"
    argv = ["--task", "titanic", "--ckpt", trained["titanic"].best_model_path, str(TITANIC_TEST_CSV)]
    code, _, _ = run(predict_cli.main, [*argv, "--format", "csv", "--output", str(output)], capsys)
    assert code == 0
    rows = list(csv.DictReader(output.open()))
    original = list(csv.DictReader(TITANIC_TEST_CSV.open()))
    assert len(rows) == len(original) == 179
    assert rows[0]["Name"] == original[0]["Name"] and rows[0]["Ticket"] == original[0]["Ticket"]
    module = load_checkpoint(trained["titanic"].best_model_path, "titanic").module
    expected = module.predict_raw(read_passengers(TITANIC_TEST_CSV))
    assert [float(row["survival_probability"]) for row in rows] == pytest.approx(
        [score["probabilities"]["survived"] for score in expected]
    )
    assert {row["survived_predicted"] for row in rows} <= {"0", "1"}

    code, table, _ = run(predict_cli.main, argv, capsys)
    assert code == 0 and table.splitlines()[0].split() == ["PassengerId", "Name", "survival_probability",
                                                           "survived_predicted"]  # fmt: skip


def test_predict_titanic_empty_input_file_is_a_one_line_error(trained, capsys, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    code, out, err = run(predict_cli.main, ["--task", "titanic", "--ckpt", trained["titanic"].best_model_path,
                                            "--input-file", str(empty)], capsys)  # fmt: skip
    assert code == 1 and out == "" and len(err) == 1 and "empty.csv: file is empty" in err[0]


def test_predict_covid_forecasts_and_plots(trained, capsys, tmp_path):
    plot = tmp_path / "forecast.png"
    argv = ["--task", "covid19", "--ckpt", trained["covid19"].best_model_path, "--days", "3", "--plot", str(plot)]
    code, out, err = run(predict_cli.main, [*argv, "--format", "json"], capsys)
    assert code == 0
    records = json.loads(out)
    assert [r["date"] for r in records] == ["2020-03-11", "2020-03-12", "2020-03-13"]
    module = load_checkpoint(trained["covid19"].best_model_path).module
    forecast = module.forecast(3)
    assert [r["dead_num_new"] for r in records] == pytest.approx(forecast.point[:, 2].tolist(), abs=0.05)
    assert [r["dead_num_low_80"] for r in records] == pytest.approx(forecast.lower[:, 2].tolist(), abs=0.05)
    assert [r["dead_num_high_80"] for r in records] == pytest.approx(forecast.upper[:, 2].tolist(), abs=0.05)
    low_95, high_95 = forecast.interval(95)
    assert [r["dead_num_low_95"] for r in records] == pytest.approx(low_95[:, 2].tolist(), abs=0.05)
    assert [r["dead_num_high_95"] for r in records] == pytest.approx(high_95[:, 2].tolist(), abs=0.05)
    for r in records:
        assert r["cured_num_low_95"] <= r["cured_num_low_50"] <= r["cured_num_new"] <= r["cured_num_high_50"]
        assert r["cured_num_high_50"] <= r["cured_num_high_95"] and r["series"] == "covid19"
    assert records[0]["confirmed_num_total"] == pytest.approx(80754.0 + float(forecast.point[0, 0]), abs=0.05)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"wrote {plot}" in err[-1]

    code, _, err = run(predict_cli.main, [*argv[:4], "some-input"], capsys)
    assert code != 0 and len(err) == 1 and "some-input: file or folder not found" in err[0]


@pytest.mark.filterwarnings("ignore:`torch.jit.\\w+` is deprecated:FutureWarning")
@pytest.mark.parametrize("output_format", ["torchscript", "onnx"])
@pytest.mark.parametrize("task", ["titanic", "covid19"])
def test_export_matches_the_module(trained, capsys, tmp_path, run_exported, task, output_format):
    argv = ["--ckpt", trained[task].best_model_path, "--format", output_format, "--output-dir", str(tmp_path)]
    code, out, _ = run(export_cli.main, argv, capsys)
    assert code == 0 and str(tmp_path) in out
    metadata = json.loads((tmp_path / "preprocessing.json").read_text())
    module = load_checkpoint(trained[task].best_model_path).module
    assert metadata["task"] == task and metadata["preprocessing"] == module.preprocessing
    inputs = torch.rand(5, *module.example_input_array.shape[1:]) * 3  # another batch size than the traced one
    with torch.no_grad():
        assert torch.allclose(
            run_exported(tmp_path, output_format, inputs), module.predict_step((inputs,), 0), atol=1e-5
        )


def test_export_refuses_a_file_that_is_not_a_checkpoint(tmp_path, capsys):
    bogus = tmp_path / "x.ckpt"
    bogus.write_bytes(b"\x00" * 10)
    code, _, err = run(export_cli.main, ["--ckpt", str(bogus), "--format", "torchscript"], capsys)
    assert code == 2 and len(err) == 1 and "not a PyTorch checkpoint" in err[0]
    assert not list(tmp_path.glob("*-torchscript"))


def _using_cli_argv(task: str, checkpoint: Path) -> dict:
    """The argv of each command line that reads ``checkpoint``."""
    return {
        test_cli.main: ["--task", task, "--ckpt", str(checkpoint)],
        predict_cli.main: ["--task", task, "--ckpt", str(checkpoint)],
        export_cli.main: ["--ckpt", str(checkpoint), "--format", "torchscript", "--output-dir", str(checkpoint) + "-x"],
    }


def _edited_checkpoint(source: str, target: Path, edit: str) -> tuple[str, str]:
    """Save ``source`` to ``target`` with its network's first parameter renamed or reshaped; return (key, new key)."""
    checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    state = checkpoint["state_dict"]
    key = next(name for name in state if name.startswith("net."))
    renamed = key.replace("net.", "net.renamed_", 1)
    if edit == "renamed":
        checkpoint["state_dict"] = {renamed if name == key else name: value for name, value in state.items()}
    else:
        state[key] = torch.zeros(*state[key].shape, 2)
    torch.save(checkpoint, target)
    return key, renamed


@pytest.mark.parametrize("edit", ["renamed", "reshaped"])
def test_a_checkpoint_of_another_network_version_is_a_one_line_error(trained, capsys, tmp_path, edit):
    # What renaming a network's layers does to its old checkpoints: predict, test and export name the task, the
    # checkpoint's net and the first keys at fault, instead of load_state_dict's traceback.
    checkpoint = tmp_path / "other-version.ckpt"
    key, renamed = _edited_checkpoint(trained["covid19"].best_model_path, checkpoint, edit)
    expected = [f"missing {key}", f"unexpected {renamed}"] if edit == "renamed" else [f"wrong shape {key}"]
    for main, argv in _using_cli_argv("covid19", checkpoint).items():
        code, out, err = run(main, argv, capsys)
        assert code == 2 and out == "" and len(err) == 1, (main.__module__, err)
        assert f"{checkpoint}: its weights do not fit this version's covid19 network 'quantile_mlp'" in err[0]
        assert all(part in err[0] for part in expected), err[0]
    assert not list(tmp_path.glob("*-x"))


def test_a_truncated_checkpoint_is_a_one_line_error(trained, capsys, tmp_path):
    data = Path(trained["titanic"].best_model_path).read_bytes()
    checkpoint = tmp_path / "truncated.ckpt"
    checkpoint.write_bytes(data[: len(data) // 2])
    for main, argv in _using_cli_argv("titanic", checkpoint).items():
        code, out, err = run(main, argv, capsys)
        assert code == 2 and out == "" and len(err) == 1, (main.__module__, err)
        assert f"{checkpoint}: not a PyTorch checkpoint" in err[0]
    assert not list(tmp_path.glob("*-x"))


def test_render_records_csv_round_trips():
    from lightning_app.tables import render_records

    text = render_records([{"a": 1, "b": "x,y"}], ["a", "b"], "csv")
    assert list(csv.DictReader(io.StringIO(text))) == [{"a": "1", "b": "x,y"}]


# -- raw inputs and the training-time encoding agree ------------------------------------------------


def test_titanic_raw_passengers_score_as_the_encoded_test_batches(scored_fresh, rows_match):
    """The test CSV parsed and scored by ``predict_raw`` from a reloaded checkpoint gives, row for row, the
    probabilities of the DataModule's encoded test batches: prediction-time preprocessing matches training's."""
    scored = scored_fresh["titanic"]
    assert len(scored["raw"]) == len(read_passengers(TITANIC_TEST_CSV, with_label=False))
    rows_match(scored["encoded"], scored["raw"])
    rows_match(scored["encoded_outputs"], scored["raw_outputs"])


def test_covid_forecast_from_raw_counts_matches_the_encoded_test_windows(scored_fresh, rows_match):
    """One-day forecasts from the raw daily counts up to each test day equal the model on the DataModule's test
    windows, and the series end stored in the checkpoint is the file's end."""
    scored = scored_fresh["covid19"]
    assert len(scored["encoded"]) == 7  # the test week
    rows_match(scored["encoded"], scored["raw"])
    rows_match(scored["file_end"], scored["stored_end"])
