"""The in-process batch loader of the DataModules and the copy of small datasets onto the training device."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DataLoader

import datamodules.base
from datamodules import TitanicDataModule
from datamodules.base import BatchIndexedTensors, TensorBatchLoader, keep_batch


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
