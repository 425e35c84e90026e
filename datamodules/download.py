"""Optional full-size IMDB and CIFAR-10 data: download, verify, extract safely, convert (and the command line).

The bundled data in ``datamodules/data`` trains offline; only ``lightning_app.fit
--download`` (through ``lightning_app.training``) and this command line use this
module and the network. On a machine with internet::

    python -m datamodules.download imdb --data-dir data/full
    python -m lightning_app.fit --task imdb --data-dir data/full/imdb

:func:`prepare_full_dataset` chains the pieces, each usable on its own:
:func:`datamodules.archives.download` (pinned checksum) and
:func:`datamodules.archives.safe_extract` (tarfile's ``"data"`` filter, staging folder),
then :func:`datamodules.converters.aclimdb_to_tsv` or
:func:`datamodules.converters.cifar10_to_imagefolder`; it returns the folder to pass as
``--data-dir``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from datamodules.archives import DownloadError, download, safe_extract
from datamodules.converters import aclimdb_to_tsv, cifar10_to_imagefolder
from datamodules.errors import DataError

IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
#: ai.stanford.edu publishes no checksum. This is the SHA-256 of the 84,125,825-byte archive that
#: independent dataset loaders pin (e.g. JuliaML MLDatasets.jl's DataDeps registration).
IMDB_SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
#: The MD5 published on https://www.cs.toronto.edu/~kriz/cifar.html (torchvision pins the same value).
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"


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
