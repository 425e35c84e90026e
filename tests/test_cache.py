"""The preprocessed-array cache: reuse, invalidation, damage detection, streamed building, memory mapping and
concurrent builders."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest
import torch

from datamodules.cache import (
    MANIFEST_NAME,
    CacheWriter,
    cached_arrays,
    cached_tensors,
    load_arrays,
    write_arrays,
)


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


def _damage(entry: Path, damage: str) -> None:
    array_file, manifest = entry / "x.bin", entry / MANIFEST_NAME
    data = array_file.read_bytes()
    if damage == "truncated array":
        array_file.write_bytes(data[: len(data) // 2])
    elif damage == "flipped byte":
        flipped = bytearray(data)
        flipped[len(flipped) // 2] ^= 0xFF
        array_file.write_bytes(bytes(flipped))
    elif damage == "missing array":
        array_file.unlink()
    elif damage == "truncated manifest":
        manifest.write_bytes(manifest.read_bytes()[:40])
    elif damage == "missing manifest":
        manifest.unlink()
    elif damage == "shape edited":  # the bytes still hash right, but do not match the recorded shape
        edited = json.loads(manifest.read_text())
        edited["arrays"]["x"]["shape"] = [2000]
        manifest.write_text(json.dumps(edited))


@pytest.mark.parametrize(
    "damage",
    ["truncated array", "flipped byte", "missing array", "truncated manifest", "missing manifest", "shape edited"],
)
def test_truncated_or_corrupted_cache_is_detected(tmp_path, damage):
    path = tmp_path / "images.pt"
    write_arrays(path, {"k": 1}, lambda writer: writer.put("x", torch.arange(1000)))
    assert torch.equal(load_arrays(path, {"k": 1})["x"], torch.arange(1000))
    _damage(path, damage)
    assert load_arrays(path, {"k": 1}) is None
    rebuilt, reused = cached_tensors(path, {"k": 1}, lambda: {"x": torch.arange(5)})
    assert not reused and rebuilt["x"].tolist() == load_arrays(path, {"k": 1})["x"].tolist() == [0, 1, 2, 3, 4]


def test_a_stray_file_where_the_entry_goes_is_replaced(tmp_path):
    path = tmp_path / "tokens.pt"
    path.write_bytes(b"an old single-file cache")
    tensors, reused = cached_tensors(path, {"k": 1}, lambda: {"x": torch.arange(3)})
    assert not reused and path.is_dir() and tensors["x"].tolist() == [0, 1, 2]


def test_no_temporary_files_are_left_behind(tmp_path):
    write_arrays(tmp_path / "a.pt", {}, lambda writer: writer.put("x", torch.ones(2)))
    # replacing an entry leaves nothing either
    write_arrays(tmp_path / "a.pt", {}, lambda writer: writer.put("x", torch.ones(3)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt"]
    assert sorted(p.name for p in (tmp_path / "a.pt").iterdir()) == [MANIFEST_NAME, "x.bin"]


def test_a_failed_build_leaves_nothing_and_keeps_no_lock(tmp_path):
    def build(writer: CacheWriter) -> None:
        writer.append("x", torch.arange(4))
        raise RuntimeError("bad data")

    with pytest.raises(RuntimeError, match="bad data"):
        cached_arrays(tmp_path / "e", {}, build)
    assert [p.name for p in tmp_path.iterdir()] in ([], ["e.lock"])
    assert cached_arrays(tmp_path / "e", {}, lambda writer: writer.put("x", torch.arange(2)))[0]["x"].tolist() == [0, 1]


def test_a_killed_builders_temporary_folder_is_removed_by_the_next_build(tmp_path):
    leftover = tmp_path / ".e.tmp-0123456789ab"  # what a builder killed by a signal leaves
    leftover.mkdir()
    (leftover / "x.bin").write_bytes(b"partial")
    cached_arrays(tmp_path / "e", {}, lambda writer: writer.put("x", torch.arange(2)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e", "e.lock"]


def test_arrays_are_appended_chunk_by_chunk_and_loaded_memory_mapped(tmp_path):
    path = tmp_path / "streamed"

    def build(writer: CacheWriter) -> None:
        for start in range(0, 100, 30):
            writer.append(
                "rows", torch.arange(start, min(start + 30, 100), dtype=torch.int32).view(-1, 1).expand(-1, 3)
            )
        writer.put("scalar", torch.tensor(7))
        writer.put("empty", torch.zeros(0, 2, dtype=torch.uint8))
        scratch = writer.scratch_path("provisional")
        scratch.write_bytes(b"working data")
        with pytest.raises(ValueError, match="earlier chunks were int32 rows of shape \\[3\\]"):
            writer.append("rows", torch.zeros(1, 2, dtype=torch.int32))

    arrays, reused = cached_arrays(path, {"k": 1}, build)
    assert not reused and sorted(p.name for p in path.iterdir()) == [
        "empty.bin",
        MANIFEST_NAME,
        "rows.bin",
        "scalar.bin",
    ]
    expected = torch.arange(100, dtype=torch.int32).view(-1, 1).expand(-1, 3)
    assert torch.equal(arrays["rows"], expected) and arrays["scalar"].shape == () and arrays["scalar"].item() == 7
    assert arrays["empty"].shape == (0, 2) and arrays["empty"].dtype == torch.uint8
    mapped = {line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines() if str(path) in line}
    assert str(path / "rows.bin") in mapped  # a mapping of the file, not a copy read into memory
    arrays["rows"][0, 0] = -1  # copy-on-write: the file keeps its bytes
    again, reused = cached_arrays(path, {"k": 1}, build)
    assert reused and torch.equal(again["rows"], expected)


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
    assert load_arrays(path, {"k": "shared"})["x"].shape == (200_000,)
