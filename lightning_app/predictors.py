"""Turning raw command-line inputs into predictions, one function per task (see the registry).

A predictor takes a module loaded from a checkpoint and a :class:`PredictRequest`
and returns a :class:`Prediction`: records plus the columns to show. The
``predict`` CLI only formats what comes back.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from datamodules.base import read_csv_rows
from datamodules.covid import daily_from_state
from datamodules.errors import DataError
from datamodules.imdb import read_text_lines
from datamodules.titanic import INPUT_COLUMNS, parse_passenger
from lightning_app.errors import UsageError
from lightning_app.figures import forecast_figure


@dataclass
class PredictRequest:
    """What the user asked to score: positional ``inputs`` (texts or paths), an ``input_file``, ``days``."""

    inputs: list[str] = field(default_factory=list)
    input_file: Path | None = None
    days: int | None = None
    plot_path: Path | None = None


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


def predict_titanic(module, request: PredictRequest) -> Prediction:
    """Score a Kaggle-format passenger CSV; every input column comes back plus the survival columns."""
    path = _single_input_file(request, "passenger CSV file")
    rows = read_csv_rows(path, INPUT_COLUMNS)
    passengers = [parse_passenger(path, line, row, with_label=False) for line, row in rows]
    scores = module.predict_raw(passengers)
    records = [
        {**row, "survival_probability": score["probabilities"]["survived"], "survived_predicted": score["class_id"]}
        for (_, row), score in zip(rows, scores, strict=True)
    ]
    input_columns = list(rows[0][1].keys())
    added = ["survival_probability", "survived_predicted"]
    shown = [column for column in ("PassengerId", "Name") if column in input_columns]
    return Prediction(records, [*shown, *added], [*input_columns, *added])


def predict_imdb(module, request: PredictRequest) -> Prediction:
    """Score review strings given as arguments and/or one per line of ``--input-file``."""
    from_file = []
    if request.input_file is not None:
        from_file = read_text_lines(request.input_file)  # split on "\n" only: reviews may hold U+0085
        if not from_file:
            raise DataError(request.input_file, "file is empty (expected one review per line)")
    texts = [*request.inputs, *from_file]
    if not texts:
        raise UsageError("give review texts as arguments or --input-file FILE (one review per line)")
    records = [
        {"text": text, "label": score["label"], "probability": score["probability"]}
        for text, score in zip(texts, module.predict_raw(texts), strict=True)
    ]
    for record in records:
        record["review"] = record["text"] if len(record["text"]) <= 60 else record["text"][:57] + "..."
    return Prediction(records, ["review", "label", "probability"], ["text", "label", "probability"])


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


def predict_cifar2(module, request: PredictRequest) -> Prediction:
    """Classify image files, or every image under the folders given."""
    files = _image_files(request)
    records = [
        {"path": str(path), "label": score["label"], "probability": score["probability"]}
        for path, score in zip(files, module.predict_raw(files), strict=True)
    ]
    columns = ["path", "label", "probability"]
    return Prediction(records, columns, columns)


def predict_covid19(module, request: PredictRequest) -> Prediction:
    """Forecast ``days`` days past the end of the stored series, with an interval per day; plot history and forecast.

    Per series ``<column>_new`` (the day's forecast), ``<column>_low`` / ``<column>_high`` (the interval,
    ``module.hparams.interval`` coverage) and, for cumulative files, ``<column>_total`` (the running total).
    """
    if request.inputs or request.input_file:
        raise UsageError("covid19 forecasts from the series stored in the checkpoint: pass --days N, no inputs")
    days = request.days or 7
    state = module.preprocessing
    columns = state["columns"]
    history_dates, history = daily_from_state(state)
    forecast = module.forecast(days)
    totals = torch.tensor(state["cumulative"][-1]) + forecast.point.cumsum(0) if "cumulative" in state else None
    last_date = dt.date.fromisoformat(state["dates"][-1])
    records = []
    for offset in range(days):
        record: dict[str, Any] = {"date": (last_date + dt.timedelta(days=offset + 1)).isoformat()}
        for i, name in enumerate(columns):
            record[f"{name}_new"] = round(float(forecast.point[offset, i]), 1)
            record[f"{name}_low"] = round(float(forecast.lower[offset, i]), 1)
            record[f"{name}_high"] = round(float(forecast.upper[offset, i]), 1)
            if totals is not None:
                record[f"{name}_total"] = round(float(totals[offset, i]), 1)
        records.append(record)
    kinds = ("new", "low", "high", "total") if totals is not None else ("new", "low", "high")
    all_columns = ["date", *(f"{c}_{kind}" for c in columns for kind in kinds)]
    written = []
    if request.plot_path is not None:
        figure = forecast_figure(
            history_dates,
            history,
            [r["date"] for r in records],
            forecast.point,
            columns,
            lower=forecast.lower,
            upper=forecast.upper,
            interval=float(module.hparams.get("interval", 0.8)),
        )
        request.plot_path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(request.plot_path, dpi=100)
        written.append(request.plot_path)
    return Prediction(records, all_columns, all_columns, written)
