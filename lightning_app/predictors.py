"""Turning raw command-line inputs into predictions, one function per task (see the registry).

A predictor takes a module loaded from a checkpoint and a :class:`PredictRequest` and returns either a
:class:`Prediction` (records plus the columns to show: covid19's forecast) or a
:class:`~lightning_app.raw_inputs.StreamedInputs` that ``lightning_app.streaming`` reads and scores chunk by chunk
(titanic rows, IMDB reviews, cifar2 images). The ``predict`` CLI only formats what comes back.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from datamodules.base import CsvRow, csv_header, iter_csv_rows
from datamodules.covid import daily_from_state
from datamodules.errors import DataError
from datamodules.image_folder import read_image
from datamodules.panels import read_panel
from datamodules.tabular import TabularRow, parse_row
from datamodules.text_files import decode_line, iter_raw_lines
from datamodules.titanic import INPUT_COLUMNS, Passenger, parse_passenger
from lightning_app.errors import UsageError
from lightning_app.figures import forecast_figure
from lightning_app.raw_inputs import BLANK, OMITTED, StreamedInputs

if TYPE_CHECKING:
    from lightning_app.models import TaskModule


@dataclass
class PredictRequest:
    """What the user asked to score: positional ``inputs`` (texts or paths), an ``input_file``, ``days``."""

    inputs: list[str] = field(default_factory=list)
    input_file: Path | None = None
    days: int | None = None
    plot_path: Path | None = None
    #: Leave blank reviews out of the output instead of keeping their rows unscored.
    skip_blank_lines: bool = False


@dataclass
class Prediction:
    records: list[dict[str, Any]]
    #: Columns for the readable table; CSV and JSON carry ``all_columns``.
    columns: list[str]
    all_columns: list[str]
    #: Files the predictor wrote (plots), reported to the user.
    written: list[Path] = field(default_factory=list)


def _single_input_file(request: PredictRequest, what: str) -> Path:
    paths = ([request.input_file] if request.input_file else []) + [Path(p) for p in request.inputs]
    if len(paths) != 1:
        raise UsageError(f"give exactly one {what} (as --input-file or a positional argument), got {len(paths)}")
    if not paths[0].is_file():
        raise UsageError(f"{paths[0]}: no such file")
    return paths[0]


class PassengerRows(StreamedInputs):
    """A Kaggle-format passenger CSV, row by row; every input column comes back plus the survival columns.

    Item: ``(line number, row or DataError)`` (see ``datamodules.base.iter_csv_rows``); input: a ``Passenger``.
    """

    default_batch_size = 512
    added_columns = ("survival_probability", "survived_predicted")

    def __init__(self, path: Path) -> None:
        self.path = path
        input_columns = csv_header(path, INPUT_COLUMNS)
        with contextlib.closing(iter_csv_rows(path, INPUT_COLUMNS)) as rows:
            if next(rows, None) is None:
                raise DataError(path, "file has a header but no data rows")
        shown = [column for column in ("PassengerId", "Name") if column in input_columns]
        self.columns = [*shown, *self.added_columns]
        self.all_columns = [*input_columns, *self.added_columns]

    def items(self) -> Iterator[CsvRow]:
        return iter_csv_rows(self.path, INPUT_COLUMNS)

    def prepare(self, item: CsvRow) -> tuple[Passenger, dict[str, Any]]:
        line, row = item
        if isinstance(row, DataError):
            raise row
        return parse_passenger(self.path, line, row, with_label=False), row

    def record(self, fields: dict[str, Any], score: dict[str, Any]) -> dict[str, Any]:
        return {
            **fields,
            "survival_probability": score["probabilities"]["survived"],
            "survived_predicted": score["class_id"],
        }


class TableRows(StreamedInputs):
    """A CSV table scored by a model trained on any table (``feature_set`` ``"generic"``), row by row; every input
    column comes back plus ``<target>_predicted`` (the class name), ``probability`` (of that class) and
    ``probability_<class>`` for each class.

    Item: ``(line number, row or DataError)``; input: a :class:`~datamodules.tabular.TabularRow`. The file needs the
    feature columns the model was trained with; the target and id columns may be there or not.
    """

    default_batch_size = 512

    def __init__(self, path: Path, state: dict[str, Any]) -> None:
        self.path = path
        self.state = state
        self.required = [spec["name"] for spec in state["columns"]]
        input_columns = csv_header(path, self.required)
        with contextlib.closing(iter_csv_rows(path, self.required)) as rows:
            if next(rows, None) is None:
                raise DataError(path, "file has a header but no data rows")
        self.predicted = f"{state['target_column']}_predicted"
        added = [self.predicted, "probability", *(f"probability_{name}" for name in state["class_names"])]
        added = [column for column in added if column not in input_columns]
        shown = [column for column in state["id_columns"] if column in input_columns]
        self.columns = [*shown, self.predicted, "probability"]
        self.all_columns = [*input_columns, *added]

    def items(self) -> Iterator[CsvRow]:
        return iter_csv_rows(self.path, self.required)

    def prepare(self, item: CsvRow) -> tuple[TabularRow, dict[str, Any]]:
        line, row = item
        if isinstance(row, DataError):
            raise row
        return parse_row(self.path, line, row, self.state), row

    def record(self, fields: dict[str, Any], score: dict[str, Any]) -> dict[str, Any]:
        probabilities = {f"probability_{name}": value for name, value in score["probabilities"].items()}
        return {**fields, self.predicted: score["label"], "probability": score["probability"], **probabilities}


def predict_titanic(module: TaskModule, request: PredictRequest) -> PassengerRows | TableRows:
    """Score a Kaggle-format passenger CSV (every input column comes back plus the survival columns), or, for a
    model trained on another table, a CSV with that table's columns (see :class:`TableRows`)."""
    if module.preprocessing.get("feature_set") == "generic":
        return TableRows(_single_input_file(request, "CSV file"), module.preprocessing)
    return PassengerRows(_single_input_file(request, "passenger CSV file"))


