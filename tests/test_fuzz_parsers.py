"""Property-based tests of the CSV/TSV parsers and the preprocessing built on them.

Whatever text a user's file holds, the parsers either return well-formed data
or raise :class:`DataError` naming the file; nothing else escapes.
The IMDB part covers the TSV reader (arbitrary text and rows, U+0085 and other
line separators inside a review, ``\\r``, missing or extra tabs, bad labels) and
the tokenizers and encoding (any string tokenizes, ids stay inside the
vocabulary and the padded length, ``<br />`` never survives as a token).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
import json
import math
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from datamodules import PACKAGED_DATA_DIR, Covid19DataModule, DataError, TitanicDataModule
from datamodules.count_series import COUNT_COLUMNS, DATE_COLUMN, daily_differences, make_windows, read_counts
from datamodules.titanic import (
    EXTENDED_FEATURES,
    INPUT_COLUMNS,
    LABEL_COLUMN,
    TUTORIAL_FEATURES,
    extended_features,
    fit_feature_stats,
    parse_passenger,
    read_passengers,
    tutorial_features,
)

#: Examples per property: enough to find the bugs listed at the end in a few seconds. For a deeper search:
#: FUZZ_EXAMPLES=2000 python -m pytest tests/test_fuzz_parsers.py tests/test_download.py
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_fuzzing_replays_the_same_examples_unless_asked_for_new_ones() -> None:
    """The fast suite replays (a derandomized profile, tests/conftest.py); FUZZ_SEED (CI's slow stage) and
    FUZZ_RANDOM=1 draw new examples."""
    replay = os.environ.get("FUZZ_RANDOM") != "1" and not os.environ.get("FUZZ_SEED")
    assert settings.default.derandomize is replay and FUZZ.derandomize is replay
    assert FUZZ.max_examples == FUZZ_EXAMPLES


TITANIC_HEADER = ["PassengerId", LABEL_COLUMN, *INPUT_COLUMNS, "Ticket"]
COVID_HEADER = [DATE_COLUMN, *COUNT_COLUMNS]


@contextmanager
def scratch_dir() -> Iterator[Path]:
    """A fresh folder per example (pytest's tmp_path is shared by all examples of one test)."""
    folder = tempfile.mkdtemp(prefix="fuzz-")
    try:
        yield Path(folder)
    finally:
        shutil.rmtree(folder)


# ---------------------------------------------------------------------------------------------- strategies

any_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=400)  # Cs: not encodable as UTF-8
any_cell = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
number_text = st.one_of(
    st.integers(min_value=-(10**400), max_value=10**400).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(min_value=-1e3, max_value=1e3).map(lambda x: f"{x:.3f}"),
    st.sampled_from(["", " ", "0", "1", "2", "3", "1.0", "-0", "1e308", "1e-320", "nan", "inf", "1_0", " 7 ", "0x1"]),
)


def cell(plausible: list[str], numeric: bool = False) -> st.SearchStrategy[str]:
    options = [st.sampled_from(plausible), any_cell]
    return st.one_of(*options, number_text) if numeric else st.one_of(*options)


titanic_cells = {
    "PassengerId": number_text,
    LABEL_COLUMN: cell(["0", "1"], numeric=True),
    "Pclass": cell(["1", "2", "3"], numeric=True),
    "Name": cell(["Smith, Mr. John", "Doe, Mrs. Jane (Roe)", "X, Countess. of Y", "no comma", ""]),
    "Sex": cell(["male", "female", " Female ", "MALE"]),
    "Age": cell(["", "22", "0.42", "80"], numeric=True),
    "SibSp": cell(["0", "1", "8"], numeric=True),
    "Parch": cell(["0", "2", "6"], numeric=True),
    "Fare": cell(["", "7.25", "0", "512.3292"], numeric=True),
    "Cabin": cell(["", "C85", "B57 B59"]),
    "Embarked": cell(["", "S", "C", "Q", "s"]),
    "Ticket": any_cell,
}
#: Rows that usually parse: valid categorical cells, numbers mostly inside the accepted ranges.
valid_titanic_cells = {
    **titanic_cells,
    LABEL_COLUMN: st.sampled_from(["0", "1"]),
    "Pclass": st.sampled_from(["1", "2", "3"]),
    "Sex": st.sampled_from(["male", "female"]),
    "Embarked": st.sampled_from(["", "S", "C", "Q"]),
    "Age": st.one_of(st.just(""), st.floats(0, 150).map(repr), st.integers(0, 150).map(str)),
    "Fare": st.one_of(st.just(""), st.floats(0, 1e5).map(repr), st.integers(0, 10**5).map(str)),
    "SibSp": st.integers(0, 100).map(str),
    "Parch": st.one_of(st.integers(0, 100).map(str), number_text),
}
# Half the rows are arbitrary, half usually valid, so examples get past the first bad cell to the code behind it.
titanic_row = st.one_of(st.fixed_dictionaries(titanic_cells), st.fixed_dictionaries(valid_titanic_cells))
titanic_rows = st.lists(titanic_row, min_size=0, max_size=12)
covid_rows = st.lists(
    st.fixed_dictionaries(
        {
            DATE_COLUMN: st.one_of(st.dates().map(str), any_cell),
            **{column: cell(["0", "10", "25.0"], numeric=True) for column in COUNT_COLUMNS},
        }
    ),
    min_size=0,
    max_size=30,
)


@st.composite
def ordered_covid_rows(draw: st.DrawFn) -> list[dict[str, str]]:
    """Consecutive days with number-like counts: rows that get past the date check."""
    start = draw(st.dates(max_value=dt.date(9000, 1, 1)))
    dates = [start + dt.timedelta(days=offset) for offset in range(draw(st.integers(0, 30)))]
    count = st.one_of(st.integers(0, 10**6).map(str), number_text)
    return [{DATE_COLUMN: str(day), **{column: draw(count) for column in COUNT_COLUMNS}} for day in dates]


any_covid_rows = st.one_of(covid_rows, ordered_covid_rows())


def to_delimited(rows: list[dict[str, str]], header: list[str], delimiter: str, quoted: bool) -> str:
    """Rows as CSV/TSV text: properly quoted by ``csv.writer``, or joined raw (so cells may break the format)."""
    if not quoted:
        lines = [delimiter.join(header), *(delimiter.join(row[c] for c in header) for row in rows)]
        return "\n".join(lines) + "\n"
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[row[c] for c in header] for row in rows])
    return buffer.getvalue()


