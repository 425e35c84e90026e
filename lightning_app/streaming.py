"""Scoring raw inputs chunk by chunk with ``Trainer.predict``, in one process or several, writing rows as they come.

* :class:`RawChunkDataset` cuts a task's :class:`~lightning_app.raw_inputs.StreamedInputs` into chunks of
  ``batch_size`` items, numbered 0, 1, ... over the whole input; process ``rank`` of ``world_size`` prepares
  (parses, decodes, loads) and yields chunk ``i`` when ``i % world_size == rank``. Memory holds one chunk.
* ``TaskModule.predict_step`` scores a chunk with ``predict_raw``; :class:`ChunkWriter` (a
  ``BasePredictionWriter``) formats and writes its records as soon as it is scored.
* One process writes to stdout, or to a temporary file beside ``--output`` fsynced and renamed over it at the end
  (:class:`datamodules.files.SiblingFile`). Several processes each write their chunks' records to a part file
  beside ``--output`` (length-prefixed blocks); rank 0 merges them round-robin by chunk index into the same bytes
  one process writes (again through a temporary file renamed over ``--output``), then removes them.
* A failed or interrupted run leaves neither ``--output`` nor temporary or part files.
"""

from __future__ import annotations

import itertools
import json
import secrets
import struct
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, IterableDataset

from datamodules.errors import DataError
from datamodules.files import SiblingFile, open_new_file
from lightning_app.errors import UsageError
from lightning_app.raw_inputs import RawChunk, StreamedInputs
from lightning_app.tables import RecordFormatter

PROG = "lightning_app"
MULTI_PROCESS_NEEDS_OUTPUT = "several processes need --output FILE (each process writes its rows to a part file)"


class RawChunkDataset(IterableDataset):
    """This process's chunks of ``inputs``: chunk ``i`` (``batch_size`` raw items) when ``i % world_size == rank``.

    Every process reads every raw item (cheap: paths, lines, CSV rows) so all cut the same chunks; only the owner
    prepares a chunk's items. A bad item stops at its chunk (a :class:`RawChunk` with ``error``, then nothing
    more), or is skipped with ``skip_bad_inputs``.
    """

    def __init__(
        self, inputs: StreamedInputs, batch_size: int, rank: int = 0, world_size: int = 1, skip_bad_inputs: bool = False
    ) -> None:
        super().__init__()
        self.inputs = inputs
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.skip_bad_inputs = skip_bad_inputs

    def __iter__(self) -> Iterator[RawChunk]:
        items = iter(self.inputs.items())
        for index in itertools.count():
            try:
                raw = list(itertools.islice(items, self.batch_size))
            except DataError as err:  # the input cannot be read further: every process stops here
                yield RawChunk(index, error=err)
                return
            if not raw:
                return
            if index % self.world_size != self.rank:
                continue
            chunk = self.inputs.prepare_chunk(index, raw, self.skip_bad_inputs)
            yield chunk
            if chunk.error is not None:
                return


def _as_is(chunk: RawChunk) -> RawChunk:
    """``collate_fn`` of the chunk loader: a chunk is already a batch."""
    return chunk


class RawChunkDataModule(pl.LightningDataModule):
    """Serves :class:`RawChunkDataset` to ``Trainer.predict``, with the rank and world size of the trainer."""

    def __init__(self, inputs: StreamedInputs, batch_size: int, skip_bad_inputs: bool = False) -> None:
        super().__init__()
        self.inputs = inputs
        self.batch_size = batch_size
        self.skip_bad_inputs = skip_bad_inputs

    def predict_dataloader(self) -> DataLoader:
        trainer = self.trainer
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        dataset = RawChunkDataset(self.inputs, self.batch_size, rank, world_size, self.skip_bad_inputs)
        return DataLoader(dataset, batch_size=None, collate_fn=_as_is)


# -- part files: length-prefixed blocks of one process's chunks ------------------------------------

#: A block's header: the chunk index and the payload's length in bytes (big-endian unsigned 64-bit).
_BLOCK_HEADER = struct.Struct(">QQ")


def write_block(handle: IO[bytes], index: int, records: list[dict[str, Any]], skipped: int, blank: int) -> None:
    """Append chunk ``index``'s records (and its counts of skipped items and blank rows) to a part file."""
    payload = json.dumps({"records": records, "skipped": skipped, "blank": blank}).encode()
    handle.write(_BLOCK_HEADER.pack(index, len(payload)) + payload)


