"""Archives: download a file with a pinned checksum, extract a tar archive safely.

* :func:`download` streams a URL to a temporary file beside the destination, hashing it
  as it arrives, and renames it into place only when the digest matches;
* :func:`safe_extract` extracts with tarfile's ``"data"`` filter into a staging folder
  renamed on success; :func:`check_members` first runs that filter over every member
  (so nothing is written when one is refused) together with the few checks the
  filter does not make.

Used by :mod:`datamodules.download` (full-size IMDB and CIFAR-10), by
:mod:`datamodules.cifar2` (the bundled image archive) and, for :class:`DownloadError`,
by ``lightning_app.cli``. Temporary files and folders come from :mod:`datamodules.files`.
"""

from __future__ import annotations

import hashlib
import http.client
import posixpath
import re
import tarfile
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from datamodules.cache import file_digest
from datamodules.files import atomic_file, staging_dir

DIGEST_ALGORITHMS = ("sha256", "md5")

_CHUNK_SIZE = 1 << 20
_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError)
#: What tarfile's extraction filters raise; absent (nothing to catch) on Pythons without them.
_TAR_FILTER_ERRORS = getattr(tarfile, "FilterError", ())


class DownloadError(Exception):
    """Fetching or unpacking a dataset failed; the message names the URL or file and what to do."""


class ChecksumMismatchError(DownloadError):
    """The downloaded bytes are not the expected ones (truncated, tampered or a different file)."""

    def __init__(self, url: str, algorithm: str, expected: str, actual: str) -> None:
        super().__init__(
            f"checksum mismatch for {url}: expected {algorithm} {expected}, got {actual}; "
            "the download was deleted (retry, or pass the mirror's own digest if you trust it)"
        )
        self.url, self.algorithm, self.expected, self.actual = url, algorithm, expected, actual


class UnsafeArchiveError(DownloadError):
    """A tar member would be written outside the target folder, or is a link or device that could be."""


# ---------------------------------------------------------------------------------------------- download


def _new_hash(algorithm: str) -> Any:
    if algorithm not in DIGEST_ALGORITHMS:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}; expected one of {DIGEST_ALGORITHMS}")
    # usedforsecurity=False: MD5 only identifies the published CIFAR archive, and FIPS builds refuse it otherwise.
    return hashlib.new(algorithm, usedforsecurity=False)


def file_hexdigest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes with ``algorithm`` (``"sha256"`` or ``"md5"``)."""
    _new_hash(algorithm)  # rejects an algorithm other than those
    return file_digest(path, algorithm, _CHUNK_SIZE)


def _progress_bar(total: int | None, description: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm  # installed with pytorch-lightning

    return tqdm(total=total, desc=description, unit="B", unit_scale=True, unit_divisor=1024, disable=not enabled)


def _network_reason(err: Exception) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"the server answered HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    return f"{type(err).__name__}: {err}"


def download(
    url: str,
    destination: str | Path,
    expected_digest: str,
    algorithm: str = "sha256",
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``destination`` unless it is already there with ``expected_digest``.

    The bytes go to a temporary file beside ``destination``, are hashed while
    they arrive, and the file is fsynced and renamed to ``destination`` only when
    the digest matches; on any failure the temporary file is deleted and
    ``destination`` is left as it was.

    Raises:
        ChecksumMismatchError: the downloaded bytes have another digest.
        DownloadError: the server could not be reached or answered with an error.
    """
    destination = Path(destination)
    expected = expected_digest.strip().lower()
    _new_hash(algorithm)  # reject an unknown algorithm before touching the network
    if destination.is_file() and file_hexdigest(destination, algorithm) == expected:
        return destination

    with atomic_file(destination, "part") as out:
        digest = _new_hash(algorithm)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                with _progress_bar(total, destination.name, progress) as bar:
                    while chunk := response.read(_CHUNK_SIZE):
                        out.write(chunk)
                        digest.update(chunk)
                        bar.update(len(chunk))
        except _NETWORK_ERRORS as err:
            raise DownloadError(f"could not download {url}: {_network_reason(err)}") from err
        actual = digest.hexdigest()
        if actual != expected:
            raise ChecksumMismatchError(url, algorithm, expected, actual)
    return destination


