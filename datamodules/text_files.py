"""Reading line-based text files and labeled tab-separated files (the IMDB task's ``train.tsv``/``test.tsv``).

* :func:`iter_raw_lines` streams the lines of a file (gzip-compressed if it ends in ``.gz``),
  :func:`decode_line` decodes one with a :class:`DataError` naming the file and line;
* :func:`iter_labeled_rows` streams a TSV file with ``label`` and ``text`` columns
  (:func:`read_labeled_texts` reads it whole, :func:`scan_labels` checks it without keeping the texts);
* :func:`label_values` orders the distinct labels into class ids.
"""

from __future__ import annotations

import array
import codecs
import gzip
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from datamodules.errors import DataError

LABEL_COLUMN, TEXT_COLUMN = "label", "text"


def iter_raw_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(line number, bytes)`` of each line of a file (gzip-compressed if it ends in ``.gz``), streamed.

    Lines are split on ``\\n`` only (``str.splitlines`` would also split on U+0085, NEL,
    which some reviews contain); a trailing ``\\r`` is dropped, and a final newline
    does not make an extra empty line; a UTF-8 byte-order mark starting the file (Excel writes one) is dropped.
    Read errors (also a truncated ``.gz``) are :class:`DataError` s naming the file.
    """
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if number == 1:
                    raw = raw.removeprefix(codecs.BOM_UTF8)
                yield number, raw.removesuffix(b"\n").removesuffix(b"\r")
    except (OSError, EOFError) as err:
        raise DataError(path, f"cannot read file ({err})") from err


def decode_line(path: Path, number: int, raw: bytes) -> str:
    """One line's UTF-8 text; a :class:`DataError` naming the file, line and byte if it is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        problem = f"not UTF-8 text ({err.reason} at byte {err.start} of the line)"
        raise DataError(path, problem, line=number) from None


def iter_labeled_rows(path: str | Path) -> Iterator[tuple[int, str, str]]:
    """``(line number, raw label, text)`` of each data row of a tab-separated file, streamed.

    The header names ``label`` and ``text`` columns (other columns are ignored);
    fields are not quoted (a review may start with ``"``); empty lines are skipped.
    Raises :class:`DataError` naming the file and line for undecodable bytes, a
    missing column, a row with the wrong number of fields, an empty label, or a
    file without a header or without data rows.
    """
    path = Path(path)
    lines = iter_raw_lines(path)
    first = next(lines, None)
    if first is None:
        raise DataError(path, "file is empty (expected a header row with 'label' and 'text' columns)")
    header = [name.strip() for name in decode_line(path, *first).split("\t")]
    missing = [column for column in (LABEL_COLUMN, TEXT_COLUMN) if column not in header]
    if missing:
        raise DataError(path, f"missing column(s) {missing}; tab-separated header has {header}", line=1)
    label_at, text_at = header.index(LABEL_COLUMN), header.index(TEXT_COLUMN)
    found_rows = False
    for number, raw in lines:
        if not raw:
            continue
        fields = decode_line(path, number, raw).split("\t")
        if len(fields) != len(header):
            raise DataError(path, f"expected {len(header)} tab-separated fields, found {len(fields)}", line=number)
        label = fields[label_at].strip()
        if not label:
            raise DataError(path, f"column '{LABEL_COLUMN}' is empty", line=number)
        found_rows = True
        yield number, label, fields[text_at]
    if not found_rows:
        raise DataError(path, "file has a header but no data rows")


def read_labeled_texts(path: str | Path) -> tuple[list[str], list[str], list[int]]:
    """Every row of :func:`iter_labeled_rows` in memory: ``(raw labels, texts, 1-based line numbers)``."""
    labels, texts, numbers = [], [], []
    for number, label, text in iter_labeled_rows(path):
        labels.append(label)
        texts.append(text)
        numbers.append(number)
    return labels, texts, numbers


def label_values(labels: Iterable[str]) -> list[str]:
    """The distinct raw labels in class-id order: numerically sorted if all are integers, else alphabetically."""
    distinct = set(labels)
    try:
        return sorted(distinct, key=int)
    except ValueError:
        return sorted(distinct)


def scan_labels(path: Path) -> tuple[list[str], np.ndarray]:
    """Check every row of a labeled TSV (without tokenising): ``(distinct labels in order seen, int64[rows] codes)``.

    Row ``r``'s label is ``distinct[codes[r]]``.
    """
    code_of: dict[str, int] = {}
    codes = array.array("q", (code_of.setdefault(label, len(code_of)) for _, label, _ in iter_labeled_rows(path)))
    return list(code_of), np.frombuffer(codes, dtype=np.int64).copy()