def read_block(handle: IO[bytes], path: Path) -> tuple[int, list[dict[str, Any]], int, int] | None:
    """The next ``(chunk index, records, skipped, blank)`` of a part file, or ``None`` at its end."""
    header = handle.read(_BLOCK_HEADER.size)
    if not header:
        return None
    if len(header) != _BLOCK_HEADER.size:
        raise RuntimeError(f"{path}: truncated block header")
    index, size = _BLOCK_HEADER.unpack(header)
    payload = handle.read(size)
    if len(payload) != size:
        raise RuntimeError(f"{path}: truncated block of chunk {index}")
    block = json.loads(payload)
    return index, block["records"], block["skipped"], block["blank"]


def part_path(output: Path, rank: int, token: str) -> Path:
    """Where process ``rank`` of the run ``token`` writes its chunks: ``.<output name>.part<rank>-<token>``."""
    return output.parent / f".{output.name}.part{rank}-{token}"


# -- the writer ---------------------------------------------------------------------------------------


@dataclass
class StreamSummary:
    """What a streamed prediction wrote: rows, bad items skipped, and where (``None``: stdout); ``blank``: rows
    of blank inputs written without a score."""

    rows: int
    skipped: int
    output: Path | None
    blank: int = 0


class ChunkWriter(BasePredictionWriter):
    """Formats and writes each scored chunk's records (``write_interval="batch"``), then finishes the output.

    One process: rows go to ``stdout`` or to a temporary file renamed over ``output`` by :meth:`finish`. Several
    (``--output`` required): each writes its blocks to its part file; :meth:`finish` merges them on rank 0.
    A progress bar (rows, rows/s) on stderr, rank 0 only, when ``progress``.
    """

    def __init__(
        self,
        inputs: StreamedInputs,
        columns: Sequence[str],
        output_format: str,
        output: Path | None,
        progress: bool,
        stdout: IO[str] | None = None,
    ) -> None:
        super().__init__(write_interval="batch")
        self.inputs = inputs
        self.formatter = RecordFormatter(columns, output_format)
        self.output = output
        self.progress = progress
        self.stdout = stdout if stdout is not None else sys.stdout
        self.rank, self.world_size = 0, 1
        self.skipped = 0
        self.blank = 0
        self.error: tuple[int, DataError] | None = None
        self._handle: IO[bytes] | None = None
        self._temp: SiblingFile | None = None
        self._parts: list[Path] = []
        self._bar: Any = None

    # -- set-up, per chunk --------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self.rank, self.world_size = trainer.global_rank, trainer.world_size
        if self.world_size > 1:
            if self.output is None:
                raise UsageError(MULTI_PROCESS_NEEDS_OUTPUT)
            token = trainer.strategy.broadcast(secrets.token_hex(6), src=0)
            self._parts = [part_path(self.output, rank, token) for rank in range(self.world_size)]
            self._handle = self._create(self._parts[self.rank])
        elif self.output is not None:
            self._temp = SiblingFile(self.output)
            self._handle = self._temp.handle
        if self.progress and self.rank == 0:
            from tqdm import tqdm

            where = f" (rank 0 of {self.world_size})" if self.world_size > 1 else ""
            self._bar = tqdm(desc=f"predicting{where}", unit=" rows", file=sys.stderr, dynamic_ncols=True)

    @staticmethod
    def _create(path: Path) -> IO[bytes]:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open_new_file(path)

    def warn(self, message: str) -> None:
        """A warning line on stderr that leaves the progress bar intact."""
        line = f"{PROG}: warning: {message}"
        if self._bar is not None:
            self._bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: RawChunk,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        for problem in batch.skipped:
            self.warn(f"skipped {problem}")
        self.skipped += len(batch.skipped)
        if batch.error is not None:
            self.error = (batch.index, batch.error)
            return
        records = chunk_records(self.inputs, batch, prediction)
        self.blank += len(batch.blank)
        if self.world_size > 1:
            assert self._handle is not None
            write_block(self._handle, batch.index, records, len(batch.skipped), len(batch.blank))
        else:
            self._write_text(self.formatter.chunk(records))
        if self._bar is not None:
            self._bar.update(len(records))

    def _write_text(self, text: str) -> None:
        if self._handle is not None:
            self._handle.write(text.encode())
        else:
            self.stdout.write(text)
            self.stdout.flush()

    # -- the end -------------------------------------------------------------------------------------
    def finish(self, trainer: pl.Trainer) -> StreamSummary:
        """Raise the first bad input (the same in every process), else complete the output; call after predict."""
        if self._bar is not None:
            self._bar.close()
        if self.world_size > 1:
            return self._finish_parts(trainer)
        if self.error is not None:
            raise self.error[1]
        self._write_text(self.formatter.finish())
        if self._temp is not None:
            self._temp.replace()
            self._temp = None
        return StreamSummary(self.formatter.rows_written, self.skipped, self.output, self.blank)

    def _finish_parts(self, trainer: pl.Trainer) -> StreamSummary:
        assert self._handle is not None and self.output is not None
        self._handle.close()
        error = _first_error(self.error)
        if error is not None:
            if self.rank == 0:
                self.cleanup()
            trainer.strategy.barrier("predict-error")  # rank 0 removed every part before any process exits
            if self.rank != 0:
                raise SystemExit(1)  # rank 0 reports the error, once
            raise error
        trainer.strategy.barrier("predict-parts-written")
        if self.rank != 0:
            return StreamSummary(0, 0, self.output)
        self._temp = SiblingFile(self.output)
        skipped, blank = merge_parts(self._parts, self.formatter, self._temp.handle)
        self._temp.replace()
        self._temp = None
        self.cleanup()
        return StreamSummary(self.formatter.rows_written, skipped, self.output, blank)

    def cleanup(self) -> None:
        """Remove the temporary output and part files (rank 0: every process's; others: their own)."""
        if self._bar is not None:
            self._bar.close()
        if self._handle is not None and not self._handle.closed:
            self._handle.close()
        if self._temp is not None:
            self._temp.discard()
            self._temp = None
        for rank, part in enumerate(self._parts):
            if self.rank in (0, rank):
                part.unlink(missing_ok=True)


