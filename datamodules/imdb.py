"""IMDB movie-review sentiment (text, binary or multi-class).

Preprocessing is a set of pure functions, so the same code prepares the
training data and scores raw strings from a checkpoint: reading the labeled
TSV files is :mod:`datamodules.text_files`, tokenising, the vocabulary and the
encoding to ids are :mod:`datamodules.text_encoding` (:func:`encode_texts` runs
the whole chain with a ``preprocessing_state`` dict).

The DataModule's cache is built in streamed chunks by the same functions (see
:class:`ProvisionalTokenIds`), and its batches equal :func:`encode_texts`'s.
"""

from __future__ import annotations

import array
import itertools
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datamodules.base import TaskDataModule, train_val_split
from datamodules.batches import PaddedRaggedRows
from datamodules.cache import CacheWriter, cached_arrays, default_cache_dir, file_digest, key_digest
from datamodules.errors import DataError

# encode_texts and vocabulary_index are re-exported: lightning_app.models.imdb scores raw text with them.
from datamodules.text_encoding import (  # noqa: F401
    PAD_ID,
    RESERVED_TOKENS,
    UNK_ID,
    Side,
    TokenizerName,
    encode_texts,
    get_tokenizer,
    vocabulary_from_counts,
    vocabulary_index,
)
from datamodules.text_files import LABEL_COLUMN, iter_labeled_rows, label_values, scan_labels

log = logging.getLogger(__name__)

#: Bump when the cached arrays' layout or the tokenizers change (3: unpadded ids, streamed build).
CACHE_FORMAT = 3