def only_data_errors(call, *args, **kwargs):
    """Run ``call``; a :class:`DataError` is an accepted outcome (returns ``None``), anything else propagates."""
    try:
        return call(*args, **kwargs)
    except DataError as err:
        assert str(err.path) in str(err)
        return None


# ---------------------------------------------------------------------------------------------- Titanic


@FUZZ
@given(text=any_text, with_label=st.booleans())
def test_read_passengers_on_arbitrary_text(text, with_label):
    with scratch_dir() as folder:
        path = folder / "train.csv"
        path.write_text(text, encoding="utf-8")
        only_data_errors(read_passengers, path, with_label=with_label)


@FUZZ
@given(data=st.binary(max_size=200))
def test_read_passengers_on_arbitrary_bytes(data):
    with scratch_dir() as folder:
        path = folder / "train.csv"
        path.write_bytes(",".join(TITANIC_HEADER).encode() + b"\n" + data)
        only_data_errors(read_passengers, path)


@FUZZ
@given(rows=titanic_rows, quoted=st.booleans())
def test_read_passengers_on_arbitrary_rows(rows, quoted):
    with scratch_dir() as folder:
        path = folder / "train.csv"
        path.write_text(to_delimited(rows, TITANIC_HEADER, ",", quoted), encoding="utf-8")
        passengers = only_data_errors(read_passengers, path)
        if passengers is not None:
            assert len(passengers) == len(rows)
            assert all(p.pclass in (1, 2, 3) and p.survived in (0, 1) for p in passengers)


@FUZZ
@given(rows=titanic_rows, feature_set=st.sampled_from(["extended", "tutorial"]))
def test_titanic_setup_on_arbitrary_rows(rows, feature_set):
    with scratch_dir() as folder:
        (folder / "train.csv").write_text(to_delimited(rows, TITANIC_HEADER, ",", quoted=True), encoding="utf-8")
        shutil.copy(PACKAGED_DATA_DIR / "titanic" / "test.csv", folder / "test.csv")
        datamodule = TitanicDataModule(data_dir=folder, feature_set=feature_set)
        only_data_errors(datamodule.setup, "fit")


