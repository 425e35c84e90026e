"""Bad data files stop with an error naming the file and the problem, before anything is written."""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import re
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image
from synthetic_data import make_tree, synthetic_reviews, write_tiny_data, write_tsv

from datamodules import Cifar2DataModule, Covid19DataModule, DataError, IMDBDataModule, TitanicDataModule
from datamodules.count_series import read_counts
from datamodules.text_files import read_labeled_texts
from datamodules.titanic import read_passengers
from lightning_app import fit as fit_cli
from lightning_app import predict as predict_cli


def rewrite(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, count))


def keep_header_only(path: Path) -> None:
    path.write_text(path.read_text().splitlines()[0] + "\n")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "train.csv").unlink(), r"train\.csv: file not found"),
        (lambda d: (d / "train.csv").write_text(""), r"train\.csv: file is empty"),
        # Without all of Titanic's columns train.csv is any table (a warning says so); test.csv lacks its 'Gender'.
        (lambda d: rewrite(d / "train.csv", "Name,Sex,", "Name,Gender,"), r"test\.csv:1: missing column\(s\) \['Gend"),
        (
            lambda d: rewrite(d / "train.csv", ",male,55.0,", ",male,fifty-five,"),
            r"train\.csv:2: column 'Age' has non-numeric value 'fifty-five'",
        ),
        (lambda d: rewrite(d / "test.csv", ",male,", ",robot,"), r"test\.csv:\d+: column 'Sex' must be 'male' or"),
        (lambda d: keep_header_only(d / "test.csv"), r"test\.csv: file has a header but no data rows"),
    ],
)  # fmt: skip
@pytest.mark.filterwarnings("ignore:.*not all of Titanic's columns")
def test_titanic_bad_files(titanic_dir, damage, message):
    damage(titanic_dir)
    with pytest.raises(DataError, match=message):
        TitanicDataModule(data_dir=titanic_dir).setup("fit")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: f.unlink(), r"covid-19\.csv: file not found"),
        (lambda f: f.write_text(""), r"covid-19\.csv: file is empty"),
        (lambda f: rewrite(f, "date\t", "day\t"), r"covid-19\.csv:1: missing column\(s\) \['date'\]"),
        (lambda f: rewrite(f, "830.0", "n/a"), r"covid-19\.csv:2: column 'confirmed_num' has non-numeric value 'n/a'"),
        (lambda f: rewrite(f, "\t25.0", "\t"), r"covid-19\.csv:2: column 'dead_num' is empty"),
        (lambda f: f.write_bytes(b"date\tconfirmed_num\tcured_num\tdead_num\n2020-01-24\t\xff\t1\t1\n"), r"not UTF-8"),
    ],
)
def test_covid_bad_files(covid_dir, damage, message):
    damage(covid_dir / "covid-19.csv")
    with pytest.raises(DataError, match=message):
        Covid19DataModule(data_dir=covid_dir).setup("fit")


def test_too_short_series_says_how_many_days_are_needed(covid_dir):
    path = covid_dir / "covid-19.csv"
    path.write_text("\n".join(path.read_text().splitlines()[:20]) + "\n")
    with pytest.raises(DataError, match=r"19 days give 4 windows of 14 days: too few for 7 validation and 7 test days"):
        Covid19DataModule(data_dir=covid_dir).setup("fit")


def test_unlabelled_passengers_can_be_read_for_scoring(titanic_dir):
    path = titanic_dir / "test.csv"
    rewrite(path, "PassengerId,Survived,", "PassengerId,Outcome,")
    passengers = read_passengers(path, with_label=False)
    assert len(passengers) == 179 and all(p.survived is None for p in passengers)
    with pytest.raises(DataError, match=r"missing column\(s\) \['Survived'\]"):
        read_passengers(path)


