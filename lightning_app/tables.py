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
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)


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


def render_records(records: Sequence[dict[str, Any]], columns: Sequence[str], output_format: str) -> str:
    """``records`` as an aligned table, CSV (all columns) or JSON (a list of objects)."""
    if output_format == "json":
        return json.dumps([{column: record.get(column) for column in columns} for record in records], indent=2)
    if output_format == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        return buffer.getvalue().rstrip("\n")
    if output_format == "table":
        return format_table(columns, [[record.get(column) for column in columns] for record in records])
    raise ValueError(f"unknown output format {output_format!r}; choose from {OUTPUT_FORMATS}")
