"""Optional full-size IMDB and CIFAR-10 data: download, verify, extract safely, convert.

Nothing else in the project needs this module or the network; the bundled data
in ``datamodules/data`` trains offline. On a machine with internet::

    python -m datamodules.download imdb --data-dir data/full
    python -m lightning_app.fit --task imdb --data-dir data/full/imdb

The pieces, each usable on its own:

* :func:`download` streams a URL to a temporary file, checks its digest and only
  then renames it into place;
* :func:`safe_extract` checks every tar member (no absolute paths, no ``..``,
  no links leading out of the target, no device files) before extracting with
  tarfile's ``"data"`` filter into a staging folder renamed on success;
* :func:`aclimdb_to_tsv` and :func:`cifar10_to_imagefolder` write the layouts the
  IMDB and cifar2 DataModules read; CIFAR-10 batches are unpickled by
  :class:`CifarBatchUnpickler`, which builds numpy arrays and nothing else;
* :func:`prepare_full_dataset` chains them and returns the folder to pass as ``--data-dir``.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import pickle
import posixpath
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from datamodules.cache import file_digest
from datamodules.errors import DataError
from datamodules.files import atomic_file, atomic_write_bytes, sibling_path

IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
#: ai.stanford.edu publishes no checksum. This is the SHA-256 of the 84,125,825-byte archive that
#: independent dataset loaders pin (e.g. JuliaML MLDatasets.jl's DataDeps registration).
IMDB_SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
#: The MD5 published on https://www.cs.toronto.edu/~kriz/cifar.html (torchvision pins the same value).
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"

CIFAR2_CLASSES = ("airplane", "automobile")
IMDB_COLUMNS = ("label", "rating", "id", "text")
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


# ---------------------------------------------------------------------------------------------- files
# Temporary files and folders are created with the usual permissions (0o666/0o777 less the umask), unlike
# tempfile's private 0o600/0o700, because they are renamed into place as the user's data.


def _create_staging_dir(path: Path) -> Path:
    """A new, empty folder beside ``path``, to be renamed to ``path`` once complete."""
    staging = sibling_path(path, "partial")
    staging.mkdir()
    return staging


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


def _resolve_inside(base_parts: list[str], relative: str, symlinks: set[str]) -> str:
    """Join ``relative`` onto ``base_parts`` lexically; return the path, or raise ``ValueError`` saying why not.

    Lexical resolution is only faithful when no component walked through is a
    symlink, so passing through one of the archive's own symlinks is refused too.
    """
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
    return "/".join(parts)


def check_members(members: Iterable[tarfile.TarInfo], archive: str | Path = "archive") -> list[tarfile.TarInfo]:
    """Return ``members`` if every one is safe to extract, else raise :class:`UnsafeArchiveError` naming it.

    Refused: absolute names, ``..`` components, members placed beneath one of the
    archive's symlinks, symlinks or hard links whose target is absolute or leads
    outside the target folder, hard links to anything but an earlier regular
    file of the archive, links sharing their name with another member, anything
    but a folder named ``.``, and device files or FIFOs.
    """
    members = list(members)
    symlinks = {posixpath.normpath(m.name.lstrip("/")) for m in members if m.issym()}
    name_counts = Counter(posixpath.normpath(m.name.lstrip("/")) for m in members)
    earlier_files: set[str] = set()
    for member in members:
        name = member.name

        def refuse(why: str, name: str = name) -> UnsafeArchiveError:
            return UnsafeArchiveError(f"{archive}: refusing to extract member '{name}': {why}")

        if name.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", name) or name.startswith("\\"):
            raise refuse("absolute path")
        if ".." in name.replace("\\", "/").split("/"):
            raise refuse("'..' in its path")
        normalised = posixpath.normpath(name)
        if normalised == "." and not member.isdir():
            raise refuse("it would replace the target folder itself")
        parents = normalised.split("/")[:-1]
        for depth in range(1, len(parents) + 1):
            if "/".join(parents[:depth]) in symlinks:
                raise refuse(f"it would be written through the archive's symlink '{'/'.join(parents[:depth])}'")
        if member.ischr() or member.isblk() or member.isfifo():
            raise refuse("device files and FIFOs are not data")
        if member.issym() or member.islnk():
            kind = "symlink" if member.issym() else "hard link"
            if name_counts[normalised] > 1:
                # tarfile falls back to copying the link's target when it cannot create the link, which can recurse.
                raise refuse(f"{kind} shares its name with another member")
            if member.linkname.startswith("/") or not member.linkname:
                raise refuse(f"{kind} to absolute or empty path '{member.linkname}'")
            base = parents if member.issym() else []  # hard link targets are relative to the archive root
            try:
                resolved = _resolve_inside(base, member.linkname, symlinks)
            except ValueError as err:
                raise refuse(f"{kind} to '{member.linkname}': {err}") from None
            if member.islnk() and resolved not in earlier_files:
                raise refuse(f"hard link to '{member.linkname}', which is not an earlier file of the archive")
        if member.isreg():
            earlier_files.add(normalised)
    return members


def safe_extract(archive: str | Path, target: str | Path) -> Path:
    """Extract the tar archive ``archive`` into the new folder ``target`` and return ``target``.

    Every member is checked first (:func:`check_members`); tarfile's ``"data"``
    filter guards the extraction itself where Python has it (3.12+, 3.11.4+,
    3.10.12+). Members land in a staging folder beside ``target`` that is
    renamed to ``target`` only once all are written, so a failure leaves nothing
    at ``target``.

    Raises:
        UnsafeArchiveError: a member is unsafe (names it).
        DownloadError: ``archive`` is not a readable tar file, or writing a member failed.
        FileExistsError: ``target`` already exists.
    """
    archive, target = Path(archive), Path(target)
    if target.exists():
        raise FileExistsError(f"{target} already exists; remove it to extract {archive.name} again")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _create_staging_dir(target)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = check_members(tar.getmembers(), archive)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(staging, members=members, filter="data")
            else:  # older Pythons: check_members above is the only guard
                tar.extractall(staging, members=members)
        os.replace(staging, target)
    except _TAR_FILTER_ERRORS as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise UnsafeArchiveError(f"{archive}: refusing to extract: {err}") from err
    except (tarfile.TarError, EOFError) as err:
        shutil.rmtree(staging, ignore_errors=True)
        reason = " ".join(str(err).split())
        raise DownloadError(f"{archive}: not a readable tar archive ({reason}); delete it and download again") from err
    except OSError as err:  # e.g. a member whose parent is a file, or a full disk
        shutil.rmtree(staging, ignore_errors=True)
        raise DownloadError(f"{archive}: extraction failed, nothing was kept ({err})") from err
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


# ---------------------------------------------------------------------------------------------- aclImdb -> TSV

_REVIEW_FILE = re.compile(r"^(\d+)_(\d+)\.txt$")
_IMDB_LABELS = (("neg", 0), ("pos", 1))


def _find_folder(root: Path, name: str) -> Path:
    """``root`` itself if it is called ``name``, else ``root/name``; a :class:`DataError` if neither exists."""
    for candidate in (root, root / name):
        if candidate.name == name and candidate.is_dir():
            return candidate
    raise DataError(root, f"no '{name}' folder here (is this the extracted archive?)")


def clean_review_text(text: str) -> str:
    """Make a review one TSV field: tabs, newlines and carriage returns become spaces; nothing else changes."""
    return text.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def read_aclimdb_split(split_dir: Path) -> list[tuple[int, int, int, str]]:
    """``(label, rating, id, text)`` for every review in ``split_dir/{neg,pos}``, each folder in id order."""
    rows = []
    for folder, label in _IMDB_LABELS:
        reviews = split_dir / folder
        if not reviews.is_dir():
            raise DataError(reviews, "folder not found (expected aclImdb/<split>/{neg,pos})")
        parsed = []
        for path in reviews.iterdir():
            match = _REVIEW_FILE.match(path.name)
            if match is None:
                raise DataError(path, "review file name is not '<id>_<rating>.txt'")
            review_id, rating = int(match.group(1)), int(match.group(2))
            if not 1 <= rating <= 10:
                raise DataError(path, f"rating {rating} in the file name is not between 1 and 10")
            try:
                text = path.read_bytes().decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(path, f"not UTF-8 text ({err.reason} at byte {err.start})") from err
            parsed.append((label, rating, review_id, clean_review_text(text)))
        rows.extend(sorted(parsed, key=lambda row: row[2]))
    return rows


def format_imdb_tsv(rows: Iterable[tuple[int, int, int, str]]) -> bytes:
    """The TSV bytes the IMDB DataModule reads: header ``label rating id text``, rows ending in ``\\n``."""
    lines = ["\t".join(IMDB_COLUMNS)]
    lines.extend(f"{label}\t{rating}\t{review_id}\t{text}" for label, rating, review_id, text in rows)
    return ("\n".join(lines) + "\n").encode("utf-8")


def aclimdb_to_tsv(extracted_root: str | Path, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``out_dir/train.tsv`` and ``out_dir/test.tsv`` from an extracted aclImdb tree.

    ``extracted_root`` is the ``aclImdb`` folder or the folder holding it. The
    label comes from the ``pos``/``neg`` folder (1/0), rating and id from the file
    name ``<id>_<rating>.txt``; ``unsup`` and the other files are ignored. Each
    file is written atomically.
    """
    root = _find_folder(Path(extracted_root), "aclImdb")
    out_dir = Path(out_dir)
    written = []
    for split in ("train", "test"):
        path = out_dir / f"{split}.tsv"
        atomic_write_bytes(path, format_imdb_tsv(read_aclimdb_split(root / split)))
        written.append(path)
    return written[0], written[1]