@FUZZ
@given(
    rows=st.lists(st.fixed_dictionaries(valid_titanic_cells), min_size=1, max_size=12),
    holdout=st.lists(st.fixed_dictionaries(valid_titanic_cells), max_size=12),
)
def test_features_of_valid_passengers_are_finite(rows, holdout):
    path = Path("fuzz.csv")

    def parse_valid(candidates):
        passengers = []
        for line, row in enumerate(candidates, start=2):
            with suppress(DataError):
                passengers.append(parse_passenger(path, line, row, with_label=True))
        return passengers

    train, other = parse_valid(rows), parse_valid(holdout)
    assume(train)
    stats = fit_feature_stats(train)
    for passengers in (train, other):
        extended = extended_features(passengers, stats)
        assert extended.shape == (len(passengers), len(EXTENDED_FEATURES))
        assert torch.isfinite(extended).all()
        tutorial = tutorial_features(passengers)
        assert tutorial.shape == (len(passengers), len(TUTORIAL_FEATURES))
        assert torch.isfinite(tutorial).all()
    assert all(math.isfinite(x) for x in [stats["age_fill"], stats["fare_fill"], *stats["mean"], *stats["std"]])


TABLE_HEADER = ["id", "size", "colour", "label"]
table_cells = {
    "id": any_cell,
    "size": cell(["1", "2.5", "", "NA", "?"], numeric=True),
    "colour": cell(["red", "blue", "", "none", "<other>", "<missing>"]),
    "label": cell(["a", "b", "c", "0", "1", ""]),
}
table_rows = st.lists(st.fixed_dictionaries(table_cells), min_size=0, max_size=12)


@FUZZ
@given(train=table_rows, test=table_rows, quoted=st.booleans())
def test_any_table_setup_on_arbitrary_rows(train, test, quoted):
    """Any table (the generic encoding): a DataError naming the file, or finite features and labels in range."""
    with scratch_dir() as folder:
        (folder / "train.csv").write_text(to_delimited(train, TABLE_HEADER, ",", quoted), encoding="utf-8")
        (folder / "test.csv").write_text(to_delimited(test, TABLE_HEADER, ",", quoted), encoding="utf-8")
        datamodule = TitanicDataModule(data_dir=folder, target_column="label", id_columns=["id"], val_fraction=0.3)
        only_data_errors(datamodule.setup, "fit")
        if datamodule.train_set is None:  # a DataError
            return
        json.dumps(datamodule.preprocessing_state())
        sizes = datamodule.model_kwargs()
        for split in (datamodule.train_set, datamodule.val_set, datamodule.test_set):
            features, labels = split.tensors
            assert features.shape[1] == sizes["num_features"] and torch.isfinite(features).all()
            assert labels.min() >= 0 and labels.max() < sizes["num_classes"]


# ---------------------------------------------------------------------------------------------- COVID-19


@FUZZ
@given(text=any_text)
def test_read_counts_on_arbitrary_text(text):
    with scratch_dir() as folder:
        path = folder / "covid-19.csv"
        path.write_text("\t".join(COVID_HEADER) + "\n" + text, encoding="utf-8")
        only_data_errors(read_counts, path, "cumulative")


@FUZZ
@given(rows=any_covid_rows, quoted=st.booleans())
def test_read_counts_on_arbitrary_rows(rows, quoted):
    with scratch_dir() as folder:
        path = folder / "covid-19.csv"
        path.write_text(to_delimited(rows, COVID_HEADER, "\t", quoted), encoding="utf-8")
        result = only_data_errors(read_counts, path, "cumulative")
        if result is not None:
            dates, _, counts = result
            assert counts.shape == (len(rows), len(COUNT_COLUMNS)) and len(dates) == len(rows)
            assert dates == sorted(set(dates))
            days = [dt.date.fromisoformat(date) for date in dates]
            assert all((day - before).days == 1 for before, day in itertools.pairwise(days))
            assert torch.isfinite(counts).all() and (counts >= 0).all()


@FUZZ
@given(rows=any_covid_rows, window=st.integers(1, 10), days=st.integers(0, 4))
def test_covid_setup_on_arbitrary_rows(rows, window, days):
    with scratch_dir() as folder:
        (folder / "covid-19.csv").write_text(to_delimited(rows, COVID_HEADER, "\t", quoted=True), encoding="utf-8")
        datamodule = Covid19DataModule(data_dir=folder, window=window, test_days=days, val_days=days)
        only_data_errors(datamodule.setup, "fit")


