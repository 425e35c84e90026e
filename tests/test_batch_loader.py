"""The in-process batch loader of the DataModules and the copy of small datasets onto the training device."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DataLoader

import datamodules.base
from datamodules import TitanicDataModule
from datamodules.batches import BatchIndexedTensors, PaddedRaggedRows, TensorBatchLoader, keep_batch


@pytest.fixture
def dataset() -> BatchIndexedTensors:
    return BatchIndexedTensors(torch.arange(50).view(25, 2), torch.arange(25))


@pytest.mark.parametrize("shuffle", [False, True])
def test_batches_equal_the_dataloaders_for_the_same_seed(dataset: BatchIndexedTensors, shuffle: bool) -> None:
    loader = DataLoader(dataset, batch_size=4, shuffle=shuffle, collate_fn=keep_batch)
    torch.manual_seed(3)
    expected = [list(loader) for _ in range(2)]  # two epochs: the order must change like the DataLoader's
    expected_next_draw = torch.rand(1)
    torch.manual_seed(3)
    batches = TensorBatchLoader(dataset, batch_size=4, shuffle=shuffle)
    got = [list(batches) for _ in range(2)]
    assert torch.equal(torch.rand(1), expected_next_draw), "what runs after (dropout, next epoch) must match too"
    assert len(batches) == len(loader) == 7
    for epoch_expected, epoch_got in zip(expected, got, strict=True):
        for (inputs, labels), (got_inputs, got_labels) in zip(epoch_expected, epoch_got, strict=True):
            assert torch.equal(inputs, got_inputs) and torch.equal(labels, got_labels)
    if shuffle:
        assert not torch.equal(got[0][0][1], got[1][0][1])


def test_every_row_once_per_epoch(dataset: BatchIndexedTensors) -> None:
    labels = torch.cat([batch[1] for batch in TensorBatchLoader(dataset, batch_size=6, shuffle=True)])
    assert sorted(labels.tolist()) == list(range(25))


def _attach(dm: TitanicDataModule, device: str, world_size: int = 1) -> None:
    dm.trainer = SimpleNamespace(world_size=world_size, strategy=SimpleNamespace(root_device=torch.device(device)))


def test_single_process_gets_tensor_batches_and_workers_get_a_dataloader() -> None:
    dm = TitanicDataModule(batch_size=32)
    dm.setup("fit")
    assert isinstance(dm.train_dataloader(), TensorBatchLoader)
    _attach(dm, "cpu", world_size=2)  # each process needs its DistributedSampler shard
    assert isinstance(dm.train_dataloader(), DataLoader)
    with_workers = TitanicDataModule(batch_size=32, num_workers=1)
    with_workers.setup("fit")
    assert isinstance(with_workers.train_dataloader(), DataLoader)


def test_dataset_is_copied_to_the_device_once_when_it_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    dm = TitanicDataModule(batch_size=32)
    dm.setup("fit")
    # The "meta" device stands in for a GPU: tensors move there without memory or a CUDA build.
    _attach(dm, "meta")
    monkeypatch.setattr(datamodules.base, "fits_on_device", lambda nbytes, device: True)
    first, second = dm.train_dataloader(), dm.train_dataloader()
    assert first.dataset is second.dataset
    assert all(tensor.device.type == "meta" for tensor in first.dataset.tensors)
    assert all(tensor.device.type == "cpu" for tensor in dm.train_set.tensors)  # the CPU copy is kept

    monkeypatch.setattr(datamodules.base, "fits_on_device", lambda nbytes, device: False)
    dm._device_copies.clear()
    assert dm.train_dataloader().dataset is dm.train_set


def test_only_cuda_keeps_data_resident() -> None:
    assert not datamodules.base.fits_on_device(1, torch.device("cpu"))
    assert not datamodules.base.fits_on_device(1, torch.device("meta"))


# -- variable-length rows padded per batch ------------------------------------------------------------------
def ragged(pad_side: str = "right") -> tuple[PaddedRaggedRows, torch.Tensor]:
    """11 stored rows of lengths 0..5 (values ``10 * row + position``), served in a shuffled order as a dataset,
    and the padded ``int32[11, 5]`` rows it must give (dataset order)."""
    lengths = [3, 0, 5, 1, 4, 2, 5, 0, 1, 3, 2]
    rows = [[10 * row + position for position in range(length)] for row, length in enumerate(lengths)]
    values = torch.tensor([value for row in rows for value in row], dtype=torch.int32)
    offsets = torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.long)
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))
    padding = {"right": lambda row: row + [-1] * (5 - len(row)), "left": lambda row: [-1] * (5 - len(row)) + row}
    expected = torch.tensor([padding[pad_side](rows[i]) for i in order.tolist()], dtype=torch.int32)
    labels = torch.arange(len(rows)) % 3
    return PaddedRaggedRows(values, offsets, labels, order, width=5, pad_side=pad_side, pad_value=-1), expected


@pytest.mark.parametrize("pad_side", ["right", "left"])
def test_ragged_rows_are_padded_per_batch(pad_side: str) -> None:
    dataset, expected = ragged(pad_side)
    padded, labels = dataset.all_rows()
    assert padded.dtype == torch.int32 and torch.equal(padded, expected)
    assert torch.equal(labels, dataset.labels) and torch.equal(labels, (dataset.order % 3))
    picked, picked_labels = dataset.gather(torch.tensor([4, 0, 4]))
    assert torch.equal(picked, expected[[4, 0, 4]]) and torch.equal(picked_labels, labels[[4, 0, 4]])
    assert torch.equal(dataset[2][0], expected[2])


@pytest.mark.parametrize("shuffle", [False, True])
def test_ragged_batches_equal_the_dataloaders_for_the_same_seed(shuffle: bool) -> None:
    dataset, expected = ragged()
    loader = DataLoader(dataset, batch_size=4, shuffle=shuffle, collate_fn=keep_batch)  # via __getitems__
    padded_in_memory = DataLoader(
        BatchIndexedTensors(expected, dataset.labels), batch_size=4, shuffle=shuffle, collate_fn=keep_batch
    )
    runs = []
    for batches in (loader, padded_in_memory, TensorBatchLoader(dataset, batch_size=4, shuffle=shuffle)):
        torch.manual_seed(3)
        runs.append([torch.cat([batch[0].flatten(), batch[1]]) for _ in range(2) for batch in batches])
        runs[-1].append(torch.rand(1))  # what runs after (dropout, next epoch) must match too
    assert all(len(run) == 7 for run in runs)
    for run in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(runs[0], run, strict=True))


def test_ragged_rows_with_no_values_at_all_are_all_padding() -> None:
    empty = PaddedRaggedRows(
        torch.zeros(0, dtype=torch.int32), torch.zeros(3, dtype=torch.long), torch.tensor([0, 1]), torch.arange(2), 4
    )
    assert empty.all_rows()[0].tolist() == [[0] * 4] * 2


def test_ragged_dataset_is_copied_to_the_device_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    dataset, _ = ragged()
    dm = TitanicDataModule(batch_size=4)
    dm.train_set = dataset
    _attach(dm, "meta")
    monkeypatch.setattr(datamodules.base, "fits_on_device", lambda nbytes, device: True)
    on_device = dm.train_dataloader().dataset
    assert isinstance(on_device, PaddedRaggedRows) and on_device is not dataset
    tensors = (on_device.values, on_device.offsets, on_device.labels_by_stored_row, on_device.order)
    assert all(tensor.device.type == "meta" for tensor in tensors)
    padded, labels = next(iter(dm.train_dataloader()))  # gathered on the device: no copy per batch
    assert padded.device.type == labels.device.type == "meta" and padded.shape == (4, 5)
    other_split = PaddedRaggedRows(dataset.values, dataset.offsets, dataset.labels_by_stored_row, dataset.order[:3], 5)
    dm.val_set = other_split
    assert dm.val_dataloader().dataset.values is on_device.values  # one copy of the values both splits share