# ---------------------------------------------------------------------------------------------- CIFAR-10 -> folders


class ForbiddenPickleGlobalError(pickle.UnpicklingError):
    """A pickle asked for a class or function a CIFAR-10 batch never contains."""


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as Python 3 pickles ``bytes`` under protocol 2, and nothing more."""
    if encoding.lower().replace("-", "") not in ("latin1", "iso88591") or not isinstance(text, str):
        raise ForbiddenPickleGlobalError(f"_codecs.encode is only allowed for latin-1 bytes, not {encoding!r}")
    return text.encode("latin1")


def _numpy_globals() -> dict[tuple[str, str], Any]:
    import numpy

    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): numpy.ndarray,
        ("numpy", "dtype"): numpy.dtype,
    }


class CifarBatchUnpickler(pickle.Unpickler):
    """Unpickles CIFAR-10 python batches: dicts, lists, bytes, numbers and numpy arrays only.

    ``find_class`` is the only way a pickle reaches code, so every other global
    (``os.system``, ``builtins.open``, ``pathlib.Path``, ...) is refused before
    anything runs.
    """

    def __init__(self, file: Any) -> None:
        # The batches were pickled by Python 2; "bytes" keeps their str keys as bytes (b"data"), as the
        # dataset's own page loads them.
        super().__init__(file, encoding="bytes")
        self._allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        if (module, name) in self._allowed:
            return self._allowed[(module, name)]
        raise ForbiddenPickleGlobalError(f"refusing to load {module}.{name}: a CIFAR-10 batch never contains it")


def _text_key(key: Any) -> Any:
    return key.decode("latin1") if isinstance(key, bytes) else key


def load_cifar_pickle(path: str | Path) -> dict[str, Any]:
    """Load one CIFAR-10 batch or ``batches.meta`` with :class:`CifarBatchUnpickler`; keys become ``str``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found (expected cifar-10-batches-py/<batch>)")
    try:
        with path.open("rb") as handle:
            content = CifarBatchUnpickler(handle).load()
    except ForbiddenPickleGlobalError as err:
        raise DataError(path, f"unsafe pickle, not loaded: {err}") from err
    except Exception as err:  # a truncated or foreign pickle can fail in many ways inside pickle and numpy
        raise DataError(path, f"not a CIFAR-10 python batch ({type(err).__name__}: {err})") from err
    if not isinstance(content, dict):
        raise DataError(path, f"expected a pickled dict, got {type(content).__name__}")
    return {_text_key(key): value for key, value in content.items()}


