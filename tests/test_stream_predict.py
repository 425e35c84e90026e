"""Streaming predict: chunked formats, same scores as predict_raw, atomic output, bad inputs, progress, DDP."""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from datamodules import PACKAGED_DATA_DIR
from datamodules.base import iter_csv_rows, read_csv_rows
from datamodules.errors import DataError
from datamodules.titanic import read_passengers
from lightning_app.checkpoints import load_checkpoint
from lightning_app.cli import run_cli
from lightning_app.predict import main as predict_main
from lightning_app.raw_inputs import BLANK, RawChunk, StreamedInputs
from lightning_app.streaming import RawChunkDataset, chunk_records, merge_parts, write_block
from lightning_app.tables import RecordFormatter, render_records

REPO = Path(__file__).resolve().parents[1]
TITANIC_TEST_CSV = PACKAGED_DATA_DIR / "titanic" / "test.csv"


def run(argv: list[str], capsys) -> tuple[int, str, list[str]]:
    code = run_cli(predict_main, argv)
    captured = capsys.readouterr()
    return code, captured.out, [line for line in captured.err.splitlines() if line.strip()]


def leftovers(folder: Path) -> list[str]:
    """Hidden temporary or part files a run left beside its output."""
    return sorted(path.name for path in folder.iterdir() if path.name.startswith("."))


# -- formats: streamed chunk by chunk = the whole document -----------------------------------------

RECORDS = [
    {"name": f"row {i}", "text": 'has "quotes", commas\tand é' if i % 3 == 0 else "plain", "p": i / 7, "n": None}
    for i in range(10)
]
COLUMNS = ["name", "text", "p", "n"]


def streamed(records: list[dict[str, Any]], output_format: str, chunk_size: int) -> str:
    formatter = RecordFormatter(COLUMNS, output_format)
    chunks = [formatter.chunk(records[start : start + chunk_size]) for start in range(0, len(records), chunk_size)]
    return "".join(chunks) + formatter.finish()


@pytest.mark.parametrize("output_format", ["csv", "json"])
@pytest.mark.parametrize("chunk_size", [1, 3, 4, 10, 11])
def test_csv_and_json_streamed_in_chunks_equal_the_whole_document(output_format, chunk_size):
    whole = render_records(RECORDS, COLUMNS, output_format) + "\n"
    assert streamed(RECORDS, output_format, chunk_size) == whole
    if output_format == "json":
        assert json.loads(whole) == [{column: record[column] for column in COLUMNS} for record in RECORDS]
    else:
        assert [row["name"] for row in csv.DictReader(io.StringIO(whole))] == [r["name"] for r in RECORDS]


def test_empty_output_is_the_header_or_an_empty_list():
    assert streamed([], "csv", 3) == "name,text,p,n\n"
    assert json.loads(streamed([], "json", 3)) == []
    assert streamed([], "table", 3) == "name  text  p  n\n"


def test_table_widths_come_from_the_first_chunk_and_later_rows_are_padded_to_them():
    records = [{"name": "a", "text": "b", "p": 0.5, "n": 1}, {"name": "a much longer name", "text": "c", "p": 1.0}]
    text = streamed(records, "table", 1).splitlines()
    assert text[0] == "name  text  p    n"
    assert text[1] == "a     b     0.5  1"
    assert text[2].startswith("a much longer name  c     1")
    assert streamed(records, "table", 2) + "" == render_records(records, COLUMNS, "table") + "\n"


# -- reading lazily, chunks shared out over processes ----------------------------------------------


class Endless(StreamedInputs):
    """Items 0, 1, 2, ... without end; item 5 is bad. Records the furthest item read."""

    columns = all_columns = ["item"]

    def __init__(self) -> None:
        self.read = -1

    def items(self) -> Iterator[int]:
        for item in itertools.count():
            self.read = item
            yield item

    def prepare(self, item: int) -> tuple[int, dict[str, Any]]:
        if item == 5:
            raise DataError("endless.txt", "item five is bad", line=item + 1)
        return item, {"item": item}

    def record(self, fields: dict[str, Any], score: dict[str, Any]) -> dict[str, Any]:
        return fields


def test_chunks_are_read_lazily_and_shared_round_robin_over_processes():
    inputs = Endless()
    chunks = RawChunkDataset(inputs, batch_size=2, rank=1, world_size=3, skip_bad_inputs=True)
    first: list[RawChunk] = list(itertools.islice(iter(chunks), 3))
    assert [chunk.index for chunk in first] == [1, 4, 7]
    assert inputs.read < 2 * 8 + 1, "only the items up to the chunks taken were read"
    assert [chunk.inputs for chunk in first] == [[2, 3], [8, 9], [14, 15]]
    (bad,) = list(itertools.islice(iter(RawChunkDataset(inputs, 3, rank=1, world_size=2, skip_bad_inputs=True)), 1))
    assert bad.inputs == [3, 4] and [str(err) for err in bad.skipped] == ["endless.txt:6: item five is bad"]
    stops = list(RawChunkDataset(inputs, 3, rank=1, world_size=2))
    assert len(stops) == 1 and stops[0].error is not None and stops[0].index == 1


