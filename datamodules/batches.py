"""Datasets that build a whole batch with a few tensor operations, and the loader that serves them.

:class:`BatchGathering` is the interface (:class:`BatchIndexedTensors` for tensors indexed row by row,
:class:`PaddedRaggedRows` for variable-length rows padded per batch); :class:`TensorBatchLoader` serves
their batches without a ``DataLoader`` in a single process, and :func:`keep_batch` lets a ``DataLoader``
pass them through uncollated. :class:`datamodules.base.TaskDataModule` chooses between the two.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, TensorDataset


class BatchGathering(Dataset):
    """A dataset that builds a whole batch from a tensor of row indices with a few tensor operations.

    Subclasses implement :meth:`gather` (rows ``index`` as a batch tuple), :meth:`to`
    (the dataset with its tensors on a device) and :attr:`nbytes`. The DataLoader hands
    ``__getitems__`` the batch's indices (so any sampler, Lightning's
    ``DistributedSampler`` included, still decides which rows) and :func:`keep_batch`
    passes the stacked batch through, instead of indexing and collating row by row;
    without a sampler, :class:`TensorBatchLoader` calls :meth:`gather` directly.
    """

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        """Where the dataset's tensors are (and its batches are made)."""
        raise NotImplementedError

    @property
    def nbytes(self) -> int:
        """Bytes the dataset's tensors take (what a copy onto a device would take)."""
        raise NotImplementedError

    def gather(self, index: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The batch of rows ``index`` (``int64[B]`` on :attr:`device`)."""
        raise NotImplementedError

    def rows(self, start: int, stop: int) -> tuple[torch.Tensor, ...]:
        """The batch of rows ``start`` to ``stop`` (exclusive), in order."""
        return self.gather(torch.arange(start, min(stop, len(self)), device=self.device))

    def to(self, device: torch.device, copies: dict[int, torch.Tensor] | None = None) -> BatchGathering:
        """This dataset with its tensors copied to ``device``.

        ``copies`` (tensor id -> copy) lets datasets that share a tensor (a train and a
        validation split of one file) share its copy too; see :func:`copied_to`.
        """
        raise NotImplementedError

    def all_rows(self) -> tuple[torch.Tensor, ...]:
        """Every row as one batch, in memory (for small sets, tests and plain loops)."""
        return self.rows(0, len(self))

    def __getitem__(self, row: int) -> tuple[torch.Tensor, ...]:
        return tuple(tensor[0] for tensor in self.gather(torch.tensor([row], device=self.device)))

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        return self.gather(torch.as_tensor(indices, dtype=torch.long, device=self.device))


class BatchIndexedTensors(TensorDataset, BatchGathering):
    """A ``TensorDataset`` whose batch is one ``index_select`` per tensor (row ``i`` is ``tensor[i]`` of each)."""

    @property
    def device(self) -> torch.device:
        return self.tensors[0].device

    @property
    def nbytes(self) -> int:
        return sum(tensor.nbytes for tensor in self.tensors)

    def gather(self, index: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(tensor.index_select(0, index) for tensor in self.tensors)

    def rows(self, start: int, stop: int) -> tuple[torch.Tensor, ...]:
        return tuple(tensor[start:stop] for tensor in self.tensors)  # views, no copy

    def to(self, device: torch.device, copies: dict[int, torch.Tensor] | None = None) -> BatchIndexedTensors:
        return type(self)(*(copied_to(tensor, device, copies) for tensor in self.tensors))


class PaddedRaggedRows(BatchGathering):
    """Variable-length rows stored flat, served as padded batches ``(values [B, width], labels int64[B])``.

    Stored row ``r`` is ``values[offsets[r]:offsets[r + 1]]`` (at most ``width`` long);
    dataset row ``i`` is stored row ``order[i]`` with label ``labels[order[i]]``, so a
    split or a shuffle of the stored rows needs no copy of ``values``. A batch pads each
    row with ``pad_value`` to ``width``, after its values (``pad_side="right"``) or before
    them (``"left"``), in one vectorised gather (no loop over rows); the tensors may be
    memory-mapped (only the rows a batch needs are read) or on a GPU.
    """

    def __init__(
        self,
        values: torch.Tensor,
        offsets: torch.Tensor,
        labels: torch.Tensor,
        order: torch.Tensor,
        width: int,
        pad_side: str = "right",
        pad_value: int = 0,
    ) -> None:
        if pad_side not in ("left", "right"):
            raise ValueError(f"pad_side must be 'left' or 'right', got {pad_side!r}")
        if offsets.ndim != 1 or labels.shape != (offsets.numel() - 1,):
            raise ValueError(
                f"offsets int64[N + 1] and labels [N] expected, got {list(offsets.shape)}, {list(labels.shape)}"
            )
        self.values, self.offsets, self.labels_by_stored_row, self.order = values, offsets, labels, order
        self.width, self.pad_side, self.pad_value = width, pad_side, pad_value

    def __len__(self) -> int:
        return self.order.numel()

    @property
    def device(self) -> torch.device:
        return self.values.device

    @property
    def nbytes(self) -> int:
        return sum(tensor.nbytes for tensor in (self.values, self.offsets, self.labels_by_stored_row, self.order))

    @property
    def labels(self) -> torch.Tensor:
        """``int64[N]``: the label of every dataset row, in dataset order."""
        return self.labels_by_stored_row[self.order]

    def gather(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stored = self.order.index_select(0, index)
        starts = self.offsets.index_select(0, stored)
        lengths = self.offsets.index_select(0, stored + 1) - starts
        columns = torch.arange(self.width, device=self.device)
        # position of each output column within its row: negative or past the end means padding
        positions = (
            columns - (self.width - lengths).unsqueeze(1)
            if self.pad_side == "left"
            else columns.expand(len(stored), -1)
        )
        is_value = (positions >= 0) & (positions < lengths.unsqueeze(1))
        if self.values.numel() == 0:
            padded = torch.full(positions.shape, self.pad_value, dtype=self.values.dtype, device=self.device)
        else:
            source = torch.where(is_value, starts.unsqueeze(1) + positions, 0)
            padded = torch.where(is_value, self.values[source], self.pad_value)
        return padded.to(self.values.dtype), self.labels_by_stored_row.index_select(0, stored)

    def to(self, device: torch.device, copies: dict[int, torch.Tensor] | None = None) -> PaddedRaggedRows:
        tensors = (self.values, self.offsets, self.labels_by_stored_row, self.order)
        moved = (copied_to(tensor, device, copies) for tensor in tensors)
        return PaddedRaggedRows(*moved, width=self.width, pad_side=self.pad_side, pad_value=self.pad_value)


def copied_to(tensor: torch.Tensor, device: torch.device, copies: dict[int, torch.Tensor] | None) -> torch.Tensor:
    """``tensor.to(device)``, made once per tensor when ``copies`` (tensor id -> copy) is given."""
    if copies is None:
        return tensor.to(device)
    if id(tensor) not in copies:
        copies[id(tensor)] = tensor.to(device)
    return copies[id(tensor)]


def keep_batch(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """``collate_fn`` for a :class:`BatchGathering` dataset: the batch is already stacked."""
    return batch


class TensorBatchLoader:
    """Batches gathered straight from a :class:`BatchGathering` dataset, for one process without loader workers.

    Yields ``dataset.gather(index)`` for each run of ``batch_size`` row indices (or
    ``dataset.rows(start, stop)`` in order): no sampler producing Python ints, no
    collation, and, when the tensors already sit on the training device (see
    :meth:`TaskDataModule.dataset_on_device`), no host-to-device copy per batch.
    It draws from torch's global generator what a ``DataLoader`` (with
    ``shuffle``, a ``RandomSampler``) draws, so a seeded run sees the same batches
    and random numbers as with a ``DataLoader``.
    """

    def __init__(self, dataset: BatchGathering, batch_size: int, shuffle: bool) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        dataset = self.dataset
        count, size = len(dataset), self.batch_size
        # A DataLoader's iterator draws its workers' base seed from the global generator, and RandomSampler
        # then draws the seed of its permutation: draw the same numbers, so that everything seeded after
        # (the permutation, dropout masks, later epochs) matches a run with a DataLoader.
        _draw_seed()
        if not self.shuffle:
            for start in range(0, count, size):
                yield dataset.rows(start, start + size)
            return
        seed = _draw_seed()
        order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).to(dataset.device)
        for start in range(0, count, size):
            yield dataset.gather(order[start : start + size])


def _draw_seed() -> int:
    return int(torch.empty((), dtype=torch.int64).random_().item())