def read_cifar_batch(path: str | Path) -> tuple[Any, list[int]]:
    """Images ``uint8[N, 3, 32, 32]`` (numpy) and their labels from one batch file."""
    import numpy

    path = Path(path)
    batch = load_cifar_pickle(path)
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, numpy.ndarray) or data.dtype != numpy.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(path, "'data' is not a uint8 array of shape [N, 3072]")
    if not isinstance(labels, list) or len(labels) != len(data) or not all(isinstance(x, int) for x in labels):
        raise DataError(path, f"'labels' is not a list of {len(data)} integers")
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar_label_names(batches_dir: Path) -> list[str]:
    path = batches_dir / "batches.meta"
    names = load_cifar_pickle(path).get("label_names")
    if not isinstance(names, list) or not all(isinstance(name, bytes | str) for name in names):
        raise DataError(path, "'label_names' is not a list of names")
    return [_text_key(name) for name in names]


CIFAR10_SPLITS = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def cifar10_to_imagefolder(
    extracted_root: str | Path, out_dir: str | Path, classes: Sequence[str] | None = CIFAR2_CLASSES
) -> Path:
    """Write ``out_dir/{train,test}/<class>/<n>.png`` from an extracted ``cifar-10-batches-py``.

    ``classes`` picks the CIFAR-10 classes to keep (default: cifar2's airplane
    and automobile; ``None``: all ten). Images are numbered per class and split
    in batch order and saved as lossless RGB PNG. The tree is built in a staging
    folder renamed to ``out_dir`` at the end, so ``out_dir`` must not exist yet.
    """
    from PIL import Image  # installed with torchvision

    batches_dir = _find_folder(Path(extracted_root), "cifar-10-batches-py")
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists; remove it to convert CIFAR-10 again")
    label_names = read_cifar_label_names(batches_dir)
    wanted = list(label_names) if classes is None else list(classes)
    unknown = [name for name in wanted if name not in label_names]
    if unknown:
        raise ValueError(f"unknown CIFAR-10 class(es) {unknown}; choose from {label_names}")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = _create_staging_dir(out_dir)
    try:
        for split, batch_names in CIFAR10_SPLITS.items():
            counters = dict.fromkeys(wanted, 0)
            for name in wanted:
                (staging / split / name).mkdir(parents=True)
            for batch_name in batch_names:
                path = batches_dir / batch_name
                images, labels = read_cifar_batch(path)
                for image, label in zip(images, labels, strict=True):
                    if not 0 <= label < len(label_names):
                        raise DataError(path, f"label {label} is not a CIFAR-10 class index")
                    class_name = label_names[label]
                    if class_name not in counters:
                        continue
                    png_path = staging / split / class_name / f"{counters[class_name]}.png"
                    Image.fromarray(image.transpose(1, 2, 0)).save(png_path, format="PNG")
                    counters[class_name] += 1
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


