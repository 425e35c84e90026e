"""File safety: write beside the target, make it durable, rename it into place; never leave half a file.

The one implementation of each piece, used by every writer of files the user keeps:

* :func:`sibling_path` names a hidden temporary beside a path, ``.<name>.<kind>-<hex>``; temporaries live
  beside their target so the final rename stays on one file system, where it is atomic.
* :func:`open_new_file` creates a file that must not exist yet, with mode 0o666 less the umask as a plain
  ``open`` would (``mkstemp``'s 0o600 would leave the renamed result unreadable to other users).
* :class:`SiblingFile` is such a file beside its target: :meth:`~SiblingFile.replace` flushes, fsyncs and
  renames it over the target (:func:`sync_and_close` then ``os.replace``), :meth:`~SiblingFile.discard`
  deletes it. :func:`atomic_file` and :func:`atomic_write_bytes` wrap it for a single write.
* :func:`staging_dir` builds a folder beside its target, renames it into place when the block succeeds
  (:func:`publish_dir`, optionally retiring what was there) and deletes it when the block fails.
* :func:`remove_stale_siblings` deletes the temporaries a killed process left beside a path.

Used by :mod:`datamodules.cache` (entries, manifests), :mod:`datamodules.archives` (downloads, extraction),
:mod:`datamodules.converters` (TSV files, ImageFolder trees), ``lightning_app.streaming`` (prediction
output and part files), ``lightning_app.predict``, ``config``, ``export`` and ``tune`` (single files) and
the benchmarks. Nothing here imports ``lightning_app``.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def sibling_path(path: Path, kind: str) -> Path:
    """A new hidden name beside ``path`` for a ``kind`` of temporary: ``.<name>.<kind>-<hex>``."""
    return path.parent / f".{path.name}.{kind}-{secrets.token_hex(6)}"


def open_new_file(path: Path) -> BinaryIO:
    """Create ``path`` (it must not exist) and open it for binary writing, with mode 0o666 less the umask."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb")


def sync_and_close(handle: BinaryIO) -> None:
    """Flush ``handle``, fsync its file so the bytes are on disk before any rename, and close it."""
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()


class SiblingFile:
    """A new temporary file beside ``target`` (its folder created if needed), open for writing as :attr:`handle`.

    End it with :meth:`replace` (it becomes ``target``) or :meth:`discard` (it is deleted).
    """

    def __init__(self, target: str | Path, kind: str = "tmp") -> None:
        self.target = Path(target)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.path = sibling_path(self.target, kind)
        self.handle = open_new_file(self.path)

    def replace(self) -> None:
        """Flush, fsync and close the file, then rename it over :attr:`target`."""
        sync_and_close(self.handle)
        os.replace(self.path, self.target)

    def discard(self) -> None:
        """Close and delete the temporary file; :attr:`target` is left as it was."""
        self.handle.close()
        self.path.unlink(missing_ok=True)


@contextmanager
def atomic_file(path: str | Path, kind: str = "tmp") -> Iterator[BinaryIO]:
    """Write a file beside ``path``; when the block succeeds it replaces ``path``, when it raises it is deleted."""
    temp = SiblingFile(path, kind)
    try:
        yield temp.handle
        temp.replace()
    except BaseException:
        temp.discard()
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it over ``path``."""
    with atomic_file(path) as handle:
        handle.write(data)


def remove_path(path: Path) -> None:
    """Delete a file, a symlink or a whole folder; nothing if ``path`` does not exist."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def publish_dir(staging: Path, path: Path, replace: bool = False) -> None:
    """Rename the finished folder ``staging`` to ``path``.

    With ``replace``, whatever is at ``path`` (an old folder or a stray file) is first renamed aside and
    deleted; processes still mapping its files keep reading them (unlinked files live on while mapped).
    """
    if replace and (path.exists() or path.is_symlink()):
        retired = sibling_path(path, "old")
        os.replace(path, retired)
        remove_path(retired)
    os.replace(staging, path)


@contextmanager
def staging_dir(path: str | Path, kind: str = "tmp", replace: bool = False) -> Iterator[Path]:
    """A new, empty folder beside ``path`` to fill in the block; renamed to ``path`` when the block succeeds
    (:func:`publish_dir`, ``replace`` as there), deleted with its contents when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = sibling_path(path, kind)
    staging.mkdir()
    try:
        yield staging
        publish_dir(staging, path, replace)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def remove_stale_siblings(path: Path, kinds: Iterable[str]) -> None:
    """Delete the ``kinds`` of temporaries (files or folders) a killed writer of ``path`` left beside it.

    Call it only while no other writer of ``path`` can run (under ``path``'s lock).
    """
    for kind in kinds:
        for leftover in path.parent.glob(f".{path.name}.{kind}-*"):
            remove_path(leftover)
