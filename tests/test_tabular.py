"""Any CSV table through the titanic task: column kinds, missing values, unseen levels, multi-class, errors."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
import torch

from datamodules import DataError, TitanicDataModule
from datamodules.tabular import (
    LARGE_TABLE_ROWS,
    MAX_LEVELS,
    OTHER_LEVEL,
    bins_for_rows,
    encode_rows,
    feature_names,
    parse_row,
)
from lightning_app import fit as fit_cli
from lightning_app import predict as predict_cli
from lightning_app import test as test_cli
from lightning_app.checkpoints import load_checkpoint
from lightning_app.cli import run_cli
from lightning_app.data_rules import TABLE_LARGE_ROWS

SPECIES = ("setosa", "versicolor", "virginica")
HEADER = ["row_id", "petal", "sepal", "colour", "site", "species"]


def table_rows(n: int, seed: int, colours: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows whose class follows ``petal`` and ``colour``, with gaps in numeric and categorical columns."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 3
        petal = label * 2.0 + rng.gauss(0, 0.4)
        rows.append(
            {
                "row_id": f"id{seed}-{i}",
                "petal": "" if rng.random() < 0.1 else f"{petal:.3f}",
                "sepal": "NA" if rng.random() < 0.1 else str(rng.randint(1, 9)),
                "colour": "" if rng.random() < 0.1 else colours[label % len(colours)],
                "site": f"site{rng.randint(0, 40)}",  # many levels: only the most frequent are kept
                "species": SPECIES[label],
            }
        )
    return rows


def write_csv(path: Path, rows: list[dict[str, str]], header: list[str] = HEADER) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def table_dir(tmp_path: Path) -> Path:
    data = tmp_path / "table"
    data.mkdir()
    write_csv(data / "train.csv", table_rows(120, seed=0, colours=("red", "green", "blue")))
    # The test split holds colours training never saw.
    write_csv(data / "test.csv", table_rows(30, seed=1, colours=("red", "purple", "teal")))
    return data


def table_module(data: Path, **kwargs) -> TitanicDataModule:
    dm = TitanicDataModule(data_dir=data, target_column="species", id_columns=["row_id"], batch_size=16, **kwargs)
    dm.setup("fit")
    return dm


def test_a_table_gets_numeric_and_categorical_features_fitted_on_train(table_dir: Path):
    dm = table_module(table_dir)
    state = dm.preprocessing_state()
    json.dumps(state)  # plain values only
    assert state["feature_set"] == "generic" and state["class_names"] == list(SPECIES)
    kinds = {spec["name"]: spec["kind"] for spec in state["columns"]}
    assert kinds == {"petal": "numeric", "sepal": "numeric", "colour": "categorical", "site": "categorical"}
    columns = {spec["name"]: spec for spec in state["columns"]}
    assert columns["colour"]["levels"] == ["blue", "green", "red", "<missing>", OTHER_LEVEL]
    assert len(columns["site"]["levels"]) <= MAX_LEVELS + 1
    names = feature_names(state)
    assert "petal_missing" in names and "sepal_missing" in names
    assert dm.model_kwargs() == {"num_features": len(names), "num_classes": 3}
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (102, 18, 30)
    # Statistics come from the training part: a median, and standardised columns with mean 0 there.
    features = dm.train_set.tensors[0]
    petal = names.index("petal")
    assert features[:, petal].mean().abs() < 1e-4
    dm.setup("test")  # a second call keeps what the first fitted
    assert dm.preprocessing_state() is state


def test_unseen_and_missing_values_encode_without_errors(table_dir: Path):
    state = table_module(table_dir).preprocessing_state()
    names = feature_names(state)
    row = {"petal": "", "sepal": "?", "colour": "purple", "site": "nowhere"}
    encoded = encode_rows([parse_row(Path("x.csv"), 2, row, state)], state)[0]
    assert encoded[names.index(f"colour={OTHER_LEVEL}")] == 1 and encoded[names.index("colour=red")] == 0
    assert encoded[names.index(f"site={OTHER_LEVEL}")] == 1
    assert encoded[names.index("petal_missing")] == 1 and torch.isfinite(encoded).all()
    with pytest.raises(DataError, match=r"x.csv:2: column 'sepal' has non-numeric value 'many'"):
        parse_row(Path("x.csv"), 2, {**row, "sepal": "many"}, state)


def test_fit_test_and_predict_a_multiclass_table(table_dir: Path, tmp_path: Path, capsys):
    runs = tmp_path / "runs"
    flags = ["--target-column", "species", "--id-columns", "row_id", "--data-dir", str(table_dir)]
    argv = ["--task", "titanic", *flags, "--max-epochs", "2", "--log-dir", str(runs), "--no-progress-bar"]
    assert run_cli(fit_cli.main, [*argv, "--accelerator", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "test/acc_virginica" in out
    (run_dir,) = (runs / "titanic").glob("version_*")
    config = (run_dir / "config.yaml").read_text()
    assert "target_column: species" in config and "- row_id" in config
    (ckpt,) = (run_dir / "checkpoints").glob("best-*.ckpt")

    test_argv = ["--task", "titanic", "--ckpt", str(ckpt), "--data-dir", str(table_dir), "--format", "json"]
    assert run_cli(test_cli.main, test_argv) == 0
    assert 0.0 <= json.loads(capsys.readouterr().out)["test/acc"] <= 1.0

    # Raw rows: no target column, an unseen colour, missing values; the id column comes back.
    raw = table_rows(5, seed=2, colours=("mauve",))
    raw[0]["petal"], raw[1]["colour"] = "", ""
    header = [column for column in HEADER if column != "species"]
    to_score = write_csv(tmp_path / "new.csv", raw, header)
    output = tmp_path / "scored.csv"
    predict_argv = ["--task", "titanic", "--ckpt", str(ckpt), str(to_score), "--format", "csv", "--output"]
    assert run_cli(predict_cli.main, [*predict_argv, str(output), "--accelerator", "cpu"]) == 0
    scored = list(csv.DictReader(output.open()))
    assert [row["row_id"] for row in scored] == [row["row_id"] for row in raw]
    assert {row["species_predicted"] for row in scored} <= set(SPECIES)
    for row in scored:
        total = sum(float(row[f"probability_{name}"]) for name in SPECIES)
        assert total == pytest.approx(1.0, abs=1e-5)
    module = load_checkpoint(ckpt, "titanic").module
    records = module.predict_raw(raw)
    assert [r["label"] for r in records] == [row["species_predicted"] for row in scored]


def test_a_binary_table_with_integer_labels_and_no_name_column(tmp_path: Path):
    data = tmp_path / "binary"
    data.mkdir()
    rows = [{"PassengerId": str(i), "x": str(i % 7), "kind": "ab"[i % 2], "Survived": str(i % 2)} for i in range(40)]
    write_csv(data / "train.csv", rows, ["PassengerId", "x", "kind", "Survived"])
    write_csv(data / "test.csv", rows[:10], ["PassengerId", "x", "kind", "Survived"])
    dm = TitanicDataModule(data_dir=data)  # the defaults: target Survived, PassengerId dropped when present
    dm.setup("fit")
    state = dm.preprocessing_state()
    assert state["class_names"] == ["0", "1"] and state["id_columns"] == ["PassengerId"]
    assert [spec["name"] for spec in state["columns"]] == ["x", "kind"]
    assert dm.model_kwargs()["num_classes"] == 2


@pytest.mark.parametrize(
    ("change", "kwargs", "message"),
    [
        (None, {"target_column": "label"}, "no target column 'label'"),
        (None, {"id_columns": ["row_id", "uuid"]}, "id column 'uuid' is not in the header"),
        (None, {"id_columns": ["species"]}, "column 'species' is the target"),
        ("empty_column", {}, "column 'sepal' is empty in every row"),
        ("one_class", {}, "column 'species' needs at least two classes to train on, every row has 'setosa'"),
        ("missing_label", {}, "train.csv:3: column 'species' (the target) is empty"),
        ("new_test_class", {}, "test.csv:2: column 'species' has class 'rose', not one of the training classes"),
        ("test_lacks_column", {}, "test.csv:1: missing column(s) ['colour']"),
        (None, {"feature_set": "extended"}, "feature_set 'extended' needs Titanic's columns"),
    ],
)
def test_bad_tables_are_one_line_errors_naming_the_column(table_dir: Path, change, kwargs, message):
    train, test = table_dir / "train.csv", table_dir / "test.csv"
    rows = list(csv.DictReader(train.open()))
    if change == "empty_column":
        write_csv(train, [{**row, "sepal": ""} for row in rows])
    elif change == "one_class":
        write_csv(train, [{**row, "species": "setosa"} for row in rows])
    elif change == "missing_label":
        rows[1]["species"] = ""
        write_csv(train, rows)
    elif change == "new_test_class":
        test_rows = list(csv.DictReader(test.open()))
        test_rows[0]["species"] = "rose"
        write_csv(test, test_rows)
    elif change == "test_lacks_column":
        write_csv(test, list(csv.DictReader(test.open())), [c for c in HEADER if c != "colour"])
    settings = {"target_column": "species", "id_columns": ["row_id"], **kwargs}
    with pytest.raises(DataError) as raised:
        TitanicDataModule(data_dir=table_dir, **settings).setup("fit")
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_table_flags_are_refused_for_tasks_without_a_table(capsys):
    assert run_cli(fit_cli.main, ["--task", "imdb", "--target-column", "x", "--print-config"]) == 2
    assert "--target-column: task 'imdb' does not read a table" in capsys.readouterr().err


def test_the_bundled_titanic_data_keeps_its_encoding():
    dm = TitanicDataModule()
    dm.setup("fit")
    assert dm.preprocessing_state().keys() == {"feature_set", "stats"}
    assert dm.preprocessing_state()["feature_set"] == "extended"
    assert dm.model_kwargs() == {"num_features": 21, "num_classes": 2}


def test_a_titanic_file_missing_a_column_warns_or_names_it(titanic_dir: Path):
    train = titanic_dir / "train.csv"
    train.write_text(train.read_text().replace("Name,Sex,", "Name,Gender,", 1))
    warning = r"not all of Titanic's columns \(missing or dropped: \['Sex'\]\)"
    error = r"test\.csv:1: missing column\(s\) \['Gender'\]"
    with pytest.warns(UserWarning, match=warning), pytest.raises(DataError, match=error):
        TitanicDataModule(data_dir=titanic_dir).setup("fit")
    for feature_set in ("extended", "tutorial"):  # the Titanic encodings asked for: train.csv's missing column
        with pytest.raises(DataError, match=r"train\.csv:1: missing column\(s\) \['Sex'\]"):
            TitanicDataModule(data_dir=titanic_dir, feature_set=feature_set).setup("fit")


#: Sums (plain and absolute) of each split's features and of its labels, bundled data, seed 7, as computed before
#: any table could be read: the Titanic encodings must not move.
BUNDLED_SUMS = {
    "extended": [(2650.0, 4830.9007, 243), (416.2423, 853.8112, 36), (758.5706, 1441.8813, 63)],
    "tutorial": [(37830.7163, 37830.7163, 243), (5925.5408, 5925.5408, 36), (10485.8623, 10485.8623, 63)],
}


@pytest.mark.parametrize(
    ("feature_set", "encoding"), [("auto", "extended"), ("extended", "extended"), ("tutorial", "tutorial")]
)
def test_the_bundled_data_keeps_its_features(feature_set, encoding):
    dm = TitanicDataModule(feature_set=feature_set, seed=7)
    dm.setup("fit")
    assert dm.preprocessing_state()["feature_set"] == encoding
    splits = (dm.train_set, dm.val_set, dm.test_set)
    for split, (total, absolute, positives) in zip(splits, BUNDLED_SUMS[encoding], strict=True):
        features, labels = split.tensors
        assert float(features.double().sum()) == pytest.approx(total, abs=2e-3)
        assert float(features.double().abs().sum()) == pytest.approx(absolute, abs=2e-3)
        assert int(labels.sum()) == positives


def test_piecewise_linear_bins_are_fitted_on_the_training_part(table_dir: Path):
    from datamodules.tabular import piecewise_linear, quantile_edges

    assert quantile_edges([0.0, 1.0, 2.0, 3.0, 4.0], 4) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert quantile_edges([0.0, 0.0, 1.0, 1.0], 8) == []  # one bin: nothing to add to the standardised value
    assert quantile_edges([1.0, 2.0, 3.0], 0) == []
    encoded = piecewise_linear(torch.tensor([-1.0, 0.5, 2.5, 9.0]), [0.0, 1.0, 2.0, 3.0])
    expected = [[0, 0, 0], [0.5, 0, 0], [1, 1, 0.5], [1, 1, 1]]  # below the range 0, beyond it 1
    assert torch.allclose(encoded, torch.tensor(expected, dtype=torch.float32))

    dm = table_module(table_dir, numeric_bins=4)
    state = dm.preprocessing_state()
    json.dumps(state)
    columns = {spec["name"]: spec for spec in state["columns"]}
    edges = columns["petal"]["bin_edges"]
    assert len(edges) == 5 and edges == sorted(edges)
    names = feature_names(state)
    assert [name for name in names if name.startswith("petal_bin")] == [f"petal_bin{k}" for k in range(4)]
    assert dm.model_kwargs()["num_features"] == len(names) == dm.train_set.tensors[0].shape[1]
    # Edges from the training part only: the training part's petal values span them, the first and last edge
    # being its minimum and maximum (the standardised column gives those back).
    petal = dm.train_set.tensors[0][:, names.index("petal")] * columns["petal"]["std"] + columns["petal"]["mean"]
    assert petal.min().item() == pytest.approx(edges[0], abs=1e-4)
    assert petal.max().item() == pytest.approx(edges[-1], abs=1e-4)
    # A missing value is the training median's bins; an unseen large one saturates.
    row = {"petal": "", "sepal": "?", "colour": "purple", "site": "nowhere"}
    encoded = encode_rows([parse_row(Path("x.csv"), 2, row, state)], state)[0]
    median_bins = piecewise_linear(torch.tensor([columns["petal"]["median"]], dtype=torch.float64), edges)[0]
    at = names.index("petal_bin0")
    assert torch.equal(encoded[at : at + 4], median_bins)
    big = encode_rows([parse_row(Path("x.csv"), 2, {**row, "petal": "1e6"}, state)], state)[0]
    assert big[at : at + 4].tolist() == [1.0, 1.0, 1.0, 1.0] and torch.isfinite(big).all()
    # Without bins (and for states saved before them) the encoding is as before.
    plain = table_module(table_dir, numeric_bins=0).preprocessing_state()
    assert not any(name.startswith("petal_bin") for name in feature_names(plain))


def test_a_model_with_piecewise_linear_bins_scores_raw_rows_from_its_saved_state(table_dir: Path):
    from lightning_app.models import TitanicModule

    dm = table_module(table_dir, numeric_bins=8)
    state = json.loads(json.dumps(dm.preprocessing_state()))  # what a checkpoint gives back
    module = TitanicModule(**dm.model_kwargs(), preprocessing=state).eval()
    raw = table_rows(4, seed=3, colours=("mauve",))
    raw[0]["petal"], raw[1]["petal"] = "", "250"
    records = module.predict_raw(raw)
    assert [record["label"] for record in records] and all(r["label"] in SPECIES for r in records)
    typed = [parse_row(Path("x.csv"), at, row, state) for at, row in enumerate(raw, start=2)]
    assert torch.equal(encode_rows(typed, state), encode_rows(typed, dm.preprocessing_state()))
    with pytest.raises(ValueError, match="numeric_bins"):
        TitanicDataModule(data_dir=table_dir, numeric_bins=-1)


def test_a_checkpoint_from_before_the_bins_rebuilds_its_data_without_them(table_dir: Path):
    from lightning_app.checkpoints import LoadedCheckpoint
    from lightning_app.models import TitanicModule
    from lightning_app.registry import get_task

    settings = {"data_dir": str(table_dir), "target_column": "species", "id_columns": ["row_id"]}
    old = LoadedCheckpoint(get_task("titanic"), TitanicModule(), {"datamodule_hyper_parameters": settings}, Path())
    assert old.datamodule().hparams.numeric_bins == 0
    new = LoadedCheckpoint(
        old.task, old.module, {"datamodule_hyper_parameters": {**settings, "numeric_bins": 32}}, Path()
    )
    assert new.datamodule().hparams.numeric_bins == 32
    assert TitanicDataModule().hparams.numeric_bins is None  # the default for tables: from the training rows


def test_numeric_bins_follow_the_training_rows(table_dir: Path) -> None:
    assert [bins_for_rows(rows) for rows in (600, 9_999, 10_000, 30_000)] == [32, 32, 128, 128]
    assert LARGE_TABLE_ROWS == TABLE_LARGE_ROWS  # the bins and the learning-rate rule change at the same size
    state = table_module(table_dir).preprocessing_state()
    assert state["numeric_bins"] == 32  # a small table, and the state says what was used
    assert table_module(table_dir, numeric_bins=4).preprocessing_state()["numeric_bins"] == 4


def test_bins_sit_at_the_quantiles_of_the_distinct_values():
    from datamodules.tabular import quantile_edges

    mostly_zero = [0.0] * 90 + [float(value) for value in range(1, 11)]  # like adult's capital-gain
    assert quantile_edges(mostly_zero, 4) == [0.0, 2.0, 5.0, 8.0, 10.0]  # not [0, 0, 0, 0, 10] -> one bin