# ---------------------------------------------------------------------------------------------- whole datasets


@dataclass(frozen=True)
class FullDataset:
    """Where a task's full-size data comes from and how it becomes the DataModule's ``--data-dir``."""

    url: str
    archive_name: str
    digest: str
    algorithm: str
    output_name: str
    convert: Callable[[Path, Path], object]
    is_complete: Callable[[Path], bool]
    description: str


FULL_DATASETS: dict[str, FullDataset] = {
    "imdb": FullDataset(
        url=IMDB_URL,
        archive_name="aclImdb_v1.tar.gz",
        digest=IMDB_SHA256,
        algorithm="sha256",
        output_name="imdb",
        convert=aclimdb_to_tsv,
        is_complete=lambda out: (out / "train.tsv").is_file() and (out / "test.tsv").is_file(),
        description="train.tsv and test.tsv, 25,000 labelled reviews each",
    ),
    "cifar2": FullDataset(
        url=CIFAR10_URL,
        archive_name="cifar-10-python.tar.gz",
        digest=CIFAR10_MD5,
        algorithm="md5",
        output_name="cifar2",
        convert=cifar10_to_imagefolder,
        is_complete=lambda out: (out / "train").is_dir() and (out / "test").is_dir(),
        description="{train,test}/{airplane,automobile}/<n>.png from CIFAR-10",
    ),
}


