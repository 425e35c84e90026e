"""Errors raised for bad input data, worded so a user can fix the file."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """A data file is missing, empty or malformed.

    The message always names the file and, where it is known, the line and column.
    """

    def __init__(self, path: str | Path, problem: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path = Path(path)
        self.line = line
        self.problem = problem