def chunk_records(inputs: StreamedInputs, chunk: RawChunk, scores: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The output records of a scored chunk, in input order: its blank items' records between the scored ones."""
    if len(scores) != len(chunk):
        raise RuntimeError(f"chunk {chunk.index}: {len(scores)} scores for {len(chunk)} inputs")
    blank, scored = set(chunk.blank), iter(scores)
    return [
        inputs.blank_record(fields) if at in blank else inputs.record(fields, next(scored))
        for at, fields in enumerate(chunk.fields)
    ]


def merge_parts(parts: Sequence[Path], formatter: RecordFormatter, merged: IO[bytes]) -> tuple[int, int]:
    """Write the blocks of ``parts`` (part ``r`` holds chunks ``r``, ``r + len(parts)``, ...) in chunk order
    through ``formatter``; returns the numbers of skipped items and of blank rows they report."""
    handles = [path.open("rb") for path in parts]
    skipped = blank = 0
    try:
        for index in itertools.count():
            owner = index % len(parts)
            block = read_block(handles[owner], parts[owner])
            if block is None:
                break
            block_index, records, block_skipped, block_blank = block
            if block_index != index:
                raise RuntimeError(f"{parts[owner]}: chunk {block_index} where chunk {index} was expected")
            merged.write(formatter.chunk(records).encode())
            skipped += block_skipped
            blank += block_blank
        leftover = [str(path) for path, handle in zip(parts, handles, strict=True) if handle.read(1)]
        if leftover:
            raise RuntimeError(f"chunks left unmerged in {', '.join(leftover)}")
        merged.write(formatter.finish().encode())
    finally:
        for handle in handles:
            handle.close()
    return skipped, blank


def _first_error(local: tuple[int, DataError] | None) -> DataError | None:
    """The bad input of the lowest chunk index over all processes (what one process would have stopped at)."""
    mine = None if local is None else (local[0], str(local[1].path), local[1].problem, local[1].line)
    gathered: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, mine)
    found = [error for error in gathered if error is not None]
    if not found:
        return None
    _, path, problem, line = min(found, key=lambda error: error[0])
    return DataError(path, problem, line=line)
