"""datamodules.panels.read_panel: each layout of series files, and the errors naming what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from datamodules import PACKAGED_DATA_DIR, DataError
from datamodules.count_series import read_counts
from datamodules.panels import Series, read_panel

BUNDLED = PACKAGED_DATA_DIR / "covid19" / "covid-19.csv"


def write(path: Path, rows: list[list[object]], sep: str = "\t", bom: bool = False) -> Path:
    """Write ``rows`` (header first) to ``path``, making its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(sep.join(str(value) for value in row) + "\n" for row in rows)
    path.write_text(("\ufeff" if bom else "") + text, encoding="utf-8")
    return path


def counts_file(path: Path, start: int = 1, days: int = 3, sep: str = "\t", bom: bool = False, **kwargs) -> Path:
    """A file of ``days`` days from 2020-03-0{start}, columns ``a`` (cumulative 10, 20, ...) and ``b``."""
    rows: list[list[object]] = [["date", "a", "b"]]
    rows += [[f"2020-03-{start + day:02d}", 10 * (day + 1), day] for day in range(days)]
    return write(path, rows, sep=sep, bom=bom, **kwargs)


def summary(panel: list[Series]) -> list[tuple[str, str, str, int]]:
    return [(one.name, one.dates[0], one.dates[-1], len(one.values)) for one in panel]


def test_one_file_is_one_series_named_after_its_folder_or_stem(tmp_path):
    (one,) = read_panel(counts_file(tmp_path / "spain" / "covid-19.csv"))
    assert (one.name, one.columns, one.dates) == ("spain", ["a", "b"], ["2020-03-01", "2020-03-02", "2020-03-03"])
    assert one.values.dtype == torch.float32 and one.values.tolist() == [[10, 0], [20, 1], [30, 2]]
    (other,) = read_panel(counts_file(tmp_path / "italy.csv", sep=",", bom=True))
    assert other.name == "italy" and torch.equal(other.values, one.values)


def test_a_folder_with_covid_19_csv_is_todays_single_series(tmp_path):
    counts_file(tmp_path / "run" / "covid-19.csv")
    counts_file(tmp_path / "run" / "other.csv", days=1)  # not read: --data-dir reads covid-19.csv only
    assert summary(read_panel(tmp_path / "run")) == [("run", "2020-03-01", "2020-03-03", 3)]


def test_the_bundled_file_is_a_one_series_panel_equal_to_read_counts():
    for counts in ("cumulative", "daily"):
        dates, columns, values = read_counts(BUNDLED, counts)
        for source in (BUNDLED, BUNDLED.parent):
            (one,) = read_panel(source, counts)
            assert (one.name, one.path, one.dates, one.columns) == ("covid19", BUNDLED, dates, columns)
            assert torch.equal(one.values, values)


def test_a_folder_of_subfolders_and_csv_files_sorted_by_name(tmp_path):
    counts_file(tmp_path / "spain" / "covid-19.csv", start=2, days=4)
    counts_file(tmp_path / "austria.csv", sep=",", bom=True)
    counts_file(tmp_path / "chile" / "covid-19.csv", bom=True)
    (tmp_path / "empty").mkdir()  # a sub-folder without covid-19.csv is not a series
    (tmp_path / "README.md").write_text("not a series\n")
    panel = read_panel(tmp_path)
    assert summary(panel) == [
        ("austria", "2020-03-01", "2020-03-03", 3),
        ("chile", "2020-03-01", "2020-03-03", 3),
        ("spain", "2020-03-02", "2020-03-05", 4),
    ]
    assert panel[0].path == tmp_path / "austria.csv" and panel[2].path == tmp_path / "spain" / "covid-19.csv"


def test_daily_counts_may_be_negative(tmp_path):
    rows = [["date", "a"], ["2020-03-01", 5], ["2020-03-02", -2]]
    write(tmp_path / "x.csv", rows, sep=",")
    with pytest.raises(DataError, match="between 0"):
        read_panel(tmp_path)
    (one,) = read_panel(tmp_path, counts="daily")
    assert one.values.squeeze(1).tolist() == [5.0, -2.0]


