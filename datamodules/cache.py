"""On-disk caches of preprocessed arrays: keyed, atomic, verified, memory-mapped and safe to share between processes.

A cache entry is a folder holding one raw file per array (``<name>.bin``, the array's
bytes in C order) and a small JSON ``manifest.json`` naming the ``key`` it was built
from (source file digests, preprocessing settings) and each array's dtype, shape and
SHA-256. Nothing in it is pickled, so loading runs no code.

* **Atomic**: a builder writes into a hidden temporary folder beside the entry and
  renames it into place when every array is complete; a crash leaves no half entry
  (:func:`datamodules.files.staging_dir`, the project's one implementation of that).
* **Streamed**: :class:`CacheWriter` appends an array chunk by chunk with file
  writes (hashing as it goes), so an array never has to be in memory whole.
* **Verified**: a load checks each file's size and streams it through SHA-256 in
  chunks; an entry that is missing, truncated, corrupted or built for another key
  is rebuilt.
* **Memory-mapped**: arrays are loaded with ``torch.from_file(shared=False)``, a
  private copy-on-write mapping: pages are read from disk when touched, shared with
  other processes mapping the same file, and a write never reaches the file.
* **Built once**: building happens under a file lock beside the entry, so
  concurrent processes (DDP ranks) build once and the others load the result.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock

from datamodules.files import atomic_write_bytes, remove_stale_siblings, staging_dir, sync_and_close

CACHE_ENV_VAR = "LIGHTNING_APP_CACHE"
MANIFEST_NAME = "manifest.json"
#: Bump when the folder layout or the manifest's fields change.
LAYOUT_VERSION = 1
#: The dtypes an array may have: manifest name -> (torch dtype, numpy dtype).
DTYPES: dict[str, tuple[torch.dtype, np.dtype]] = {
    name: (getattr(torch, name), np.dtype(name))
    for name in ("uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64", "bool")
}
_HASH_CHUNK_BYTES = 1 << 22


def default_cache_dir() -> Path:
    """``$LIGHTNING_APP_CACHE`` or ``~/.cache/lightning_app``."""
    configured = os.environ.get(CACHE_ENV_VAR)
    return Path(configured) if configured else Path.home() / ".cache" / "lightning_app"


def file_digest(path: str | Path, algorithm: str = "sha256", chunk_size: int = 1 << 20) -> str:
    """Hex digest of a file's bytes (SHA-256 unless ``algorithm`` names another ``hashlib`` algorithm), streamed."""
    # usedforsecurity=False: MD5 only identifies a published archive, and FIPS builds refuse it otherwise.
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with Path(path).open("rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def key_digest(key: dict[str, Any]) -> str:
    """A short stable name for a JSON-serialisable cache key."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _as_numpy(array: torch.Tensor | np.ndarray) -> np.ndarray:
    """A C-contiguous NumPy view (or copy) of a CPU tensor or array, for writing its bytes."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    return array if array.flags["C_CONTIGUOUS"] else array.copy(order="C")


class _ArrayFile:
    """One array being written: its open file, running SHA-256, dtype and shape so far."""

    def __init__(self, path: Path, dtype_name: str, row_shape: tuple[int, ...]) -> None:
        self.path = path
        self.dtype_name = dtype_name
        self.row_shape = row_shape
        self.rows = 0
        #: Written by :meth:`CacheWriter.put` from a 0-d value: recorded with shape ``[]``.
        self.scalar = False
        self.digest = hashlib.sha256()
        self.handle = path.open("wb")

    def write(self, array: np.ndarray) -> None:
        if array.size:
            data = memoryview(array.reshape(-1)).cast("B")
            self.handle.write(data)
            self.digest.update(data)
        self.rows += array.shape[0]

    def finish(self) -> dict[str, Any]:
        sync_and_close(self.handle)
        return {
            "file": self.path.name,
            "dtype": self.dtype_name,
            "shape": [] if self.scalar else [self.rows, *self.row_shape],
            "sha256": self.digest.hexdigest(),
        }


class CacheWriter:
    """Writes a cache entry's arrays into its temporary folder; handed to the ``build`` of :func:`cached_arrays`.

    :meth:`append` streams an array in chunks along its first dimension (each chunk
    goes straight to the file); :meth:`put` writes a whole array at once.
    :meth:`scratch_path` names a working file the builder may use, deleted before
    the entry is published.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._arrays: dict[str, _ArrayFile] = {}
        self._scratch: list[Path] = []

    def append(self, name: str, chunk: torch.Tensor | np.ndarray) -> None:
        """Append ``chunk``'s rows to array ``name`` (its first chunk sets the dtype and the shape of a row)."""
        array = _as_numpy(chunk)
        if array.ndim == 0:
            raise ValueError(f"cannot append a 0-d value to cached array {name!r}; give it a first dimension")
        dtype_name = array.dtype.name
        if dtype_name not in DTYPES:
            raise TypeError(f"cached array {name!r} has dtype {dtype_name}; supported: {sorted(DTYPES)}")
        if name not in self._arrays:
            if not name.isidentifier():
                raise ValueError(f"cached array name {name!r} must be a Python identifier (it names a file)")
            self._arrays[name] = _ArrayFile(self.folder / f"{name}.bin", dtype_name, tuple(array.shape[1:]))
        target = self._arrays[name]
        if (dtype_name, tuple(array.shape[1:])) != (target.dtype_name, target.row_shape):
            raise ValueError(
                f"chunk of cached array {name!r} is {dtype_name}{list(array.shape)}, "
                f"but its earlier chunks were {target.dtype_name} rows of shape {list(target.row_shape)}"
            )
        target.write(array)

    def put(self, name: str, array: torch.Tensor | np.ndarray) -> None:
        """Write array ``name`` whole (a 0-d value is stored as shape ``[]``)."""
        if name in self._arrays:
            raise ValueError(f"cached array {name!r} was already written")
        values = _as_numpy(array)
        self.append(name, values.reshape(1, *values.shape) if values.ndim == 0 else values)
        self._arrays[name].scalar = values.ndim == 0

    def scratch_path(self, name: str) -> Path:
        """A path inside the temporary folder for a working file; removed before the entry is renamed into place."""
        path = self.folder / f"scratch-{name}"
        self._scratch.append(path)
        return path

    def finish(self, key: dict[str, Any]) -> None:
        """Close every array, delete scratch files and write the manifest (the last file of a complete entry)."""
        arrays = {name: target.finish() for name, target in self._arrays.items()}
        for path in self._scratch:
            path.unlink(missing_ok=True)
        manifest = {"layout": LAYOUT_VERSION, "key": json.dumps(key, sort_keys=True), "arrays": arrays}
        atomic_write_bytes(self.folder / MANIFEST_NAME, json.dumps(manifest, indent=1).encode())

    def abort(self) -> None:
        for target in self._arrays.values():
            target.handle.close()


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_text())
    except (OSError, ValueError):  # missing, unreadable, not JSON, not UTF-8
        return None
    if not isinstance(manifest, dict) or manifest.get("layout") != LAYOUT_VERSION:
        return None
    return manifest if isinstance(manifest.get("arrays"), dict) else None


