"""The preprocessed-tensor cache: reuse, invalidation, damage detection and concurrent builders."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import torch

from datamodules.cache import cached_tensors, load_tensor_cache, save_tensor_cache


def test_cache_is_reused_for_the_same_key_and_rebuilt_for_another(tmp_path):
    path = tmp_path / "tokens.pt"
    built = []

    def build(value: int):
        built.append(value)
        return {"ids": torch.full((3,), value)}

    first, reused = cached_tensors(path, {"vocab": 10}, lambda: build(1))
    assert not reused and first["ids"].tolist() == [1, 1, 1]
    again, reused = cached_tensors(path, {"vocab": 10}, lambda: build(2))
    assert reused and again["ids"].tolist() == [1, 1, 1]
    other, reused = cached_tensors(path, {"vocab": 20}, lambda: build(3))
    assert not reused and other["ids"].tolist() == [3, 3, 3]
    assert built == [1, 3]


def test_truncated_or_corrupted_cache_is_detected(tmp_path):
    path = tmp_path / "images.pt"
    save_tensor_cache(path, {"x": torch.arange(1000)}, {"k": 1})
    assert load_tensor_cache(path, {"k": 1}) is not None
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert load_tensor_cache(path, {"k": 1}) is None
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0xFF
    path.write_bytes(bytes(flipped))
    assert load_tensor_cache(path, {"k": 1}) is None
    rebuilt, reused = cached_tensors(path, {"k": 1}, lambda: {"x": torch.arange(5)})
    assert not reused and rebuilt["x"].tolist() == load_tensor_cache(path, {"k": 1})["x"].tolist() == [0, 1, 2, 3, 4]


def test_no_temporary_files_are_left_behind(tmp_path):
    save_tensor_cache(tmp_path / "a.pt", {"x": torch.ones(2)}, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "a.pt.sha256"]


def _build_in_process(path: str, log: str) -> None:
    def build():
        with open(log, "a") as handle:
            handle.write("built\n")
        return {"x": torch.arange(200_000)}

    tensors, _ = cached_tensors(Path(path), {"k": "shared"}, build)
    assert tensors["x"].sum().item() == sum(range(200_000))


def test_two_processes_preparing_the_same_cache_build_it_once(tmp_path):
    path, log = tmp_path / "shared.pt", tmp_path / "builds.log"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_build_in_process, args=(str(path), str(log))) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0]
    assert log.read_text().count("built") == 1
    assert load_tensor_cache(path, {"k": "shared"})["x"].shape == (200_000,)