def test_csv_rows_stream_bad_rows_as_errors_and_read_csv_rows_raises_them(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_bytes(b"a,b\n1,2\n3\n4,\xff\n5,6\n")
    rows = list(iter_csv_rows(path, ["a"]))
    assert [line for line, _ in rows] == [2, 3, 4, 5]
    assert rows[0][1] == {"a": "1", "b": "2"} and rows[3][1] == {"a": "5", "b": "6"}
    assert str(rows[1][1]) == f"{path}:3: expected 2 fields"
    assert str(rows[2][1]) == f"{path}:4: not UTF-8 text (byte 0xff in column 'b')"
    with pytest.raises(DataError, match=r"rows\.csv:3: expected 2 fields"):
        read_csv_rows(path, ["a"])


# -- the same scores as predict_raw on the whole input ---------------------------------------------


def test_titanic_streamed_in_uneven_chunks_scores_as_predict_raw(trained, capsys):
    checkpoint = trained["titanic"].best_model_path
    code, out, _ = run(["--task", "titanic", "--ckpt", checkpoint, str(TITANIC_TEST_CSV), "--format", "json",
                        "--batch-size", "50"], capsys)  # fmt: skip
    assert code == 0
    records = json.loads(out)
    expected = load_checkpoint(checkpoint, "titanic").module.predict_raw(read_passengers(TITANIC_TEST_CSV, False))
    assert len(records) == len(expected) == 179
    assert [r["survival_probability"] for r in records] == pytest.approx(
        [e["probabilities"]["survived"] for e in expected], abs=1e-6
    )
    assert [r["survived_predicted"] for r in records] == [e["class_id"] for e in expected]


def test_imdb_streamed_in_chunks_of_one_scores_as_predict_raw(trained_imdb, tmp_path, capsys):
    best, _ = trained_imdb
    texts = ["A superb, moving film.", "", "An awful\u0085boring waste of time.", "dull plot", "great great"]
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("\n".join(texts[1:]) + "\n", encoding="utf-8")
    argv = ["--task", "imdb", "--ckpt", str(best), texts[0], "--input-file", str(reviews), "--format", "csv"]
    code, out, _ = run([*argv, "--batch-size", "1"], capsys)
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [row["text"] for row in rows] == texts
    scored = [row for row in rows if row["text"]]  # the blank line keeps its row, unscored (see below)
    expected = load_checkpoint(best, "imdb").module.predict_raw([text for text in texts if text])
    assert [row["label"] for row in scored] == [e["label"] for e in expected]
    assert [float(row["probability"]) for row in scored] == pytest.approx([e["probability"] for e in expected])
    assert (rows[1]["label"], rows[1]["probability"]) == ("", "")


@pytest.mark.parametrize("batch_size", ["1", "2", "512"])
def test_blank_review_lines_keep_their_rows_unscored_with_one_warning_or_are_skipped(
    trained_imdb, tmp_path, capsys, batch_size
):
    best, _ = trained_imdb
    lines = ["great film", "", "awful waste", "   ", "", "dull plot"]
    reviews = tmp_path / "reviews.txt"
    # Saved by Excel or Notepad: a byte-order mark first and CRLF line ends.
    reviews.write_bytes(codecs.BOM_UTF8 + "\r\n".join(lines).encode() + b"\r\n")
    argv = ["--task", "imdb", "--ckpt", str(best), "--input-file", str(reviews), "--batch-size", batch_size]
    expected = load_checkpoint(best, "imdb").module.predict_raw(["great film", "awful waste", "dull plot"])

    code, out, err = run([*argv, "--format", "csv"], capsys)
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [row["text"] for row in rows] == lines, "one row per input line, in order; no BOM in the first review"
    assert [(row["label"], row["probability"]) for row in rows if not row["text"].strip()] == [("", "")] * 3
    assert [row["label"] for row in rows if row["text"].strip()] == [e["label"] for e in expected]
    warnings = [line for line in err if "blank" in line]
    assert warnings == [
        "lightning_app: warning: 3 blank input(s) not scored: their rows have an empty label and probability "
        "(--skip-blank-lines leaves them out)"
    ]

    code, out, err = run([*argv, "--format", "json"], capsys)
    records = json.loads(out)
    assert code == 0 and [r["text"] for r in records] == lines
    assert [(r["label"], r["probability"]) for r in records if not r["text"].strip()] == [(None, None)] * 3
    code, out, err = run([*argv, "--format", "table"], capsys)
    assert code == 0 and len(out.splitlines()) == 1 + len(lines)

    code, out, err = run([*argv, "--format", "csv", "--skip-blank-lines"], capsys)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [row["text"] for row in rows] == ["great film", "awful waste", "dull plot"]
    assert [row["label"] for row in rows] == [e["label"] for e in expected]
    assert not [line for line in err if "blank" in line]


def test_cifar2_streamed_in_chunks_scores_as_predict_raw(three_class_run, capsys):
    root, result = three_class_run
    files = sorted((root / "test").glob("*/*"))
    code, out, _ = run(["--task", "cifar2", "--ckpt", result.best_model_path, str(root / "test"),
                        "--format", "json", "--batch-size", "4"], capsys)  # fmt: skip
    assert code == 0
    records = json.loads(out)
    assert [Path(r["path"]) for r in records] == files
    expected = load_checkpoint(result.best_model_path, "cifar2").module.predict_raw(files)
    assert [r["label"] for r in records] == [e["label"] for e in expected]
    assert [r["probability"] for r in records] == pytest.approx([e["probability"] for e in expected], abs=1e-6)


# -- output safety, bad inputs, progress -----------------------------------------------------------


def bad_titanic_csv(folder: Path) -> Path:
    """The Titanic test file with line 61 one field short and line 121's Sex 'robot'."""
    lines = TITANIC_TEST_CSV.read_text().splitlines(keepends=True)
    lines[60] = lines[60].rsplit(",", 1)[0] + "\n"
    lines[120] = lines[120].replace(",male,", ",robot,").replace(",female,", ",robot,")
    path = folder / "bad.csv"
    path.write_text("".join(lines))
    return path


def test_a_bad_row_midway_stops_with_its_line_and_leaves_the_old_output_and_no_temporary_files(
    trained, tmp_path, capsys
):
    inputs = bad_titanic_csv(tmp_path)
    output = tmp_path / "out" / "scored.csv"
    output.parent.mkdir()
    output.write_text("previous result\n")
    argv = ["--task", "titanic", "--ckpt", trained["titanic"].best_model_path, str(inputs), "--format", "csv"]
    code, out, err = run([*argv, "--output", str(output), "--batch-size", "7"], capsys)
    assert code == 1 and out == ""
    assert err[-1] == f"lightning_app: data error: {inputs}:61: expected 12 fields"
    assert output.read_text() == "previous result\n" and leftovers(output.parent) == []

    code, out, err = run([*argv, "--output", str(output), "--skip-bad-inputs"], capsys)
    assert code == 0 and out == ""
    warnings = [line for line in err if "warning: skipped" in line]
    assert warnings == [
        f"lightning_app: warning: skipped {inputs}:61: expected 12 fields",
        f"lightning_app: warning: skipped {inputs}:121: column 'Sex' must be 'male' or 'female', got 'robot'",
    ]
    assert "lightning_app: skipped 2 bad input(s) (see the warnings above)" in err
    assert len(list(csv.DictReader(output.open()))) == 177 and leftovers(output.parent) == []


def test_an_interrupted_run_leaves_no_output_and_no_temporary_files(trained, tmp_path, monkeypatch):
    from lightning_app.predictors import PassengerRows

    recorded = PassengerRows.record

    def interrupt_at_line_101(self, fields: dict[str, Any], score: dict[str, Any]) -> dict[str, Any]:
        if fields["PassengerId"] == "34":  # line 101 of the file: in the fourth chunk of 30 rows
            raise KeyboardInterrupt
        return recorded(self, fields, score)

    monkeypatch.setattr(PassengerRows, "record", interrupt_at_line_101)
    output = tmp_path / "scored.csv"
    argv = ["--task", "titanic", "--ckpt", trained["titanic"].best_model_path, str(TITANIC_TEST_CSV)]
    with pytest.raises((SystemExit, KeyboardInterrupt)):  # Lightning turns Ctrl-C into exit code 1
        predict_main([*argv, "--format", "csv", "--batch-size", "30", "--output", str(output)])
    assert not output.exists() and leftovers(tmp_path) == []


def test_a_line_that_is_not_utf8_is_named_or_skipped(trained_imdb, tmp_path, capsys):
    best, _ = trained_imdb
    reviews = tmp_path / "reviews.txt"
    reviews.write_bytes(b"good film\nbad \xff bytes\ngreat\n")
    argv = ["--task", "imdb", "--ckpt", str(best), "--input-file", str(reviews), "--format", "csv"]
    code, out, err = run([*argv, "--output", str(tmp_path / "out.csv")], capsys)
    assert code == 1 and len(err) == 1 and f"{reviews}:2: not UTF-8 text" in err[0]
    assert leftovers(tmp_path) == [] and not (tmp_path / "out.csv").exists()
    code, out, err = run([*argv, "--skip-bad-inputs", "--batch-size", "2"], capsys)
    assert code == 0 and [row["text"] for row in csv.DictReader(io.StringIO(out))] == ["good film", "great"]
    assert sum(f"skipped {reviews}:2: not UTF-8" in line for line in err) == 1


def test_an_unreadable_image_in_a_folder_is_named_or_skipped(three_class_run, tmp_path, capsys):
    root, result = three_class_run
    folder = tmp_path / "images"
    for path in sorted((root / "test" / "cat").iterdir()):
        (folder / path.name).parent.mkdir(exist_ok=True)
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "1b.png").write_text("not an image")
    argv = ["--task", "cifar2", "--ckpt", result.best_model_path, str(folder), "--format", "json"]
    code, out, err = run(argv, capsys)
    assert code == 1 and len(err) == 1 and "1b.png: not a readable image" in err[0]
    code, out, err = run([*argv, "--skip-bad-inputs", "--batch-size", "1"], capsys)
    assert code == 0 and len(json.loads(out)) == 3
    assert sum("skipped" in line and "1b.png" in line for line in err) == 1


