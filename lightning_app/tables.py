"""Printing results for people (aligned text tables) and for scripts (CSV, JSON)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

OUTPUT_FORMATS = ("table", "csv", "json")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".")
    return "" if value is None else str(value)


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns separated by two spaces, a header line first."""
    cells = [list(columns), *([_cell(value) for value in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "".join(_table_line(row, widths) for row in cells).removesuffix("\n")


def metrics_table(metrics: dict[str, float], baseline: str | None = None) -> str:
    """One row per metric; with a ``baseline`` name, its ``<stage>/<baseline>_<metric>`` values go beside."""
    rows = []
    for key, value in sorted(metrics.items()):
        stage, _, name = key.partition("/")
        if baseline and name.startswith(f"{baseline}_"):
            continue
        reference = metrics.get(f"{stage}/{baseline}_{name}") if baseline else None
        rows.append((key, value, reference) if baseline else (key, value))
    return format_table(["metric", "value", baseline] if baseline else ["metric", "value"], rows)


class RecordFormatter:
    """Formats records chunk by chunk into one aligned table, CSV or JSON document.

    ``chunk(records)`` returns the text for those records (the header, or JSON's opening bracket, before the
    first rows), ``finish()`` what ends the document. Their concatenation does not depend on how the records were
    cut into chunks for CSV and JSON; a table takes its column widths from the first chunk that has rows, and
    later rows are padded to at least those widths. Every line ends with ``"\\n"``.
    """

    def __init__(self, columns: Sequence[str], output_format: str) -> None:
        if output_format not in OUTPUT_FORMATS:
            raise ValueError(f"unknown output format {output_format!r}; choose from {OUTPUT_FORMATS}")
        self.columns = list(columns)
        self.output_format = output_format
        self.rows_written = 0
        self._widths: list[int] | None = None

    def chunk(self, records: Sequence[dict[str, Any]]) -> str:
        """The text of ``records``: one line per record (JSON: one object per line)."""
        if not records:
            return ""
        first = self.rows_written == 0
        self.rows_written += len(records)
        if self.output_format == "json":
            objects = ",\n".join(
                "  " + json.dumps({column: record.get(column) for column in self.columns}) for record in records
            )
            return ("[\n" if first else ",\n") + objects
        if self.output_format == "csv":
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=self.columns, extrasaction="ignore", lineterminator="\n")
            if first:
                writer.writeheader()
            writer.writerows(records)
            return buffer.getvalue()
        cells = [[_cell(record.get(column)) for column in self.columns] for record in records]
        if self._widths is None:
            self._widths = [max(len(row[i]) for row in [self.columns, *cells]) for i in range(len(self.columns))]
            cells.insert(0, self.columns)
        return "".join(_table_line(row, self._widths) for row in cells)

    def finish(self) -> str:
        """What ends the document: JSON's closing bracket, or the header alone when no record came."""
        if self.output_format == "json":
            return "\n]\n" if self.rows_written else "[]\n"
        if self.rows_written:
            return ""
        if self.output_format == "csv":
            buffer = io.StringIO()
            csv.DictWriter(buffer, fieldnames=self.columns, lineterminator="\n").writeheader()
            return buffer.getvalue()
        return _table_line(self.columns, [len(column) for column in self.columns])


def _table_line(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip() + "\n"


def render_records(records: Sequence[dict[str, Any]], columns: Sequence[str], output_format: str) -> str:
    """``records`` as an aligned table, CSV (all columns) or JSON (a list of objects): :class:`RecordFormatter`'s
    document in one chunk, without its last newline."""
    formatter = RecordFormatter(columns, output_format)
    return (formatter.chunk(records) + formatter.finish()).removesuffix("\n")