#: A review: ``(None, argument index, text)`` for a positional argument, ``(file, line number, bytes)`` for a line.
ReviewItem = tuple[Path | None, int, "str | bytes"]


class ReviewLines(StreamedInputs):
    """Review strings given as arguments, then one per line of ``input_file`` (split on ``"\\n"`` only: reviews
    may hold U+0085; a byte-order mark starting the file is dropped). Item: :data:`ReviewItem`; input: the review
    text. A blank review (empty or white space only) is not scored: its row keeps its place with empty ``label``
    and ``probability`` (:data:`~lightning_app.raw_inputs.BLANK`), or is left out with ``skip_blank_lines``."""

    default_batch_size = 512
    columns = ["review", "label", "probability"]
    all_columns = ["text", "label", "probability"]

    def __init__(self, texts: Sequence[str], input_file: Path | None, skip_blank_lines: bool = False) -> None:
        self.texts = list(texts)
        self.input_file = input_file
        self.skip_blank_lines = skip_blank_lines
        if input_file is not None:
            with contextlib.closing(iter_raw_lines(input_file)) as lines:
                if next(lines, None) is None:
                    raise DataError(input_file, "file is empty (expected one review per line)")
        elif not self.texts:
            raise UsageError("give review texts as arguments or --input-file FILE (one review per line)")

    def items(self) -> Iterator[ReviewItem]:
        for number, text in enumerate(self.texts, start=1):
            yield None, number, text
        if self.input_file is not None:
            for number, raw in iter_raw_lines(self.input_file):
                yield self.input_file, number, raw

    def prepare(self, item: ReviewItem) -> tuple[str, dict[str, Any]]:
        path, number, raw = item
        text = raw if isinstance(raw, str) else decode_line(path or Path("-"), number, raw)
        fields = {"text": text, "review": text if len(text) <= 60 else text[:57] + "..."}
        if not text.strip():
            return OMITTED if self.skip_blank_lines else BLANK, fields
        return text, fields

    def record(self, fields: dict[str, Any], score: dict[str, Any]) -> dict[str, Any]:
        return {**fields, "label": score["label"], "probability": score["probability"]}


def predict_imdb(module: TaskModule, request: PredictRequest) -> ReviewLines:
    """Score review strings given as arguments and/or one per line of ``--input-file``."""
    return ReviewLines(request.inputs, request.input_file, request.skip_blank_lines)


#: File endings taken as images when a folder is given to the cifar2 predictor.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def _image_files(request: PredictRequest) -> list[Path]:
    paths = [Path(p) for p in request.inputs] + ([request.input_file] if request.input_file else [])
    if not paths:
        raise UsageError("give image files or folders of images as arguments")
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise UsageError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise UsageError(f"{path}: no such file or folder")
    return files