series_shapes = st.tuples(st.integers(0, 30), st.integers(1, 4))


@FUZZ
@given(shape=series_shapes, data=st.data())
def test_daily_differences_undo_cumulative_sums(shape, data):
    days, channels = shape
    values = data.draw(st.lists(st.integers(-1000, 1000), min_size=days * channels, max_size=days * channels))
    cumulative = torch.tensor(values, dtype=torch.float32).reshape(days, channels)
    differences = daily_differences(cumulative)
    assert differences.shape == (max(days - 1, 0), channels)
    if days:
        assert torch.equal(cumulative[0] + differences.cumsum(0), cumulative[1:])


@FUZZ
@given(shape=series_shapes, window=st.integers(1, 12))
def test_make_windows_shapes_and_alignment(shape, window):
    days, channels = shape
    series = torch.arange(days * channels, dtype=torch.float32).reshape(days, channels)
    if days <= window:
        with pytest.raises(ValueError, match="too short"):
            make_windows(series, window)
        return
    inputs, targets = make_windows(series, window)
    assert inputs.shape == (days - window, window, channels)
    assert targets.shape == (days - window, channels)
    for i in range(days - window):
        assert torch.equal(inputs[i], series[i : i + window])
        assert torch.equal(targets[i], series[i + window])


# ---------------------------------------------------------------------------------------------- regressions
# Inputs the fuzzers above found, each of which used to escape as something other than a clear DataError.


def keep_rows(path: Path, count: int) -> None:
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[: count + 1]) + "\n")


def replace_first_row(path: Path, delimiter: str, **cells: str) -> None:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        rows = list(reader)
        header = list(reader.fieldnames or [])
    rows[0].update(cells)
    path.write_text(to_delimited(rows, header, delimiter, quoted=True))


def test_titanic_single_row_train_file(titanic_dir):
    # was: ValueError("cannot fit feature statistics on zero passengers") from fit_feature_stats
    keep_rows(titanic_dir / "train.csv", 1)
    with pytest.raises(DataError, match=r"train\.csv: 1 passenger row\(s\) are too few to hold out 1 for validation"):
        TitanicDataModule(data_dir=titanic_dir).setup("fit")


def test_covid_file_shorter_than_a_window(covid_dir):
    # was: ValueError("a series of 0 days is too short for a 1-day window") from make_windows
    keep_rows(covid_dir / "covid-19.csv", 8)
    with pytest.raises(DataError, match=r"covid-19\.csv: 8 days give 0 windows of 14 days"):
        Covid19DataModule(data_dir=covid_dir).setup("fit")
    keep_rows(covid_dir / "covid-19.csv", 1)
    with pytest.raises(DataError, match=r"covid-19\.csv: 1 days give 0 windows of 1 days"):
        Covid19DataModule(data_dir=covid_dir, window=1, test_days=0, val_days=0).setup("fit")


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        # was: OverflowError("int too large to convert to float") in extended_features
        ({"SibSp": "1e308", "Parch": "1e308"}, r"train\.csv:2: column 'SibSp' must be between 0 and 100, got 1e\+308"),
        # were: accepted, giving inf features (float32 overflow) in tutorial_features / extended_features
        ({"Parch": "1e308"}, r"train\.csv:2: column 'Parch' must be between 0 and 100"),
        ({"Fare": "3.4028235677973366e+38"}, r"train\.csv:2: column 'Fare' must be between 0 and 100000"),
        ({"Age": "-1"}, r"train\.csv:2: column 'Age' must be between 0 and 150, got -1"),
    ],
)
def test_titanic_out_of_range_numbers(titanic_dir, cells, message):
    replace_first_row(titanic_dir / "train.csv", ",", **cells)
    with pytest.raises(DataError, match=message):
        TitanicDataModule(data_dir=titanic_dir).setup("fit")


@pytest.mark.parametrize("value", ["-1.0", "1e308"])
def test_covid_out_of_range_counts(covid_dir, value):
    # were: accepted; 1e308 became inf in the float32 tensor, a negative cumulative count is not a count
    replace_first_row(covid_dir / "covid-19.csv", "\t", dead_num=value)
    with pytest.raises(DataError, match=r"covid-19\.csv:2: column 'dead_num' must be a count between 0 and 1e\+12"):
        Covid19DataModule(data_dir=covid_dir).setup("fit")