def _strings_to_arrays(strings: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Pack strings into ``uint8`` UTF-8 bytes and ``int64`` lengths, so they fit an array cache."""
    encoded = [text.encode("utf-8") for text in strings]
    data = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    return data, np.array([len(item) for item in encoded], dtype=np.int64)


def _tensors_to_strings(data: torch.Tensor, lengths: torch.Tensor) -> list[str]:
    raw = bytes(data.numpy())
    strings, start = [], 0
    for length in lengths.tolist():
        strings.append(raw[start : start + length].decode("utf-8"))
        start += length
    return strings


# -- the streamed cache build -----------------------------------------------------

#: Reviews tokenised per chunk of the streamed build: memory holds one chunk's tokens at a time.
BUILD_CHUNK_ROWS = 2048
#: Token ids per chunk of the pass mapping provisional ids to vocabulary ids.
REMAP_CHUNK_IDS = 1 << 22


class ProvisionalTokenIds:
    """Token -> provisional id (in order of first appearance) and the train count of each provisional id.

    Lets a streamed build tokenise every review once: provisional ids go to disk while
    the file is read, and once the vocabulary is known (it needs every train count)
    :meth:`final_id_lookup` maps them to vocabulary ids in a vectorised pass. Memory
    holds one entry per distinct token, whatever the corpus size.
    """

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        #: ``int64[number of provisional ids]``: occurrences counted by :meth:`count`.
        self.counts = np.zeros(0, dtype=np.int64)

    def lookup(self, tokens: Iterable[str]) -> list[int]:
        """The tokens' provisional ids, giving each token not seen before the next free id."""
        ids = self.ids
        return [ids.setdefault(token, len(ids)) for token in tokens]

    def count(self, provisional_ids: np.ndarray) -> None:
        """Count each occurrence of ``provisional_ids`` (the tokens of train rows)."""
        if len(self.counts) < len(self.ids):
            self.counts = np.concatenate([self.counts, np.zeros(len(self.ids) - len(self.counts), dtype=np.int64)])
        self.counts += np.bincount(provisional_ids, minlength=len(self.counts))

    def vocabulary(self, max_size: int, min_freq: int) -> list[str]:
        """:func:`~datamodules.text_encoding.vocabulary_from_counts` of the counted tokens."""
        tokens = list(self.ids)
        counts = {tokens[i]: int(self.counts[i]) for i in np.flatnonzero(self.counts).tolist()}
        return vocabulary_from_counts(counts, max_size, min_freq)

    def final_id_lookup(self, vocabulary: Sequence[str]) -> np.ndarray:
        """``int32[number of provisional ids]``: the vocabulary id of each provisional id (:data:`UNK_ID` if absent)."""
        lookup = np.full(len(self.ids), UNK_ID, dtype=np.int32)
        for final_id in range(len(RESERVED_TOKENS), len(vocabulary)):
            lookup[self.ids[vocabulary[final_id]]] = final_id
        return lookup


def truncated(ids: list[int], max_len: int, side: Side) -> list[int]:
    """At most ``max_len`` of ``ids``: the first (``side="right"``) or the last ones (``"left"``), as ``encode``."""
    if len(ids) <= max_len:
        return ids
    return ids[-max_len:] if side == "left" else ids[:max_len]


def tokenise_rows_to_file(
    rows: Iterable[tuple[int, str]],
    tokenize: Callable[[str], list[str]],
    provisional: ProvisionalTokenIds,
    counted_rows: np.ndarray | None,
    max_len: int,
    truncate: Side,
    scratch: Path,
) -> np.ndarray:
    """Tokenise ``(row index, text)`` pairs by chunks, appending each row's truncated provisional ids to ``scratch``.

    Rows whose ``counted_rows[row]`` is true have all their tokens (before truncation)
    counted in ``provisional``. Returns ``int64[rows + 1]`` offsets: row ``r``'s ids are
    ``scratch[offsets[r]:offsets[r + 1]]``.
    """
    lengths = array.array("q")  # 8 bytes per review
    with scratch.open("wb") as handle:
        rows = iter(rows)
        while chunk := list(itertools.islice(rows, BUILD_CHUNK_ROWS)):
            stored: list[int] = []
            counted: list[int] = []
            for row, text in chunk:
                ids = provisional.lookup(tokenize(text))
                if counted_rows is not None and counted_rows[row]:
                    counted.extend(ids)
                kept = truncated(ids, max_len, truncate)
                lengths.append(len(kept))
                stored.extend(kept)
            np.array(stored, dtype=np.int32).tofile(handle)
            if counted:
                provisional.count(np.array(counted, dtype=np.int64))
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(np.frombuffer(lengths, dtype=np.int64), out=offsets[1:])
    return offsets


def append_final_ids(writer: CacheWriter, name: str, scratch: Path, lookup: np.ndarray) -> None:
    """Append the vocabulary ids of the provisional ids in ``scratch`` to cached array ``name``, chunk by chunk."""
    writer.append(name, np.zeros(0, dtype=np.int32))  # the array exists even when every review is empty
    with scratch.open("rb") as handle:
        while (chunk := np.fromfile(handle, dtype=np.int32, count=REMAP_CHUNK_IDS)).size:
            writer.append(name, lookup[chunk])
    scratch.unlink()


class IMDBDataModule(TaskDataModule):
    """Movie-review classification from raw text (the bundled aclImdb: 24,996 train and 24,996 test reviews).

    ``train.tsv[.gz]`` is split into train and validation with a fixed seed; the
    vocabulary is fitted on the train part only (validation reviews are never
    counted). ``test.tsv[.gz]`` is the test set, served in a fixed order shuffled with ``seed``
    (:attr:`test_order`: row ``i`` of the test set is review ``test_order[i]`` of the file), so a
    run limited to its first batches (``--limit-test-batches``) scores a seeded sample of every class
    rather than the first class of a label-sorted file; metrics over the whole split do not depend on
    the order. The validation part is a seeded shuffle already. Labels ``{0, 1}`` make a binary
    task (class names ``binary_names``); any other label set is multi-class with
    the labels sorted into class ids (numerically if they are all integers).

    Token ids are cached in ``cache_dir`` under a key made of the source files'
    SHA-256 and every setting that changes them, so a second run skips reading
    and tokenising; :attr:`cache_reused` tells whether the last ``setup`` did.
    The cache is built by streaming the files in chunks (memory does not grow with
    the corpus beyond its distinct tokens and a few numbers per review) and holds
    each review's ids unpadded (already truncated to ``max_len``); ``setup``
    memory-maps it, so only the reviews a batch needs are read from disk.

    A batch is ``(token_ids, label)``: ``int32[B, max_len]`` ids
    (:data:`PAD_ID` = 0 padding, :data:`UNK_ID` = 1 unknown) and ``int64[B]`` class ids,
    exactly as :func:`encode_texts` would give. Each batch is gathered and padded
    with a few tensor operations (:class:`datamodules.base.PaddedRaggedRows`; no
    per-sample collation).

    Args:
        data_dir: folder with ``train.tsv``/``test.tsv`` (or ``.tsv.gz``); default: bundled aclImdb.
        cache_dir: where token ids are cached; default ``datamodules.cache.default_cache_dir()``.
        batch_size: reviews per batch.
        num_workers: DataLoader workers; batches are a few tensor operations, so 0 is fastest.
        seed: seed of the train/validation split and of the test order.
        val_fraction: share of ``train.tsv`` held out for validation.
        vocab_size: vocabulary size including ``<pad>`` and ``<unk>``.
        min_freq: minimum count in the train part for a token to enter the vocabulary.
        max_len: tokens per review after truncation/padding.
        tokenizer: ``"words"`` (default) or ``"tutorial"``.
        truncate: ``"right"`` keeps a long review's first ``max_len`` tokens, ``"left"`` its last (tutorial).
        pad: ``"right"`` pads after the tokens, ``"left"`` before them (tutorial).
        binary_names: class names for labels ``0`` and ``1``.
        num_examples: validation reviews kept as raw text for the TensorBoard table.
    """

    packaged_subdir = "imdb"

    def __init__(
        self,
        data_dir: str | Path | None = None,
        cache_dir: str | Path | None = None,
        batch_size: int = 128,
        num_workers: int = 0,
        seed: int = 42,
        val_fraction: float = 0.1,
        vocab_size: int = 50_000,
        min_freq: int = 1,
        max_len: int = 1000,
        tokenizer: TokenizerName = "words",
        truncate: Side = "right",
        pad: Side = "right",
        binary_names: tuple[str, str] = ("negative", "positive"),
        num_examples: int = 8,
    ) -> None:
        super().__init__(data_dir)
        get_tokenizer(tokenizer)
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
        if max_len < 1:
            raise ValueError(f"max_len must be positive, got {max_len}")
        for name, side in (("truncate", truncate), ("pad", pad)):
            if side not in ("left", "right"):
                raise ValueError(f"{name} must be 'left' or 'right', got {side!r}")
        self.save_hyperparameters(ignore=["data_dir", "cache_dir"], logger=False)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.cache_reused: bool | None = None
        self._state: dict[str, Any] | None = None
        #: ``(text, class_id)`` of a few validation reviews, for the TensorBoard table.
        self.val_examples: list[tuple[str, int]] = []
        #: After ``setup``: ``int64[N]``, the position in ``test.tsv`` of each test-set row.
        self.test_order: torch.Tensor | None = None

    def split_file(self, split: str) -> Path:
        """``<data_dir>/<split>.tsv``, else ``<split>.tsv.gz``; a :class:`DataError` if neither exists."""
        return self.require_file(f"{split}.tsv", f"{split}.tsv.gz")

    def prepare_data(self) -> None:
        self.split_file("train")
        self.split_file("test")

    def cache_key(self, train_path: Path, test_path: Path) -> dict[str, Any]:
        settings = ("seed", "val_fraction", "vocab_size", "min_freq", "max_len", "tokenizer", "truncate", "pad")
        return {
            "format": CACHE_FORMAT,
            "train_sha256": file_digest(train_path),
            "test_sha256": file_digest(test_path),
            "num_examples": self.hparams.num_examples,
            **{name: self.hparams[name] for name in settings},
        }

    def _build(self, writer: CacheWriter, train_path: Path, test_path: Path) -> None:
        """Stream both files into the cache: labels and split first, then tokens, vocabulary and final ids.

        Each review is tokenised once (see :class:`ProvisionalTokenIds`); memory holds
        one chunk of reviews, the distinct tokens and a few numbers per review.
        """
        hp = self.hparams
        distinct_labels, label_codes = scan_labels(train_path)
        values = label_values(distinct_labels)
        if len(values) < 2:
            raise DataError(train_path, f"column '{LABEL_COLUMN}' needs at least two distinct labels, found {values}")
        class_id = {value: i for i, value in enumerate(values)}
        train_labels = np.array([class_id[label] for label in distinct_labels], dtype=np.int64)[label_codes]
        train_idx, val_idx = train_val_split(len(label_codes), hp.val_fraction, hp.seed, train_path, "review")
        is_train_row = np.zeros(len(label_codes), dtype=bool)
        is_train_row[train_idx.numpy()] = True

        tokenize, provisional = get_tokenizer(hp.tokenizer), ProvisionalTokenIds()
        example_rows = val_idx[: hp.num_examples].tolist()
        wanted_examples = set(example_rows)
        example_texts: dict[int, str] = {}

        def train_rows() -> Iterator[tuple[int, str]]:
            for row, (_, _, text) in enumerate(iter_labeled_rows(train_path)):
                if row in wanted_examples:
                    example_texts[row] = text
                yield row, text

        train_scratch, test_scratch = writer.scratch_path("train-ids"), writer.scratch_path("test-ids")
        train_offsets = tokenise_rows_to_file(
            train_rows(), tokenize, provisional, is_train_row, hp.max_len, hp.truncate, train_scratch
        )
        if len(train_offsets) - 1 != len(label_codes):
            raise DataError(train_path, "the file changed while it was read; run again")

        test_labels = array.array("q")

        def test_rows() -> Iterator[tuple[int, str]]:
            for row, (number, label, text) in enumerate(iter_labeled_rows(test_path)):
                if label not in class_id:
                    problem = f"unknown label {label!r} in column '{LABEL_COLUMN}'; expected one of {values}"
                    raise DataError(test_path, problem, line=number)
                test_labels.append(class_id[label])
                yield row, text

        test_offsets = tokenise_rows_to_file(
            test_rows(), tokenize, provisional, None, hp.max_len, hp.truncate, test_scratch
        )
        test_order = torch.randperm(len(test_labels), generator=torch.Generator().manual_seed(hp.seed))

        vocabulary = provisional.vocabulary(hp.vocab_size, hp.min_freq)
        lookup = provisional.final_id_lookup(vocabulary)
        del provisional
        append_final_ids(writer, "train_ids", train_scratch, lookup)
        append_final_ids(writer, "test_ids", test_scratch, lookup)
        writer.put("train_offsets", train_offsets)
        writer.put("train_labels", train_labels)
        writer.put("train_index", train_idx)
        writer.put("val_index", val_idx)
        writer.put("test_offsets", test_offsets)
        writer.put("test_labels", np.frombuffer(test_labels, dtype=np.int64))
        writer.put("test_order", test_order)
        for name, strings in (
            ("vocab", vocabulary),
            ("label", values),
            ("example", [example_texts[row] for row in example_rows]),
        ):
            data, lengths = _strings_to_arrays(strings)
            writer.put(f"{name}_bytes", data)
            writer.put(f"{name}_lengths", lengths)
        writer.put("example_labels", train_labels[example_rows])

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train_path, test_path = self.split_file("train"), self.split_file("test")
        key = self.cache_key(train_path, test_path)
        cache_path = self.cache_dir / "imdb" / f"tokens-{key_digest(key)}"
        arrays, self.cache_reused = cached_arrays(
            cache_path, key, lambda writer: self._build(writer, train_path, test_path)
        )
        log.info("IMDB token ids %s %s", "loaded from" if self.cache_reused else "built and cached in", cache_path)

        values = _tensors_to_strings(arrays["label_bytes"], arrays["label_lengths"])
        hp = self.hparams
        self._state = {
            "tokenizer": hp.tokenizer,
            "max_len": hp.max_len,
            "truncate": hp.truncate,
            "pad": hp.pad,
            "vocabulary": _tensors_to_strings(arrays["vocab_bytes"], arrays["vocab_lengths"]),
            "label_values": values,
            "class_names": list(hp.binary_names) if values == ["0", "1"] else values,
        }
        texts = _tensors_to_strings(arrays["example_bytes"], arrays["example_lengths"])
        self.val_examples = list(zip(texts, arrays["example_labels"].tolist(), strict=True))

        def reviews(split: str, order: torch.Tensor) -> PaddedRaggedRows:
            ids, offsets, labels = (arrays[f"{split}_{name}"] for name in ("ids", "offsets", "labels"))
            return PaddedRaggedRows(ids, offsets, labels, order, width=hp.max_len, pad_side=hp.pad, pad_value=PAD_ID)

        self.train_set = reviews("train", arrays["train_index"])
        self.val_set = reviews("train", arrays["val_index"])
        self.test_set = reviews("test", arrays["test_order"])
        self.test_order = arrays["test_order"]

    def model_kwargs(self) -> dict[str, Any]:
        state = self.preprocessing_state()
        return {
            "vocab_size": len(state["vocabulary"]),
            "num_classes": len(state["label_values"]),
            "max_len": state["max_len"],
        }

    def data_profile(self) -> dict[str, int | float]:
        """The base profile plus ``mean_tokens``: the training texts' mean length in tokens (at most ``max_len``)."""
        train = self.train_set
        if not isinstance(train, PaddedRaggedRows):
            raise RuntimeError("call setup() before data_profile()")
        lengths = (train.offsets[1:] - train.offsets[:-1])[train.order]
        return {**super().data_profile(), "mean_tokens": float(lengths.double().mean())}

    def preprocessing_state(self) -> dict[str, Any]:
        """JSON-able: tokenizer name, ``max_len``, sides, vocabulary list (id = position), labels and class names."""
        if self._state is None:
            raise RuntimeError("call setup() before preprocessing_state()")
        return self._state
