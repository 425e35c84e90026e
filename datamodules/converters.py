"""Dataset converters: the extracted full-size IMDB and CIFAR-10 archives into the layouts the DataModules read.

* :func:`aclimdb_to_tsv` writes ``train.tsv`` and ``test.tsv`` (``label rating id text``)
  from an extracted ``aclImdb`` tree, each file atomically;
* :func:`cifar10_to_imagefolder` writes ``{train,test}/<class>/<n>.png`` from an extracted
  ``cifar-10-batches-py``, in a staging folder renamed on success; the batches are
  unpickled by :class:`CifarBatchUnpickler`, which builds numpy arrays and nothing else.

Used by :mod:`datamodules.download` (:func:`~datamodules.download.prepare_full_dataset`),
after :mod:`datamodules.archives` has downloaded and extracted the archive. Files and
folders are written through :mod:`datamodules.files`.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from datamodules.errors import DataError
from datamodules.files import atomic_write_bytes, staging_dir

CIFAR2_CLASSES = ("airplane", "automobile")
IMDB_COLUMNS = ("label", "rating", "id", "text")


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
    from PIL import Image

    batches_dir = _find_folder(Path(extracted_root), "cifar-10-batches-py")
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists; remove it to convert CIFAR-10 again")
    label_names = read_cifar_label_names(batches_dir)
    wanted = list(label_names) if classes is None else list(classes)
    unknown = [name for name in wanted if name not in label_names]
    if unknown:
        raise ValueError(f"unknown CIFAR-10 class(es) {unknown}; choose from {label_names}")

    with staging_dir(out_dir, "partial") as staging:
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
    return out_dir