# ---------------------------------------------------------------------------------------------- extraction


def _walk_inside(base_parts: list[str], relative: str, symlinks: set[str]) -> None:
    """Walk ``relative`` from ``base_parts`` lexically; raise ``ValueError`` saying why if it leaves the target
    folder or passes through one of the archive's symlinks (lexical resolution is only faithful without those)."""
    parts = list(base_parts)
    components = [component for component in relative.split("/") if component not in ("", ".")]
    for index, component in enumerate(components):
        if component == "..":
            if not parts:
                raise ValueError("it leads outside the target folder")
            parts.pop()
        else:
            parts.append(component)
        current = "/".join(parts)
        if current in symlinks and index < len(components) - 1:
            raise ValueError(f"it passes through the archive's symlink '{current}'")


def _link_kind(member: tarfile.TarInfo) -> str:
    return "symlink" if member.issym() else "hard link"


def _filter_reason(err: Exception) -> str:
    """Why tarfile's data filter refused a member, worded as :func:`check_members` words its own refusals."""
    member = err.tarinfo  # type: ignore[attr-defined]
    if isinstance(err, tarfile.SpecialFileError):
        return "device files and FIFOs are not data"
    if isinstance(err, tarfile.AbsolutePathError):
        return "absolute path"
    if isinstance(err, tarfile.AbsoluteLinkError):
        return f"{_link_kind(member)} to absolute or empty path '{member.linkname}'"
    if isinstance(err, tarfile.LinkOutsideDestinationError):
        return f"{_link_kind(member)} to '{member.linkname}': it leads outside the target folder"
    if isinstance(err, tarfile.OutsideDestinationError):
        return "it would be written outside the target folder"
    return str(err)


def _refusal(archive: str | Path, name: str, why: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"{archive}: refusing to extract member '{name}': {why}")


#: tarfile's ``"data"`` filter (Python 3.10.12+, 3.11.4+, 3.12+). Older Pythons (Debian 12 ships 3.11.2) get the two
#: refusals of it that :func:`check_members` does not make itself, in :func:`_filter_member`.
HAS_DATA_FILTER = hasattr(tarfile, "data_filter")


def _filter_member(member: tarfile.TarInfo, destination: str | Path, archive: str | Path) -> None:
    """Refuse ``member`` where tarfile's data filter would (device files and FIFOs, absolute link targets)."""
    if HAS_DATA_FILTER:
        try:
            tarfile.data_filter(member, str(destination))
        except _TAR_FILTER_ERRORS as err:
            raise _refusal(archive, member.name, _filter_reason(err)) from None
    elif member.isdev():
        raise _refusal(archive, member.name, "device files and FIFOs are not data")
    elif (member.issym() or member.islnk()) and member.linkname.startswith("/"):
        raise _refusal(archive, member.name, f"{_link_kind(member)} to absolute or empty path '{member.linkname}'")


