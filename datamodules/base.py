"""Shared pieces of the task DataModules: the base DataModule, delimited-file reading, the train/validation split.

The batch datasets and the loader the base DataModule serves them with are :mod:`datamodules.batches`.
"""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.batches import BatchGathering, TensorBatchLoader, keep_batch
from datamodules.errors import DataError

#: Data shipped inside the package, so a fresh clone runs offline.
PACKAGED_DATA_DIR = Path(__file__).resolve().parent / "data"

#: A dataset is copied to the GPU once when it takes at most this share of the GPU's free memory.
RESIDENT_SHARE_OF_FREE_MEMORY = 0.25


def fits_on_device(nbytes: int, device: torch.device) -> bool:
    """Whether ``nbytes`` of data may stay resident on ``device`` (CUDA only: other devices get batches copied)."""
    if device.type != "cuda":
        return False
    free_bytes, _ = torch.cuda.mem_get_info(device)
    return nbytes <= RESIDENT_SHARE_OF_FREE_MEMORY * free_bytes


class TaskDataModule(pl.LightningDataModule):
    """A LightningDataModule that also tells the model what it needs to know.

    After ``setup("fit")``:

    * :meth:`model_kwargs` gives the sizes the LightningModule is built with
      (number of input features, classes, vocabulary size, ...);
    * :meth:`preprocessing_state` gives the JSON-serialisable state fitted on the
      training split (normalisation statistics, vocabularies, class names) that a
      model needs to score raw inputs later. It travels inside the checkpoint.

    Subclasses call ``save_hyperparameters()`` with ``batch_size`` and
    ``num_workers`` among their arguments and fill ``train_set``, ``val_set``
    and ``test_set`` in ``setup``; the dataloaders come from here.
    """

    #: Folder under :data:`PACKAGED_DATA_DIR` holding this task's bundled data.
    packaged_subdir: str = ""
    #: Arguments added after checkpoints were written, with the value that rebuilds those checkpoints' data: a
    #: checkpoint whose saved DataModule settings lack one gets this value, not the new default.
    legacy_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, data_dir: str | Path | None = None) -> None:
        super().__init__()
        self.data_dir = Path(data_dir) if data_dir is not None else PACKAGED_DATA_DIR / self.packaged_subdir
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self._device_copies: dict[tuple[int, str], BatchGathering] = {}
        #: Tensor copies on each device, by tensor id: datasets sharing a tensor share its copy.
        self._tensor_copies: dict[str, dict[int, torch.Tensor]] = {}

    def _loader(self, dataset: Dataset | None, shuffle: bool) -> DataLoader | TensorBatchLoader:
        if dataset is None:
            raise RuntimeError(f"call {type(self).__name__}.setup() before asking for a dataloader")
        workers = self.hparams.num_workers
        single_process = self.trainer is None or self.trainer.world_size == 1
        if isinstance(dataset, BatchGathering) and workers == 0 and single_process:
            return TensorBatchLoader(self.dataset_on_device(dataset), self.hparams.batch_size, shuffle)
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            num_workers=workers,
            persistent_workers=workers > 0,
            collate_fn=keep_batch if isinstance(dataset, BatchGathering) else None,
            pin_memory=torch.cuda.is_available(),
        )

    def dataset_on_device(self, dataset: BatchGathering) -> BatchGathering:
        """``dataset`` copied once to the trainer's GPU when it fits there (see :func:`fits_on_device`), else itself."""
        if self.trainer is None:
            return dataset
        device = self.trainer.strategy.root_device
        key = (id(dataset), str(device))
        if key not in self._device_copies:
            copies = self._tensor_copies.setdefault(str(device), {})
            fits = fits_on_device(dataset.nbytes, device)
            self._device_copies[key] = dataset.to(device, copies) if fits else dataset
        return self._device_copies[key]

    def train_dataloader(self) -> DataLoader | TensorBatchLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader | TensorBatchLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader | TensorBatchLoader:
        return self._loader(self.test_set, shuffle=False)

    def predict_dataloader(self) -> DataLoader | TensorBatchLoader:
        return self.test_dataloader()

    def model_kwargs(self) -> dict[str, Any]:
        raise NotImplementedError

    def data_profile(self) -> dict[str, int | float]:
        """After ``setup("fit")``: numbers about the training split that settings may follow (a registry
        variant's ``data_rules``): ``train_size`` (training rows), the integer sizes of :meth:`model_kwargs`
        (``num_classes``, ``num_features``, ``vocab_size``, ...) and what a subclass adds (text lengths)."""
        if self.train_set is None:
            raise RuntimeError(f"call {type(self).__name__}.setup() before data_profile()")
        sizes = {name: value for name, value in self.model_kwargs().items() if type(value) is int}
        return {"train_size": len(self.train_set), **sizes}  # type: ignore[arg-type]

    def preprocessing_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def require_file(self, name: str, *alternatives: str) -> Path:
        """Return ``data_dir / name``, else the first of ``alternatives`` that exists; a :class:`DataError`
        naming what was expected if none does."""
        for candidate in (name, *alternatives):
            if (self.data_dir / candidate).is_file():
                return self.data_dir / candidate
        expected = " or ".join(f"'{candidate}'" for candidate in (name, *alternatives))
        raise DataError(self.data_dir / name, f"file not found (expected {expected} in --data-dir {self.data_dir})")