def _map_array(folder: Path, entry: Any) -> torch.Tensor | None:
    """One verified, memory-mapped array of a manifest, or ``None`` if its entry or file is not as recorded."""
    try:
        file_name, dtype_name, shape, sha256 = entry["file"], entry["dtype"], entry["shape"], entry["sha256"]
    except (KeyError, TypeError):
        return None
    if dtype_name not in DTYPES or not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
        return None
    path = folder / str(file_name)
    if path.parent != folder or not path.is_file():
        return None
    torch_dtype, numpy_dtype = DTYPES[dtype_name]
    numel = int(np.prod(shape, dtype=np.int64))
    if path.stat().st_size != numel * numpy_dtype.itemsize or file_digest(path, chunk_size=_HASH_CHUNK_BYTES) != sha256:
        return None
    if numel == 0:  # an empty file cannot be mapped
        return torch.empty(shape, dtype=torch_dtype)
    return torch.from_file(str(path), shared=False, size=numel, dtype=torch_dtype).view(shape)


def load_arrays(path: str | Path, key: dict[str, Any]) -> dict[str, torch.Tensor] | None:
    """The entry's arrays, verified and memory-mapped; ``None`` if missing, damaged or built for another ``key``."""
    folder = Path(path)
    if not folder.is_dir():
        return None
    manifest = _read_manifest(folder)
    if manifest is None or manifest.get("key") != json.dumps(key, sort_keys=True):
        return None
    arrays = {}
    for name, entry in manifest["arrays"].items():
        array = _map_array(folder, entry)
        if array is None:
            return None
        arrays[name] = array
    return arrays


#: The temporaries a builder of an entry leaves beside it when killed: its staging folder and a retired entry.
_TEMPORARY_KINDS = ("tmp", "old")


def write_arrays(path: str | Path, key: dict[str, Any], build: Callable[[CacheWriter], None]) -> None:
    """Run ``build(writer)`` into a temporary folder beside ``path``, then rename it to ``path`` (replacing it)."""
    with staging_dir(path, "tmp", replace=True) as staging:
        writer = CacheWriter(staging)
        try:
            build(writer)
            writer.finish(key)
        except BaseException:
            writer.abort()
            raise


def cached_arrays(
    path: str | Path, key: dict[str, Any], build: Callable[[CacheWriter], None]
) -> tuple[dict[str, torch.Tensor], bool]:
    """Load the entry at ``path`` if it holds ``key``'s arrays, else stream them with ``build(writer)`` and load them.

    Returns ``(arrays, reused)``, the arrays memory-mapped. Holds a lock file beside
    ``path`` while checking and building, so concurrent callers build once.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        arrays = load_arrays(path, key)
        if arrays is not None:
            return arrays, True
        remove_stale_siblings(path, _TEMPORARY_KINDS)  # under the lock: no other builder of path runs
        write_arrays(path, key, build)
        arrays = load_arrays(path, key)
        if arrays is None:
            raise OSError(f"the cache just written to {path} does not read back; is the disk full or failing?")
        return arrays, False


def cached_tensors(
    path: str | Path, key: dict[str, Any], build: Callable[[], dict[str, torch.Tensor]]
) -> tuple[dict[str, torch.Tensor], bool]:
    """:func:`cached_arrays` for a builder that returns its tensors whole: ``(tensors, reused)``."""

    def put_all(writer: CacheWriter) -> None:
        for name, tensor in build().items():
            writer.put(name, tensor)

    return cached_arrays(path, key, put_all)
