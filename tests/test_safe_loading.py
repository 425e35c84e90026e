"""A crafted pickle placed where the project loads data runs no code.

CIFAR-10 batches (the restricted unpickler) are covered in test_download.py;
this covers the tensor cache, whose files live in a shared, writable folder.
"""

from __future__ import annotations

import builtins
import hashlib
import io
import json
from pathlib import Path

import torch

from datamodules.cache import LAYOUT_VERSION, MANIFEST_NAME, cached_tensors, load_arrays


class _CreatesFile:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return builtins.open, (str(self.marker), "w")


def _plant_malicious_cache(path: Path, marker: Path, key: dict) -> None:
    """A cache file with a valid SHA-256 sidecar whose payload opens ``marker`` when unpickled."""
    buffer = io.BytesIO()
    torch.save({"key": json.dumps(key, sort_keys=True), "tensors": {"x": _CreatesFile(marker)}}, buffer)
    data = buffer.getvalue()
    path.write_bytes(data)
    path.with_name(path.name + ".sha256").write_text(hashlib.sha256(data).hexdigest())


def test_malicious_cache_file_runs_no_code_and_is_rebuilt(tmp_path):
    marker, cache, key = tmp_path / "pwned", tmp_path / "cache.pt", {"source": "abc"}
    _plant_malicious_cache(cache, marker, key)

    assert load_arrays(cache, key) is None
    tensors, reused = cached_tensors(cache, key, lambda: {"x": torch.arange(3)})

    assert not marker.exists()
    assert not reused and torch.equal(tensors["x"], torch.arange(3))
    assert torch.equal(load_arrays(cache, key)["x"], torch.arange(3))


def test_a_pickle_inside_a_valid_cache_entry_is_loaded_as_bytes_and_runs_no_code(tmp_path):
    # An entry whose manifest (key, dtype, shape, SHA-256) is right but whose array file is a pickle: the loader
    # maps raw bytes and never unpickles, so the file is data, not code.
    marker, entry, key = tmp_path / "pwned", tmp_path / "cache.pt", {"source": "abc"}
    _plant_malicious_cache(tmp_path / "pickle.pt", marker, key)
    data = (tmp_path / "pickle.pt").read_bytes()
    entry.mkdir()
    (entry / "x.bin").write_bytes(data)
    array = {"file": "x.bin", "dtype": "uint8", "shape": [len(data)], "sha256": hashlib.sha256(data).hexdigest()}
    manifest = {"layout": LAYOUT_VERSION, "key": json.dumps(key, sort_keys=True), "arrays": {"x": array}}
    (entry / MANIFEST_NAME).write_text(json.dumps(manifest))

    loaded = load_arrays(entry, key)
    assert not marker.exists()
    assert loaded["x"].dtype == torch.uint8 and bytes(loaded["x"].numpy()) == data


def test_the_planted_cache_would_run_code_if_fully_unpickled(tmp_path):
    # Shows the test above can fail: the same bytes do run code without weights_only.
    marker, cache = tmp_path / "pwned", tmp_path / "cache.pt"
    _plant_malicious_cache(cache, marker, {"source": "abc"})
    torch.load(cache, weights_only=False)["tensors"]["x"].close()
    assert marker.exists()