def test_cli_reports_bad_data_in_one_line_and_writes_nothing(titanic_dir, tmp_path, capsys):
    rewrite(titanic_dir / "train.csv", ",male,55.0,", ",male,old,")
    log_dir = tmp_path / "logs"
    code = fit_cli.run_cli(
        fit_cli.main, ["--task", "titanic", "--data-dir", str(titanic_dir), "--log-dir", str(log_dir)]
    )
    assert code == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("lightning_app: data error: ") and "train.csv:2" in err[0]
    assert not log_dir.exists()


# -- files saved by Excel: a UTF-8 byte-order mark before the header -------------------------------------------


def with_bom(path: Path) -> None:
    path.write_bytes(codecs.BOM_UTF8 + path.read_bytes())


def test_a_byte_order_mark_is_accepted_in_every_csv_and_tsv(titanic_dir, covid_dir, tmp_path):
    for name in ("train.csv", "test.csv"):
        with_bom(titanic_dir / name)
    titanic = TitanicDataModule(data_dir=titanic_dir)
    titanic.setup("fit")
    assert len(titanic.train_set) + len(titanic.val_set) == 712
    assert len(read_passengers(titanic_dir / "test.csv", with_label=False)) == 179  # what predict reads

    with_bom(covid_dir / "covid-19.csv")
    dates, columns, _ = read_counts(covid_dir / "covid-19.csv")
    assert dates[0] == "2020-01-24" and columns == ["confirmed_num", "cured_num", "dead_num"]
    comma = tmp_path / "comma" / "covid-19.csv"  # the delimiter is guessed from the header: the BOM must not matter
    comma.parent.mkdir()
    comma.write_bytes(
        codecs.BOM_UTF8 + (covid_dir / "covid-19.csv").read_text(encoding="utf-8-sig").replace("\t", ",").encode()
    )
    assert read_counts(comma)[1] == columns
    Covid19DataModule(data_dir=covid_dir).setup("fit")

    reviews = tmp_path / "imdb"
    write_tiny_data(reviews)
    for name in ("train.tsv", "test.tsv"):
        with_bom(reviews / name)
    with gzip.open(reviews / "train.tsv.gz", "wb") as handle:  # a compressed file holds the mark too
        handle.write((reviews / "train.tsv").read_bytes())
    for name in ("train.tsv", "train.tsv.gz"):
        labels, texts, _ = read_labeled_texts(reviews / name)
        assert len(labels) == 200 and set(labels) == {"0", "1"} and not texts[0].startswith("\ufeff")
    imdb = IMDBDataModule(data_dir=reviews, cache_dir=tmp_path / "cache", batch_size=8)
    imdb.setup("fit")
    assert imdb.model_kwargs()["num_classes"] == 2


# -- a daily series must have one row per day ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda f: drop_line(f, "2020-02-04\t"),
            r"covid-19\.csv:13: dates must be consecutive days: 2020-02-03 is followed by 2020-02-05 \(1 day missing\)",
        ),
        (
            lambda f: rewrite(f, "2020-02-04\t", "2020-02-03\t"),
            r"covid-19\.csv:13: dates must be consecutive days: 2020-02-03 appears twice",
        ),
        (
            lambda f: rewrite(f, "2020-02-04\t", "2020-02-02\t"),
            r"covid-19\.csv:13: dates must be consecutive days: 2020-02-03 is followed by 2020-02-02 \(dates must",
        ),
        (
            lambda f: rewrite(f, "2020-02-04\t", "4/2/2020\t"),
            r"covid-19\.csv:13: column 'date' must be a date as YYYY-MM-DD, got '4/2/2020'",
        ),
    ],
)
def test_a_series_with_a_missing_or_repeated_day_is_refused_naming_the_dates(covid_dir, damage, message):
    damage(covid_dir / "covid-19.csv")
    with pytest.raises(DataError, match=message):
        Covid19DataModule(data_dir=covid_dir).setup("fit")