class ImageFiles(StreamedInputs):
    """Image files, decoded a chunk at a time at the model's image size. Item: a path; input: ``uint8[3, S, S]``."""

    default_batch_size = 256
    columns = all_columns = ["path", "label", "probability"]

    def __init__(self, files: list[Path], image_size: int) -> None:
        self.files = files
        self.image_size = image_size

    def items(self) -> Iterator[Path]:
        return iter(self.files)

    def prepare(self, item: Path) -> tuple[torch.Tensor, dict[str, Any]]:
        return read_image(item, self.image_size), {"path": str(item)}

    def collate(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        """The chunk's images as one ``uint8[N, 3, S, S]`` tensor."""
        if not inputs:
            return torch.empty((0, 3, self.image_size, self.image_size), dtype=torch.uint8)
        return torch.stack(inputs)

    def record(self, fields: dict[str, Any], score: dict[str, Any]) -> dict[str, Any]:
        return {**fields, "label": score["label"], "probability": score["probability"]}


def predict_cifar2(module: TaskModule, request: PredictRequest) -> ImageFiles:
    """Classify image files, or every image under the folders given."""
    files = _image_files(request)
    if "image_size" not in module.preprocessing:
        raise UsageError("this checkpoint has no preprocessing state 'image_size'; train it with Cifar2DataModule")
    return ImageFiles(files, int(module.preprocessing["image_size"]))


#: Central intervals ``predict --task covid19`` writes per column: ``<column>_low_<width>`` / ``_high_<width>``.
FORECAST_INTERVALS = (50, 80, 95)


def _series_to_forecast(module: Any, request: PredictRequest) -> list[tuple[str, list[str], torch.Tensor, Any]]:
    """``(name, dates, daily float32[T, C], last cumulative row or None)`` of each series to forecast from: those of
    ``--input-file`` / the positional path (a series file, a folder of series or a long file, read as the training
    data was), else those stored in the checkpoint."""
    state = module.preprocessing
    paths = ([request.input_file] if request.input_file else []) + [Path(p) for p in request.inputs]
    if len(paths) > 1:
        raise UsageError(f"give one series file or folder to forecast from, got {len(paths)}")
    cumulative = state.get("counts", "cumulative") == "cumulative"
    if paths:
        series = read_panel(paths[0], state.get("counts", "cumulative"))
        if series[0].columns != list(state["columns"]):
            raise UsageError(f"{paths[0]}: columns {series[0].columns} differ from the model's {state['columns']}")
        return [
            (one.name, *one.daily(state.get("counts", "cumulative")), one.values[-1] if cumulative else None)
            for one in series
        ]
    stored = state.get("panel") or [state]
    found = []
    for one in stored:
        dates, daily = daily_from_state(one)
        last_total = torch.tensor(one["cumulative"][-1]) if "cumulative" in one else None
        found.append((one.get("name", "series"), dates, daily, last_total))
    return found


def predict_covid19(module: Any, request: PredictRequest) -> Prediction:
    """Forecast ``days`` days past the end of each series (stored in the checkpoint, or read from the input path)
    with quantile intervals; plot the first series' history and forecast.

    Per row ``series``, ``date`` and per count column ``<column>_new`` (the median forecast of the day),
    ``<column>_low_<w>`` / ``<column>_high_<w>`` (the central ``w``% interval, ``w`` in 50, 80, 95) and, for
    cumulative files, ``<column>_total`` (the running total of the medians).
    """
    days = request.days or 7
    columns = list(module.preprocessing["columns"])
    records = []
    plotted = None
    for name, dates, daily, last_total in _series_to_forecast(module, request):
        forecast = module.forecast(days, daily)
        totals = last_total + forecast.point.cumsum(0) if last_total is not None else None
        bounds = {width: forecast.interval(width) for width in FORECAST_INTERVALS}
        last_date = dt.date.fromisoformat(dates[-1])
        for offset in range(days):
            record: dict[str, Any] = {
                "series": name,
                "date": (last_date + dt.timedelta(days=offset + 1)).isoformat(),
            }
            for i, column in enumerate(columns):
                record[f"{column}_new"] = round(float(forecast.point[offset, i]), 1)
                for width, (lower, upper) in bounds.items():
                    record[f"{column}_low_{width}"] = round(float(lower[offset, i]), 1)
                    record[f"{column}_high_{width}"] = round(float(upper[offset, i]), 1)
                if totals is not None:
                    record[f"{column}_total"] = round(float(totals[offset, i]), 1)
            records.append(record)
        if plotted is None:
            plotted = (dates, daily, [r["date"] for r in records], forecast, bounds)
    kinds = ["new", *(f"{end}_{width}" for width in FORECAST_INTERVALS for end in ("low", "high"))]
    if "total" in {key.rpartition("_")[2] for key in records[0]}:
        kinds.append("total")
    all_columns = ["series", "date", *(f"{c}_{kind}" for c in columns for kind in kinds)]
    shown = ["series", "date", *(f"{c}_{kind}" for c in columns for kind in ("new", "low_80", "high_80"))]
    written = []
    if request.plot_path is not None and plotted is not None:
        dates, daily, forecast_dates, forecast, bounds = plotted
        figure = forecast_figure(dates, daily, forecast_dates[:days], forecast.point, columns, intervals=bounds)
        request.plot_path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(request.plot_path, dpi=100)
        written.append(request.plot_path)
    return Prediction(records, shown, all_columns, written)
