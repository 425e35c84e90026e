"""Raw inputs read lazily and scored in chunks: what the streaming predictors return (see ``predictors``).

A :class:`StreamedInputs` lists a task's raw items cheaply (CSV rows, text lines, image paths) and says how to
turn one into the input of the module's ``predict_raw`` (parse, decode, load) and a scored item into an output
record. ``lightning_app.streaming`` cuts the items into :class:`RawChunk` s and scores them with ``Trainer.predict``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from datamodules.errors import DataError
from lightning_app.batches import RawBatch


class RawChunk(RawBatch):
    """One chunk of raw inputs: the :class:`~lightning_app.batches.RawBatch` ``TaskModule.predict_step`` scores with
    ``predict_raw``.

    ``index`` is the chunk's place in the whole input (0, 1, ...; the same whatever the number of processes);
    ``inputs`` what ``predict_raw`` takes (a list of texts or passengers, or ``uint8[N, 3, S, S]`` images);
    ``fields`` the input columns of each item's output record, in the same order; ``skipped`` the bad items left
    out (``--skip-bad-inputs``); ``error`` the bad item that stopped the reading (then nothing else is set);
    ``blank`` the places in ``fields`` of the items kept as rows without a score (:data:`BLANK`), which have no
    input in ``inputs``. ``len(chunk)`` is the number of items to score.
    """

    __slots__ = ("blank", "error", "fields", "index", "skipped")

    def __init__(
        self,
        index: int,
        inputs: Any = (),
        fields: Sequence[dict[str, Any]] = (),
        skipped: Sequence[DataError] = (),
        error: DataError | None = None,
        blank: Sequence[int] = (),
    ) -> None:
        super().__init__(inputs)
        self.index = index
        self.fields = list(fields)
        self.skipped = list(skipped)
        self.error = error
        self.blank = list(blank)

    def __len__(self) -> int:
        return len(self.fields) - len(self.blank)


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: What :meth:`StreamedInputs.prepare` returns as the input of an item that gets a row but no score (a blank line):
#: its record is :meth:`StreamedInputs.blank_record`, so output rows still match input lines.
BLANK: Any = _Marker("BLANK")
#: What :meth:`StreamedInputs.prepare` returns as the input of an item left out of the output (a blank line under
#: ``--skip-blank-lines``).
OMITTED: Any = _Marker("OMITTED")


class StreamedInputs(ABC):
    """A task's raw inputs, read lazily, and how to score and record them chunk by chunk."""

    #: Items per chunk when ``--batch-size`` is not given.
    default_batch_size: ClassVar[int] = 512
    #: Columns of the readable table, and of CSV and JSON output.
    columns: list[str]
    all_columns: list[str]

    @abstractmethod
    def items(self) -> Iterator[Any]:
        """Every raw item, in input order. Cheap (no parsing or decoding): every process reads them all to cut the
        same chunks. May raise :class:`DataError` when the input cannot be read further."""

    @abstractmethod
    def prepare(self, item: Any) -> tuple[Any, dict[str, Any]]:
        """``(input for predict_raw, the record's input columns)`` of one item; :class:`DataError` for a bad item.
        The input may be :data:`BLANK` (a row without a score) or :data:`OMITTED` (no row)."""

    @abstractmethod
    def record(self, fields: dict[str, Any], score: dict[str, Any]) -> dict[str, Any]:
        """The output record of one item: its input ``fields`` and its ``predict_raw`` ``score``."""

    def blank_record(self, fields: dict[str, Any]) -> dict[str, Any]:
        """The output record of a :data:`BLANK` item: its input ``fields``; the score columns stay empty (empty in
        a table and CSV, ``null`` in JSON)."""
        return dict(fields)

    def collate(self, inputs: list[Any]) -> Any:
        """The chunk's inputs as ``predict_raw`` takes them (a list, unless a subclass stacks them)."""
        return inputs

    def prepare_chunk(self, index: int, items: Sequence[Any], skip_bad_inputs: bool) -> RawChunk:
        """:meth:`prepare` every item of chunk ``index``; a bad item is skipped or stops the chunk (``error``)."""
        inputs, fields, skipped, blank = [], [], [], []
        for item in items:
            try:
                prepared, item_fields = self.prepare(item)
            except DataError as err:
                if not skip_bad_inputs:
                    return RawChunk(index, error=err)
                skipped.append(err)
                continue
            if prepared is OMITTED:
                continue
            if prepared is BLANK:
                blank.append(len(fields))
            else:
                inputs.append(prepared)
            fields.append(item_fields)
        return RawChunk(index, self.collate(inputs), fields, skipped, blank=blank)