# ---------------------------------------------------------------------------------------------- IMDB

from datamodules.imdb import IMDBDataModule  # noqa: E402
from datamodules.text_encoding import PAD_ID, UNK_ID, encode_texts, get_tokenizer, vocabulary_from_counts  # noqa: E402
from datamodules.text_files import read_labeled_texts  # noqa: E402

REVIEW_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\t\n"), max_size=200
) | st.sampled_from(["", "<br />", "a<br /><br />b", "caf\u00e9\u0085next", "\r", "!!! ???", "don't"])


@FUZZ
@given(text=st.text(max_size=300), tokenizer=st.sampled_from(["tutorial", "words"]))
def test_any_string_tokenizes_without_line_breaks_or_br_tags(text, tokenizer):
    tokens = get_tokenizer(tokenizer)(text)
    # The tutorial splits on spaces only (other whitespace stays inside tokens); the default keeps no whitespace.
    assert all(token and " " not in token for token in tokens)
    if tokenizer == "words":
        assert all(token == token.strip() for token in tokens)
    assert "<br" not in " ".join(tokens) or "<br" in text.replace("<br />", "")


@FUZZ
@given(
    texts=st.lists(REVIEW_TEXT, min_size=1, max_size=8),
    tokenizer=st.sampled_from(["tutorial", "words"]),
    max_len=st.integers(1, 40),
    sides=st.sampled_from([("right", "right"), ("left", "left"), ("right", "left")]),
)
def test_encoding_stays_inside_the_vocabulary_and_the_length(texts, tokenizer, max_len, sides):
    tokenize = get_tokenizer(tokenizer)
    counts = Counter(token for text in texts[: len(texts) // 2 + 1] for token in tokenize(text))
    vocabulary = vocabulary_from_counts(counts, max_size=50)
    assert vocabulary[PAD_ID] == "<pad>" and vocabulary[UNK_ID] == "<unk>"
    state = {
        "tokenizer": tokenizer,
        "vocabulary": vocabulary,
        "max_len": max_len,
        "truncate": sides[0],
        "pad": sides[1],
    }
    ids = encode_texts(texts, state)
    assert ids.shape == (len(texts), max_len)
    assert int(ids.min()) >= 0 and int(ids.max()) < len(vocabulary)
    for row, text in zip(ids.tolist(), texts, strict=True):
        real = [token for token in row if token != PAD_ID]
        assert len(real) == min(len(tokenize(text)), max_len)


@FUZZ
@given(content=st.binary(max_size=400))
def test_any_bytes_as_an_imdb_tsv_give_rows_or_a_data_error(content):
    with scratch_dir() as folder:
        path = folder / "train.tsv"
        path.write_bytes(content)
        with suppress(DataError):
            labels, texts, lines = read_labeled_texts(path)
            assert len(labels) == len(texts) == len(lines) > 0
            assert all(
                label and "\t" not in text and "\n" not in text for label, text in zip(labels, texts, strict=True)
            )


@FUZZ
@given(
    rows=st.lists(st.tuples(st.sampled_from(["0", "1", "2", "", " 1", "pos"]), REVIEW_TEXT), min_size=1, max_size=12),
    test_rows=st.lists(st.tuples(st.sampled_from(["0", "1", "7"]), REVIEW_TEXT), min_size=1, max_size=4),
)
def test_imdb_datamodule_setup_succeeds_or_raises_a_data_error(rows, test_rows):
    with scratch_dir() as folder:
        for name, split in (("train.tsv", rows), ("test.tsv", test_rows)):
            body = "".join(f"{label}\t{text}\n" for label, text in split)
            (folder / name).write_text("label\ttext\n" + body, encoding="utf-8")
        datamodule = IMDBDataModule(data_dir=folder, cache_dir=folder / "cache", batch_size=4, val_fraction=0.25)
        try:
            datamodule.setup("fit")
        except DataError as err:
            assert str(err).startswith(str(folder))
            return
        assert len(datamodule.train_set) + len(datamodule.val_set) == len(rows)
        # The product refuses a one-class training file (a DataError above), so a set-up module has two or more.
        assert datamodule.model_kwargs()["num_classes"] >= 2