def test_progress_bar_only_on_stderr_and_only_when_asked_or_a_terminal(trained, capsys):
    argv = ["--task", "titanic", "--ckpt", trained["titanic"].best_model_path, str(TITANIC_TEST_CSV), "--format", "csv"]
    code, out, err = run(argv, capsys)  # capsys' stderr is not a terminal
    assert code == 0 and not any("rows/s" in line for line in err)
    code, forced_out, err = run([*argv, "--progress"], capsys)
    assert code == 0 and forced_out == out and "rows/s" not in out
    assert any("179 rows" in line and "rows/s" in line for line in err)


def test_several_processes_need_an_output_file(trained, capsys):
    argv = ["--task", "titanic", "--ckpt", trained["titanic"].best_model_path, str(TITANIC_TEST_CSV)]
    code, out, err = run([*argv, "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp"], capsys)
    assert code == 2 and out == "" and err[-1].startswith("lightning_app: error: several processes need --output")
    code, _, err = run([*argv, "--batch-size", "0"], capsys)
    assert code == 2 and "--batch-size must be at least 1" in err[-1]


# -- two processes write what one writes -----------------------------------------------------------


def predict_process(*args: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "lightning_app.predict", "--accelerator", "cpu", *args]
    return subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_two_ddp_processes_write_the_bytes_of_one(trained, tmp_path):
    common = ["--task", "titanic", "--ckpt", trained["titanic"].best_model_path, str(TITANIC_TEST_CSV)]
    for output_format in ("csv", "table"):
        one, two = tmp_path / f"one.{output_format}", tmp_path / f"two.{output_format}"
        argv = [*common, "--format", output_format, "--batch-size", "7"]  # 26 chunks: 13 per process
        done = predict_process(*argv, "--devices", "1", "--output", str(one))
        assert done.returncode == 0, done.stderr
        done = predict_process(*argv, "--devices", "2", "--strategy", "ddp", "--output", str(two))
        assert done.returncode == 0, done.stderr
        assert two.read_bytes() == one.read_bytes()
        assert done.stderr.count(f"wrote 179 predictions to {two}") == 1
    bad = bad_titanic_csv(tmp_path)
    done = predict_process(*common[:4], str(bad), "--batch-size", "7", "--devices", "2", "--strategy", "ddp",
                           "--output", str(tmp_path / "bad.csv.out"))  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.count(f"lightning_app: data error: {bad}:61: expected 12 fields") == 1
    assert leftovers(tmp_path) == [] and not (tmp_path / "bad.csv.out").exists()


def test_blank_rows_keep_their_place_through_part_files_and_the_merge(tmp_path):
    class Lines(StreamedInputs):
        columns = all_columns = ["text", "label"]

        def items(self):
            return iter(["a", "", "b", " ", "c"])

        def prepare(self, item):
            return (item if item.strip() else BLANK), {"text": item}

        def record(self, fields, score):
            return {**fields, "label": score}

    inputs = Lines()
    chunks = [inputs.prepare_chunk(index, items, False) for index, items in enumerate((["a", ""], ["b", " ", "c"]))]
    assert [(len(chunk), chunk.blank) for chunk in chunks] == [(1, [1]), (2, [1])]
    parts = [tmp_path / "part0", tmp_path / "part1"]
    for chunk, part in zip(chunks, parts, strict=True):
        with part.open("wb") as handle:
            records = chunk_records(inputs, chunk, [f"L{text}" for text in chunk.inputs])
            write_block(handle, chunk.index, records, 0, len(chunk.blank))
    merged = io.BytesIO()
    assert merge_parts(parts, RecordFormatter(["text", "label"], "csv"), merged) == (0, 2)
    assert merged.getvalue().decode() == "text,label\na,La\n,\nb,Lb\n ,\nc,Lc\n"
