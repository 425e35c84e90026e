"""Shared pieces of the task DataModules."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from datamodules.errors import DataError

#: Data shipped inside the package, so a fresh clone runs offline.
PACKAGED_DATA_DIR = Path(__file__).resolve().parent / "data"


class BatchIndexedTensors(TensorDataset):
    """A ``TensorDataset`` that fetches a whole batch with one indexing operation per tensor.

    The DataLoader hands ``__getitems__`` the batch's indices (so any sampler,
    Lightning's ``DistributedSampler`` included, still decides which rows) and
    :func:`keep_batch` passes the stacked tensors through, instead of indexing
    and collating row by row.
    """

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return tuple(tensor[index] for tensor in self.tensors)


def keep_batch(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """``collate_fn`` for :class:`BatchIndexedTensors`: the batch is already stacked."""
    return batch


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

    def __init__(self, data_dir: str | Path | None = None) -> None:
        super().__init__()
        self.data_dir = Path(data_dir) if data_dir is not None else PACKAGED_DATA_DIR / self.packaged_subdir
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def _loader(self, dataset: Dataset | None, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"call {type(self).__name__}.setup() before asking for a dataloader")
        workers = self.hparams.num_workers
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            num_workers=workers,
            persistent_workers=workers > 0,
            collate_fn=keep_batch if isinstance(dataset, BatchIndexedTensors) else None,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    def model_kwargs(self) -> dict[str, Any]:
        raise NotImplementedError

    def preprocessing_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def require_file(self, name: str) -> Path:
        """Return ``data_dir / name`` or raise a :class:`DataError` saying it is missing."""
        path = self.data_dir / name
        if not path.is_file():
            raise DataError(path, f"file not found (expected '{name}' in --data-dir {self.data_dir})")
        return path


def read_csv_rows(path: Path, required_columns: list[str], delimiter: str = ",") -> list[tuple[int, dict[str, str]]]:
    """Read a delimited text file into ``(line_number, row)`` pairs.

    Raises :class:`DataError` naming the file for an empty file, a missing
    column, a row with the wrong number of fields or bytes that are not UTF-8.
    """
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            if reader.fieldnames is None:
                raise DataError(path, "file is empty (expected a header row)")
            header = [name.strip() for name in reader.fieldnames]
            missing = [column for column in required_columns if column not in header]
            if missing:
                raise DataError(path, f"missing column(s) {missing}; header has {header}", line=1)
            reader.fieldnames = header
            rows = []
            for row in reader:
                if None in row or any(value is None for value in row.values()):
                    raise DataError(path, f"expected {len(header)} fields", line=reader.line_num)
                rows.append((reader.line_num, row))
    except UnicodeDecodeError as err:
        raise DataError(path, f"not UTF-8 text ({err.reason} at byte {err.start})") from err
    except csv.Error as err:
        raise DataError(path, f"malformed CSV ({err})") from err
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