def check_members(
    members: Iterable[tarfile.TarInfo], destination: str | Path, archive: str | Path = "archive"
) -> list[tarfile.TarInfo]:
    """Return ``members`` if every one is safe to extract into ``destination``, else raise
    :class:`UnsafeArchiveError` naming the first refused one; nothing is written.

    tarfile's ``"data"`` filter, run here over every member (and again by
    :func:`safe_extract` during extraction), refuses device files and FIFOs and
    absolute link targets. The checks made here are those it does not make, or does
    not make reliably on the Pythons this project supports:

    * absolute names: the filter strips the ``/`` and extracts them inside;
    * any ``..`` component: the filter allows those that stay inside, and the
      lexical checks below are only sound on names without them;
    * members beneath one of the archive's symlinks, and link targets that leave the
      folder or pass through one of its symlinks, resolved lexically: the filter
      resolves a symlink's target from its unnormalised name (``./a/`` with target
      ``../b`` passes it on 3.11.7 and lands outside) and follows symlinks already
      extracted with ``realpath``, which CPython's 2025 fixes (CVE-2025-4517 and
      others) had to harden;
    * a member ``.`` that is not a folder, links sharing their name with another
      member or with an empty target, and hard links to anything but an earlier
      regular file: tarfile's fallbacks for links it cannot create copy other
      members, and can recurse.
    """
    members = list(members)
    symlinks = {posixpath.normpath(m.name.lstrip("/")) for m in members if m.issym()}
    name_counts = Counter(posixpath.normpath(m.name.lstrip("/")) for m in members)
    earlier_files: set[str] = set()
    for member in members:
        name = member.name
        if name.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", name) or name.startswith("\\"):
            raise _refusal(archive, name, "absolute path")
        if ".." in name.replace("\\", "/").split("/"):
            raise _refusal(archive, name, "'..' in its path")
        normalised = posixpath.normpath(name)
        if normalised == "." and not member.isdir():
            raise _refusal(archive, name, "it would replace the target folder itself")
        parents = normalised.split("/")[:-1]
        for depth in range(1, len(parents) + 1):
            if "/".join(parents[:depth]) in symlinks:
                why = f"it would be written through the archive's symlink '{'/'.join(parents[:depth])}'"
                raise _refusal(archive, name, why)
        if member.issym() or member.islnk():
            kind = _link_kind(member)
            if name_counts[normalised] > 1:
                # tarfile falls back to copying the link's target when it cannot create the link, which can recurse.
                raise _refusal(archive, name, f"{kind} shares its name with another member")
            if not member.linkname:
                raise _refusal(archive, name, f"{kind} to absolute or empty path ''")
            if not member.linkname.startswith("/"):  # an absolute target is the data filter's AbsoluteLinkError
                try:
                    _walk_inside(parents if member.issym() else [], member.linkname, symlinks)
                except ValueError as err:
                    raise _refusal(archive, name, f"{kind} to '{member.linkname}': {err}") from None
        _filter_member(member, destination, archive)
        if member.islnk() and posixpath.normpath(member.linkname) not in earlier_files:
            why = f"hard link to '{member.linkname}', which is not an earlier file of the archive"
            raise _refusal(archive, name, why)
        if member.isreg():
            earlier_files.add(normalised)
    return members


def safe_extract(archive: str | Path, target: str | Path) -> Path:
    """Extract the tar archive ``archive`` into the new folder ``target`` and return ``target``.

    Every member is checked first (:func:`check_members`), then extracted with
    tarfile's ``"data"`` filter where this Python has it, which checks each again against what is on disk.
    Members land in a staging folder beside ``target`` that is renamed to
    ``target`` only once all are written, so a failure leaves nothing at ``target``.

    Raises:
        UnsafeArchiveError: a member is unsafe (names it).
        DownloadError: ``archive`` is not a readable tar file, or writing a member failed.
        FileExistsError: ``target`` already exists.
    """
    archive, target = Path(archive), Path(target)
    if target.exists():
        raise FileExistsError(f"{target} already exists; remove it to extract {archive.name} again")
    try:
        with staging_dir(target, "partial") as staging, tarfile.open(archive, "r:*") as tar:
            members = check_members(tar.getmembers(), staging, archive)
            tar.extractall(staging, members=members, **({"filter": "data"} if HAS_DATA_FILTER else {}))
    except _TAR_FILTER_ERRORS as err:
        raise _refusal(archive, err.tarinfo.name, _filter_reason(err)) from err
    except (tarfile.TarError, EOFError) as err:
        reason = " ".join(str(err).split())
        raise DownloadError(f"{archive}: not a readable tar archive ({reason}); delete it and download again") from err
    except OSError as err:  # e.g. a member whose parent is a file, or a full disk
        raise DownloadError(f"{archive}: extraction failed, nothing was kept ({err})") from err
    return target