def test_a_long_file_with_a_series_column(tmp_path):
    rows: list[list[object]] = [["series", "date", "a", "b"]]
    rows += [["spain", "2020-03-02", 1, 0], ["spain", "2020-03-03", 2, 0]]
    rows += [["chile", "2020-03-01", 5, 1], ["chile", "2020-03-02", 6, 1], ["chile", "2020-03-03", 7, 2]]
    rows += [["spain", "2020-03-04", 3, 1]]  # a series' rows need not be together, only its days consecutive
    path = write(tmp_path / "long.csv", rows, sep=",", bom=True)
    panel = read_panel(path)
    assert summary(panel) == [("chile", "2020-03-01", "2020-03-03", 3), ("spain", "2020-03-02", "2020-03-04", 3)]
    assert panel[1].columns == ["a", "b"] and panel[1].values.tolist() == [[1, 0], [2, 0], [3, 1]]
    assert all(one.path == path for one in panel)
    other = write(tmp_path / "r.tsv", [["country", "date", "a"], ["x", "2020-01-01", 1]])
    (renamed,) = read_panel(other, series_column="country")
    assert (renamed.name, renamed.columns) == ("x", ["a"])


def test_columns_that_differ_across_files(tmp_path):
    counts_file(tmp_path / "a.csv")
    write(tmp_path / "b" / "covid-19.csv", [["date", "a", "c"], ["2020-03-01", 1, 1]])
    with pytest.raises(DataError) as err:
        read_panel(tmp_path)
    message = str(err.value)
    assert message.startswith(str(tmp_path / "b" / "covid-19.csv")) and "\n" not in message
    assert "['a', 'c'] differ from ['a', 'b']" in message and str(tmp_path / "a.csv") in message


def test_a_series_too_short(tmp_path):
    counts_file(tmp_path / "a.csv", days=5)
    counts_file(tmp_path / "b.csv", days=2)
    assert len(read_panel(tmp_path, min_days=2)) == 2
    with pytest.raises(DataError, match=r"b\.csv: has 2 day\(s\) \(2020-03-01 \.\. 2020-03-02\).*min_days=3"):
        read_panel(tmp_path, min_days=3)
    long_rows = [["series", "date", "a"], ["x", "2020-03-01", 1], ["y", "2020-03-01", 1], ["y", "2020-03-02", 2]]
    with pytest.raises(DataError, match=r"long\.csv: series 'x' has 1 day\(s\)"):
        read_panel(write(tmp_path / "long" / "long.csv", long_rows), min_days=2)


@pytest.mark.parametrize(
    ("days", "problem"),
    [
        (["2020-03-01", "2020-03-03"], "2020-03-01 is followed by 2020-03-03 (1 day missing)"),
        (["2020-03-01", "2020-03-01"], "2020-03-01 appears twice"),
    ],
)
def test_date_gaps_and_repeats_name_the_file_series_and_dates(tmp_path, days, problem):
    write(tmp_path / "a" / "covid-19.csv", [["date", "a"], *[[day, 1] for day in days]])
    with pytest.raises(DataError) as err:
        read_panel(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / 'a' / 'covid-19.csv'}:3: ") and problem in str(err.value)
    rows = [["series", "date", "a"], ["ok", "2020-03-01", 1]] + [["bad", day, 1] for day in days]
    with pytest.raises(DataError) as err:
        read_panel(write(tmp_path / "long.tsv", rows))
    assert str(err.value).startswith(f"{tmp_path / 'long.tsv'}:4: series 'bad': dates must be consecutive days")
    assert problem in str(err.value)


def test_an_empty_folder_or_a_missing_source(tmp_path):
    (tmp_path / "sub").mkdir()
    with pytest.raises(DataError, match=r"no covid-19\.csv or \*\.csv under"):
        read_panel(tmp_path)
    with pytest.raises(DataError, match="file or folder not found"):
        read_panel(tmp_path / "nowhere")


def test_duplicate_series_names(tmp_path):
    counts_file(tmp_path / "spain" / "covid-19.csv")
    counts_file(tmp_path / "spain.csv")
    with pytest.raises(DataError, match="series name 'spain' is also"):
        read_panel(tmp_path)


def test_a_long_file_inside_a_folder_and_bad_arguments(tmp_path):
    write(tmp_path / "long.csv", [["series", "date", "a"], ["x", "2020-03-01", 1]])
    counts_file(tmp_path / "b.csv")
    with pytest.raises(DataError, match=r"long\.csv: has a 'series' column"):
        read_panel(tmp_path)
    with pytest.raises(ValueError, match="counts"):
        read_panel(tmp_path, counts="weekly")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_days"):
        read_panel(tmp_path, min_days=0)
