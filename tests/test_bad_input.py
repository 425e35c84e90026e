"""Bad data files stop with an error naming the file and the problem, before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from datamodules import Covid19DataModule, DataError, TitanicDataModule
from datamodules.titanic import read_passengers
from lightning_app import fit as fit_cli


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
        (lambda d: rewrite(d / "train.csv", "Name,Sex,", "Name,Gender,"), r"train\.csv:1: missing column\(s\) \['Sex"),
        (
            lambda d: rewrite(d / "train.csv", ",male,55.0,", ",male,fifty-five,"),
            r"train\.csv:2: column 'Age' has non-numeric value 'fifty-five'",
        ),
        (lambda d: rewrite(d / "test.csv", ",male,", ",robot,"), r"test\.csv:\d+: column 'Sex' must be 'male' or"),
        (lambda d: keep_header_only(d / "test.csv"), r"test\.csv: file has a header but no data rows"),
    ],
)  # fmt: skip
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
    with pytest.raises(DataError, match=r"19 days give 10 windows of 8 days: too few for 7 validation and 7 test days"):
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