def drop_line(path: Path, start: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    assert any(line.startswith(start) for line in lines)
    path.write_text("".join(line for line in lines if not line.startswith(start)))


def test_a_gap_of_several_days_is_counted(tmp_path):
    path = tmp_path / "covid-19.csv"
    path.write_text("date,cases\n2021-12-30,1\n2021-12-31,2\n2022-01-04,3\n")
    with pytest.raises(DataError, match=r"csv:4: .*2021-12-31 is followed by 2022-01-04 \(3 days missing\)$"):
        read_counts(path)


# -- a training file with one class -------------------------------------------------------------------------


def test_a_titanic_training_file_with_one_class_is_refused_naming_it(titanic_dir):
    path = titanic_dir / "train.csv"
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(row for row in rows if row["Survived"] == "1")
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: column 'Survived' needs both classes .* has 1$"):
        TitanicDataModule(data_dir=titanic_dir).setup("fit")


def test_an_imdb_or_image_training_set_with_one_class_is_refused_naming_it(tmp_path):
    reviews = tmp_path / "imdb"
    reviews.mkdir()
    write_tsv(reviews / "train.tsv", synthetic_reviews(40, seed=1, labels=("1",)))
    write_tsv(reviews / "test.tsv", synthetic_reviews(10, seed=2))
    with pytest.raises(
        DataError, match=r"train\.tsv: column 'label' needs at least two distinct labels, found \['1'\]"
    ):
        IMDBDataModule(data_dir=reviews, cache_dir=tmp_path / "cache").setup("fit")
    images = make_tree(tmp_path / "images", ["cat"], train_per_class=4, test_per_class=2)
    with pytest.raises(DataError, match=r"train: only one class folder \['cat'\]"):
        Cifar2DataModule(data_dir=images, cache_dir=tmp_path / "cache").setup("fit")


# -- broken files through the command lines: one line naming the file, nothing written --------------------------


def run_fit(argv: list[str], capsys) -> tuple[int, list[str]]:
    code = fit_cli.run_cli(fit_cli.main, ["--no-progress-bar", "--accelerator", "cpu", *argv])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.startswith("lightning_app:")]