def prepare_full_dataset(
    task: str,
    data_dir: str | Path,
    *,
    url: str | None = None,
    digest: str | None = None,
    algorithm: str | None = None,
    keep_archive: bool = False,
    progress: bool = True,
) -> Path:
    """Download, verify, extract and convert ``task``'s full data under ``data_dir``; return its ``--data-dir``.

    This is what ``lightning_app.fit --download`` calls. Data already converted
    under ``data_dir`` is reused without touching the network. ``url`` and
    ``digest`` (with ``algorithm``) point at a mirror; by default the canonical
    URL and its published checksum are used. The archive is deleted after
    conversion unless ``keep_archive``; the extracted tree always is.
    """
    if task not in FULL_DATASETS:
        raise ValueError(f"no full-size download for task {task!r}; choose from {sorted(FULL_DATASETS)}")
    spec = FULL_DATASETS[task]
    data_dir = Path(data_dir)
    out_dir = data_dir / spec.output_name
    data_dir.mkdir(parents=True, exist_ok=True)
    # Several processes (one per GPU, say) may ask at once: one prepares, the others wait and reuse its result.
    with FileLock(str(data_dir / f".{spec.output_name}.lock")):
        if spec.is_complete(out_dir):
            return out_dir
        archive = download(
            url or spec.url,
            data_dir / spec.archive_name,
            digest or spec.digest,
            algorithm=algorithm or spec.algorithm,
            progress=progress,
        )
        with tempfile.TemporaryDirectory(dir=data_dir, prefix=f".{spec.output_name}.extract-") as work:
            extracted = safe_extract(archive, Path(work) / "archive")
            spec.convert(extracted, out_dir)
        if not keep_archive:
            archive.unlink()
    return out_dir


# ---------------------------------------------------------------------------------------------- command line

_PROG = "python -m datamodules.download"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Download the full-size IMDB or CIFAR-10 data, verify it, extract it safely and convert it "
        "into the layout the task's DataModule reads.",
    )
    parser.add_argument("task", choices=sorted(FULL_DATASETS), help="which dataset to prepare")
    parser.add_argument("--data-dir", required=True, help="folder to download into; the data lands in a subfolder")
    parser.add_argument("--keep-archive", action="store_true", help="keep the downloaded .tar.gz after conversion")
    parser.add_argument("--url", default=None, help="download from this mirror instead of the canonical URL")
    digests = parser.add_mutually_exclusive_group()
    digests.add_argument("--sha256", default=None, metavar="HEX", help="expected SHA-256 (for a mirror's file)")
    digests.add_argument("--md5", default=None, metavar="HEX", help="expected MD5 (for a mirror's file)")
    parser.add_argument(
        "--no-progress-bar", dest="progress", action="store_false", help="do not draw the download progress bar"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; failures end with a one-line error on stderr and exit status 1."""
    args = build_parser().parse_args(argv)
    digest, algorithm = (args.sha256, "sha256") if args.sha256 else (args.md5, "md5") if args.md5 else (None, None)
    try:
        out_dir = prepare_full_dataset(
            args.task,
            args.data_dir,
            url=args.url,
            digest=digest,
            algorithm=algorithm,
            keep_archive=args.keep_archive,
            progress=args.progress,
        )
    except (DownloadError, DataError, OSError, ValueError) as err:
        one_line = " ".join(str(err).split())  # some library messages (tarfile's) span several lines
        print(f"{_PROG}: error: {one_line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{_PROG}: interrupted; nothing half-written was kept", file=sys.stderr)
        return 130
    print(f"{args.task} data ready in {out_dir} ({FULL_DATASETS[args.task].description})")
    print(f"train with: python -m lightning_app.fit --task {args.task} --data-dir {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
