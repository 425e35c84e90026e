"""Sections of ``benchmarks/RESULTS.md`` that one benchmark owns, between ``<!-- NAME:start -->`` and ``:end`` markers.

``benchmarks.run`` rewrites the file and carries these sections over; the benchmark that owns one
replaces only its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from datamodules.files import atomic_write_bytes


@dataclass(frozen=True)
class MarkedSection:
    name: str

    @property
    def start(self) -> str:
        return f"<!-- {self.name}:start -->"

    @property
    def end(self) -> str:
        return f"<!-- {self.name}:end -->"

    def _pattern(self) -> re.Pattern[str]:
        return re.compile(re.escape(self.start) + ".*?" + re.escape(self.end), flags=re.DOTALL)

    def read(self, output: Path) -> str | None:
        """The section as it stands in ``output`` (markers included), or ``None``."""
        if not output.is_file():
            return None
        found = self._pattern().search(output.read_text(encoding="utf-8"))
        return found.group(0) if found else None

    def write(self, text: str, output: Path) -> None:
        """Put ``text`` (markers included) into ``output`` in place of the earlier section, or at its end."""
        current = output.read_text(encoding="utf-8") if output.is_file() else "# Benchmark results\n"
        pattern = self._pattern()
        found = pattern.search(current)
        updated = pattern.sub(lambda _: text, current) if found else current.rstrip("\n") + "\n\n" + text
        atomic_write_bytes(output, (updated.rstrip("\n") + "\n").encode())


PEERS = MarkedSection("peers")
SCALE = MarkedSection("scale")
FORECAST_SELECTION = MarkedSection("forecast_selection")
EXTERNAL = MarkedSection("external")
#: Written by hand from ``python -m lightning_app.backtest`` runs.
COVID_BACKTEST = MarkedSection("covid_backtest")
#: Sections ``benchmarks.run`` does not measure and carries over when it rewrites RESULTS.md.
OWNED_ELSEWHERE = (PEERS, SCALE, FORECAST_SELECTION, EXTERNAL, COVID_BACKTEST)