def test_fit_from_a_truncated_checkpoint_is_a_one_line_error(trained, tmp_path, capsys):
    data = Path(trained["titanic"].best_model_path).read_bytes()
    checkpoint = tmp_path / "truncated.ckpt"
    checkpoint.write_bytes(data[: len(data) // 2])
    log_dir = tmp_path / "logs"
    code, err = run_fit(["--task", "titanic", "--ckpt-path", str(checkpoint), "--log-dir", str(log_dir)], capsys)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"lightning_app: error: {checkpoint}: not a PyTorch checkpoint"), err[0]
    assert not log_dir.exists()


def test_fit_on_a_truncated_gz_file_is_a_one_line_error_naming_it(tmp_path, capsys):
    data = write_tiny_data(tmp_path / "imdb")
    packed = data / "train.tsv.gz"
    with gzip.open(packed, "wb") as handle:
        handle.write((data / "train.tsv").read_bytes())
    (data / "train.tsv").unlink()
    packed.write_bytes(packed.read_bytes()[: packed.stat().st_size // 2])
    log_dir = tmp_path / "logs"
    argv = [
        "--task",
        "imdb",
        "--data-dir",
        str(data),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--log-dir",
        str(log_dir),
    ]
    code, err = run_fit([*argv, "--fast-dev-run"], capsys)
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith(f"lightning_app: data error: {packed}: cannot read file (Compressed file ended"), err[0]
    assert not log_dir.exists()


# -- images in other modes, and decompression bombs ---------------------------------------------------------


def decompression_bomb(path: Path, side: int = 20_000) -> None:
    """A PNG whose header claims ``side x side`` pixels (over Pillow's limit), without the pixels: it stays tiny."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    png = bytearray(buffer.getvalue())
    png[16:24] = struct.pack(">II", side, side)  # IHDR width and height
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    path.write_bytes(bytes(png))


def odd_modes(folder: Path, source: Path) -> dict[str, Path]:
    """The image ``source`` saved as grey, grey JPEG, RGBA (with a larger size), palette and 16-bit grey images."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = Image.open(source).convert("RGB")
    images = {
        "grey.png": rgb.convert("L"),
        "grey.jpg": rgb.convert("L"),
        "rgba.png": rgb.convert("RGBA").resize((50, 40)),
        "palette.png": rgb.convert("P", palette=Image.Palette.ADAPTIVE),
        "palette.gif": rgb.convert("P"),
        "grey16.png": rgb.convert("I;16"),
    }
    paths = {}
    for name, image in images.items():
        image.save(folder / name)
        paths[name] = folder / name
    return paths


@pytest.mark.filterwarnings("ignore:.*cannot be computed and are reported as NaN:UserWarning")  # 2 val images
def test_grey_rgba_and_palette_images_train_and_a_decompression_bomb_is_named(tmp_path, capsys):
    root = make_tree(tmp_path / "data", ["bird", "cat"], train_per_class=6, test_per_class=2)
    odd_modes(root / "train" / "cat", root / "train" / "cat" / "0.png")
    odd_modes(root / "test" / "bird", root / "test" / "bird" / "0.png")
    argv = ["--task", "cifar2", "--data-dir", str(root), "--cache-dir", str(tmp_path / "cache"), "--batch-size", "4"]
    code, err = run_fit([*argv, "--fast-dev-run", "2"], capsys)
    assert code == 0, err

    bomb = root / "train" / "bird" / "huge.png"
    decompression_bomb(bomb)
    log_dir = tmp_path / "logs"
    code, err = run_fit([*argv, "--max-epochs", "1", "--log-dir", str(log_dir)], capsys)
    assert code == 1 and len(err) == 1, err
    assert (
        err[0].startswith(f"lightning_app: data error: {bomb}: not a readable image (")
        and "decompression bomb" in err[0]
    )
    assert not log_dir.exists()


def test_grey_rgba_and_palette_images_are_predicted_as_their_rgb_copies(three_class_run, tmp_path, capsys):
    root, result = three_class_run
    paths = odd_modes(tmp_path / "odd", root / "test" / "cat" / "0.png")
    copies = tmp_path / "rgb"
    copies.mkdir()
    for name, path in paths.items():  # what the documented conversion gives: RGB, resized like any other image
        Image.open(path).convert("RGB").save(copies / f"{name}.png")
    argv = ["--task", "cifar2", "--ckpt", result.best_model_path, "--format", "json", "--accelerator", "cpu"]

    def predict(*args: str) -> tuple[int, list[dict], list[str]]:
        code = fit_cli.run_cli(predict_cli.main, [*argv, *args])
        captured = capsys.readouterr()
        return code, json.loads(captured.out or "[]"), [line for line in captured.err.splitlines() if line.strip()]

    code, odd, _ = predict(str(tmp_path / "odd"))
    assert code == 0 and len(odd) == len(paths)
    code, rgb, _ = predict(str(copies))
    by_name = {Path(record["path"]).name: record for record in rgb}
    for record in odd:
        copy = by_name[Path(record["path"]).name + ".png"]
        assert record["label"] == copy["label"] and record["probability"] == pytest.approx(
            copy["probability"], abs=1e-4
        )

    bomb = tmp_path / "odd" / "huge.png"
    decompression_bomb(bomb)
    code, _, err = predict(str(tmp_path / "odd"))
    assert code == 1 and len(err) == 1 and err[0].startswith(f"lightning_app: data error: {bomb}: not a readable image")
    code, kept, err = predict(str(tmp_path / "odd"), "--skip-bad-inputs")
    assert code == 0 and len(kept) == len(paths) and sum(f"skipped {bomb}" in line for line in err) == 1