#: One data row of a delimited file: ``(line number, {column: value})``, or ``(line number, DataError)`` for a row
#: that cannot be read (wrong number of fields, bytes that are not UTF-8).
CsvRow = tuple[int, "dict[str, str] | DataError"]


def _not_utf8(path: Path, line: int, values: list[str], names: list[str] | None = None) -> DataError | None:
    """A :class:`DataError` if a value read with ``errors="surrogateescape"`` held bytes that are not UTF-8."""
    try:
        "".join(values).encode("utf-8")
        return None
    except UnicodeEncodeError:
        for at, value in enumerate(values):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as err:
                byte = ord(value[err.start]) - 0xDC00
                where = f" in column '{names[at]}'" if names is not None and at < len(names) else ""
                return DataError(path, f"not UTF-8 text (byte 0x{byte:02x}{where})", line=line)
    return None


@contextlib.contextmanager
def _csv_reader(path: Path, required_columns: list[str], delimiter: str) -> Iterator[csv.DictReader]:
    """An open ``DictReader`` whose header was checked (stripped names, required columns, UTF-8); ``csv.Error`` as
    :class:`DataError`. Values are read with ``errors="surrogateescape"``: see :func:`_not_utf8`."""
    try:
        # utf-8-sig: a file saved by Excel starts with a byte-order mark, which is not part of the first column name.
        with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            if reader.fieldnames is None:
                raise DataError(path, "file is empty (expected a header row)")
            header = [name.strip() for name in reader.fieldnames]
            bad_bytes = _not_utf8(path, 1, header)
            if bad_bytes is not None:
                raise bad_bytes
            missing = [column for column in required_columns if column not in header]
            if missing:
                raise DataError(path, f"missing column(s) {missing}; header has {header}", line=1)
            reader.fieldnames = header
            yield reader
    except csv.Error as err:
        raise DataError(path, f"malformed CSV ({err})") from err


def csv_header(path: Path, required_columns: list[str], delimiter: str = ",") -> list[str]:
    """The column names of a delimited file, checked as :func:`iter_csv_rows` checks them."""
    with _csv_reader(path, required_columns, delimiter) as reader:
        return list(reader.fieldnames or [])


def iter_csv_rows(path: Path, required_columns: list[str], delimiter: str = ",") -> Iterator[CsvRow]:
    """Stream a delimited text file as ``(line_number, row)`` pairs (see :data:`CsvRow`), one row in memory at a time.

    Raises :class:`DataError` naming the file for an empty file, a missing column or malformed quoting; a row with
    the wrong number of fields or bytes that are not UTF-8 comes as ``(line_number, DataError)``, so a caller may
    stop there or skip the row.
    """
    with _csv_reader(path, required_columns, delimiter) as reader:
        width = len(reader.fieldnames or [])
        for row in reader:
            line = reader.line_num
            if None in row or any(value is None for value in row.values()):
                yield line, DataError(path, f"expected {width} fields", line=line)
                continue
            yield line, _not_utf8(path, line, list(row.values()), list(row)) or row


def read_csv_rows(path: Path, required_columns: list[str], delimiter: str = ",") -> list[tuple[int, dict[str, str]]]:
    """Read a delimited text file into ``(line_number, row)`` pairs (all of :func:`iter_csv_rows`, in memory).

    Raises :class:`DataError` naming the file for an empty file, a missing
    column, a row with the wrong number of fields or bytes that are not UTF-8.
    """
    rows = []
    for line, row in iter_csv_rows(path, required_columns, delimiter):
        if isinstance(row, DataError):
            raise row
        rows.append((line, row))
    if not rows:
        raise DataError(path, "file has a header but no data rows")
    return rows


def parse_float(path: Path, line: int, column: str, value: str, allow_missing: bool = False) -> float | None:
    """Parse one numeric cell; an empty cell is ``None`` when ``allow_missing``."""
    value = value.strip()
    if not value:
        if allow_missing:
            return None
        raise DataError(path, f"column '{column}' is empty", line=line)
    try:
        number = float(value)
    except ValueError:
        raise DataError(path, f"column '{column}' has non-numeric value {value!r}", line=line) from None
    if number != number or number in (float("inf"), float("-inf")):
        raise DataError(path, f"column '{column}' has non-finite value {value!r}", line=line)
    return number


def train_val_split(
    count: int, val_fraction: float, seed: int, source: Path, what: str = "data"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded ``(train_index, val_index)`` over ``count`` training rows, the validation part first in the shuffle.

    Raises :class:`DataError` naming ``source`` (and ``what`` a row is) when too few rows are left to train on.
    """
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, round(count * val_fraction))
    if n_val >= count:
        problem = f"{count} {what} row(s) are too few to hold out {n_val} for validation and train on the rest"
        raise DataError(source, problem)
    return order[n_val:], order[:n_val]
