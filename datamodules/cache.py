"""On-disk caches of preprocessed tensors: keyed, atomic, verified and safe to share between processes.

A cache file holds a dict of tensors plus a JSON ``key`` describing what it was
built from (source file digests, preprocessing settings). It is written to a
temporary file and renamed, with a SHA-256 sidecar; a file that is missing,
truncated, corrupted or built from something else is rebuilt. Building happens
under a file lock, so two processes preparing the same cache do not race.
Loading uses ``torch.load(weights_only=True)``: no pickled code runs.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

CACHE_ENV_VAR = "LIGHTNING_APP_CACHE"


def default_cache_dir() -> Path:
    """``$LIGHTNING_APP_CACHE`` or ``~/.cache/lightning_app``."""
    configured = os.environ.get(CACHE_ENV_VAR)
    return Path(configured) if configured else Path.home() / ".cache" / "lightning_app"


def file_digest(path: str | Path, algorithm: str = "sha256", chunk_size: int = 1 << 20) -> str:
    """Hex digest of a file's bytes (SHA-256 unless ``algorithm`` names another ``hashlib`` algorithm)."""
    # usedforsecurity=False: MD5 only identifies a published archive, and FIPS builds refuse it otherwise.
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with Path(path).open("rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def key_digest(key: dict[str, Any]) -> str:
    """A short stable name for a JSON-serialisable cache key."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = create_sibling_file(path, "tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def create_sibling_file(path: Path, kind: str) -> tuple[int, Path]:
    """A new, empty, uniquely named file beside ``path``, open for writing: ``(fd, its path)``.

    Created with mode 0o666 less the umask, as a plain ``open`` would (``mkstemp``
    would make it 0o600, and the renamed result unreadable to other users).
    """
    temp = sibling_path(path, kind)
    return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), temp


def sibling_path(path: Path, kind: str) -> Path:
    """A new hidden name beside ``path`` for a ``kind`` of temporary: ``.<name>.<kind>-<hex>``."""
    return path.parent / f".{path.name}.{kind}-{secrets.token_hex(6)}"


def _serialise(tensors: dict[str, torch.Tensor], key: dict[str, Any]) -> bytes:

    buffer = io.BytesIO()
    torch.save({"key": json.dumps(key, sort_keys=True), "tensors": tensors}, buffer)
    return buffer.getvalue()


def save_tensor_cache(path: str | Path, tensors: dict[str, torch.Tensor], key: dict[str, Any]) -> None:
    """Atomically write ``tensors`` with their ``key`` and a ``.sha256`` sidecar."""
    path = Path(path)
    data = _serialise(tensors, key)
    atomic_write_bytes(path, data)
    atomic_write_bytes(path.with_name(path.name + ".sha256"), hashlib.sha256(data).hexdigest().encode())


def load_tensor_cache(path: str | Path, key: dict[str, Any]) -> dict[str, torch.Tensor] | None:
    """The cached tensors, or ``None`` if the file is missing, damaged or was built for another ``key``."""
    path = Path(path)
    sidecar = path.with_name(path.name + ".sha256")
    if not path.is_file() or not sidecar.is_file():
        return None
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sidecar.read_text().strip():
        return None

    try:
        payload = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception:  # a damaged file is rebuilt, whatever torch.load raised
        return None
    if not isinstance(payload, dict) or payload.get("key") != json.dumps(key, sort_keys=True):
        return None
    return payload["tensors"]


def cached_tensors(
    path: str | Path, key: dict[str, Any], build: Callable[[], dict[str, torch.Tensor]]
) -> tuple[dict[str, torch.Tensor], bool]:
    """Load ``path`` if it holds ``key``'s tensors, else ``build()`` them and save them.

    Returns ``(tensors, reused)``. Holds a lock file beside ``path`` while
    checking and building, so concurrent callers build once.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        tensors = load_tensor_cache(path, key)
        if tensors is not None:
            return tensors, True
        tensors = build()
        save_tensor_cache(path, tensors, key)
        return tensors, False
