"""IMDB movie-review sentiment (text, binary or multi-class).

Preprocessing is a set of pure functions, so the same code prepares the
training data and scores raw strings from a checkpoint:

* :func:`read_labeled_texts` parses a TSV file with ``label`` and ``text`` columns;
* :data:`TOKENIZERS` maps a tokenizer name to a function ``str -> list[str]``
  (:func:`tutorial_tokenize` is the tutorial's, :func:`words_tokenize` the default);
* :func:`build_vocabulary` keeps the most frequent training tokens behind the
  reserved ids :data:`PAD_ID` (0, ``<pad>``) and :data:`UNK_ID` (1, ``<unk>``);
* :func:`encode` maps tokens to a fixed-length id list (truncation and padding side configurable);
* :func:`encode_texts` runs the whole chain with a ``preprocessing_state`` dict.
"""

from __future__ import annotations

import gzip
import logging
import re
import string
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from datamodules.base import BatchIndexedTensors, TaskDataModule, train_val_split
from datamodules.cache import cached_tensors, default_cache_dir, file_digest, key_digest
from datamodules.errors import DataError

log = logging.getLogger(__name__)

TokenizerName = Literal["tutorial", "words"]
Side = Literal["left", "right"]

PAD_TOKEN, UNK_TOKEN = "<pad>", "<unk>"
#: Reserved ids: every vocabulary starts ``["<pad>", "<unk>", ...]``.
PAD_ID, UNK_ID = 0, 1
RESERVED_TOKENS = (PAD_TOKEN, UNK_TOKEN)

LABEL_COLUMN, TEXT_COLUMN = "label", "text"
#: Bump when the cached tensors' layout or the tokenizers change.
CACHE_FORMAT = 2

_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*|[!?]")


def tutorial_tokenize(text: str) -> list[str]:
    """The tutorial's cleaning: lowercase, ``<br />`` -> space, drop ``string.punctuation``, split on spaces.

    Empty strings from runs of spaces are dropped.
    """
    cleaned = _PUNCTUATION.sub("", text.lower().replace("<br />", " "))
    return [token for token in cleaned.split(" ") if token]


def words_tokenize(text: str) -> list[str]:
    """The default: lowercase runs of letters/digits (keeping inner apostrophes: ``don't``) plus ``!`` and ``?``.

    ``<br />`` line breaks are removed; other punctuation is dropped.
    """
    return _WORD.findall(_BREAK.sub(" ", text.lower()))


TOKENIZERS: dict[str, Callable[[str], list[str]]] = {"tutorial": tutorial_tokenize, "words": words_tokenize}


def get_tokenizer(name: str) -> Callable[[str], list[str]]:
    if name not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {name!r}; choose from {sorted(TOKENIZERS)}")
    return TOKENIZERS[name]


def build_vocabulary(token_lists: Iterable[Sequence[str]], max_size: int, min_freq: int = 1) -> list[str]:
    """The vocabulary as a list: ``["<pad>", "<unk>", most frequent token, ...]``.

    ``max_size`` counts the two reserved entries (the tutorial's ``MAX_WORDS = 10000``
    is 9998 words + 2). Tokens seen fewer than ``min_freq`` times are left out;
    ties in frequency are broken alphabetically, so the result is deterministic.
    A token equal to a reserved name is counted as an ordinary unknown word.
    """
    if max_size < len(RESERVED_TOKENS):
        raise ValueError(f"max_size must be at least {len(RESERVED_TOKENS)}, got {max_size}")
    counts: Counter[str] = Counter()
    for tokens in token_lists:
        counts.update(tokens)
    for token in RESERVED_TOKENS:
        counts.pop(token, None)
    ranked = sorted((item for item in counts.items() if item[1] >= min_freq), key=lambda item: (-item[1], item[0]))
    return [*RESERVED_TOKENS, *(token for token, _ in ranked[: max_size - len(RESERVED_TOKENS)])]


def encode(
    tokens: Sequence[str], index: dict[str, int], max_len: int, truncate: Side = "right", pad: Side = "right"
) -> list[int]:
    """Map tokens to exactly ``max_len`` ids: unknown tokens -> :data:`UNK_ID`, padding -> :data:`PAD_ID`.

    ``truncate="right"`` keeps the first ``max_len`` tokens, ``"left"`` the last ones
    (the tutorial's choice). ``pad="right"`` appends padding, ``"left"`` prepends it
    (the tutorial's choice). ``index`` maps token -> id (see :func:`vocabulary_index`).
    """
    if len(tokens) > max_len:
        tokens = tokens[-max_len:] if truncate == "left" else tokens[:max_len]
    ids = [index.get(token, UNK_ID) for token in tokens]
    padding = [PAD_ID] * (max_len - len(ids))
    return padding + ids if pad == "left" else ids + padding


def vocabulary_index(vocabulary: Sequence[str]) -> dict[str, int]:
    """token -> id; the reserved names map to nothing, so a literal ``"<pad>"`` in a review is unknown."""
    return {token: i for i, token in enumerate(vocabulary) if i >= len(RESERVED_TOKENS)}


def encode_token_lists(
    token_lists: Iterable[Sequence[str]], index: dict[str, int], max_len: int, truncate: Side, pad: Side
) -> torch.Tensor:
    """:func:`encode` each token list: ``int32[N, max_len]``."""
    rows = [encode(tokens, index, max_len, truncate, pad) for tokens in token_lists]
    return torch.tensor(rows, dtype=torch.int32).reshape(len(rows), max_len)


def encode_texts(texts: Sequence[str], state: dict[str, Any], index: dict[str, int] | None = None) -> torch.Tensor:
    """Tokenise and encode raw texts with a ``preprocessing_state``: ``int32[len(texts), max_len]``."""
    tokenize = get_tokenizer(state["tokenizer"])
    index = index if index is not None else vocabulary_index(state["vocabulary"])
    return encode_token_lists(
        (tokenize(text) for text in texts), index, state["max_len"], state["truncate"], state["pad"]
    )


# -- reading files ---------------------------------------------------------------


def iter_raw_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(line number, bytes)`` of each line of a file (gzip-compressed if it ends in ``.gz``), streamed.

    Lines are split on ``\\n`` only (``str.splitlines`` would also split on U+0085, NEL,
    which some reviews contain); a trailing ``\\r`` is dropped, and a final newline
    does not make an extra empty line. Read errors are :class:`DataError` s naming the file.
    """
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                yield number, raw.removesuffix(b"\n").removesuffix(b"\r")
    except (OSError, EOFError) as err:
        raise DataError(path, f"cannot read file ({err})") from err


def decode_line(path: Path, number: int, raw: bytes) -> str:
    """One line's UTF-8 text; a :class:`DataError` naming the file, line and byte if it is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        problem = f"not UTF-8 text ({err.reason} at byte {err.start} of the line)"
        raise DataError(path, problem, line=number) from None


def iter_text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of each line of a UTF-8 file, streamed (see :func:`iter_raw_lines`)."""
    for number, raw in iter_raw_lines(path):
        yield number, decode_line(path, number, raw)


def read_text_lines(path: Path) -> list[str]:
    """All lines of a UTF-8 file (see :func:`iter_raw_lines`), in memory."""
    return [text for _, text in iter_text_lines(path)]


def read_labeled_texts(path: str | Path) -> tuple[list[str], list[str], list[int]]:
    """Parse a tab-separated file with a header naming ``label`` and ``text`` (other columns are ignored).

    Fields are not quoted (a review may start with ``"``). Returns raw label
    strings, texts and the 1-based line number of each row. Raises
    :class:`DataError` naming the file and line for undecodable bytes, a missing
    column, a row with the wrong number of fields or an empty label.
    """
    path = Path(path)
    lines = read_text_lines(path)
    if not lines:
        raise DataError(path, "file is empty (expected a header row with 'label' and 'text' columns)")
    header = [name.strip() for name in lines[0].split("\t")]
    missing = [column for column in (LABEL_COLUMN, TEXT_COLUMN) if column not in header]
    if missing:
        raise DataError(path, f"missing column(s) {missing}; tab-separated header has {header}", line=1)
    label_at, text_at = header.index(LABEL_COLUMN), header.index(TEXT_COLUMN)
    labels, texts, numbers = [], [], []
    for number, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            raise DataError(path, f"expected {len(header)} tab-separated fields, found {len(fields)}", line=number)
        label = fields[label_at].strip()
        if not label:
            raise DataError(path, f"column '{LABEL_COLUMN}' is empty", line=number)
        labels.append(label)
        texts.append(fields[text_at])
        numbers.append(number)
    if not labels:
        raise DataError(path, "file has a header but no data rows")
    return labels, texts, numbers


def label_values(labels: Iterable[str]) -> list[str]:
    """The distinct raw labels in class-id order: numerically sorted if all are integers, else alphabetically."""
    distinct = set(labels)
    try:
        return sorted(distinct, key=int)
    except ValueError:
        return sorted(distinct)


def encode_labels(path: Path, labels: Sequence[str], numbers: Sequence[int], values: Sequence[str]) -> torch.Tensor:
    """Raw labels -> class ids ``int64[N]``; a label outside ``values`` is a :class:`DataError` at its line."""
    class_id = {value: i for i, value in enumerate(values)}
    ids = []
    for label, number in zip(labels, numbers, strict=True):
        if label not in class_id:
            problem = f"unknown label {label!r} in column '{LABEL_COLUMN}'; expected one of {list(values)}"
            raise DataError(path, problem, line=number)
        ids.append(class_id[label])
    return torch.tensor(ids, dtype=torch.long)


def _strings_to_tensors(strings: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack strings into ``uint8`` UTF-8 bytes and ``int64`` lengths, so they fit a tensor cache."""
    encoded = [text.encode("utf-8") for text in strings]
    data = torch.tensor(list(b"".join(encoded)), dtype=torch.uint8)
    return data, torch.tensor([len(item) for item in encoded], dtype=torch.long)


def _tensors_to_strings(data: torch.Tensor, lengths: torch.Tensor) -> list[str]:
    raw = bytes(data.numpy())
    strings, start = [], 0
    for length in lengths.tolist():
        strings.append(raw[start : start + length].decode("utf-8"))
        start += length
    return strings


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

    A batch is ``(token_ids, label)``: ``int32[B, max_len]`` ids
    (:data:`PAD_ID` = 0 padding, :data:`UNK_ID` = 1 unknown) and ``int64[B]`` class ids.
    Batches are sliced from in-memory tensors (no per-sample collation).

    Args:
        data_dir: folder with ``train.tsv``/``test.tsv`` (or ``.tsv.gz``); default: bundled aclImdb.
        cache_dir: where token tensors are cached; default ``datamodules.cache.default_cache_dir()``.
        batch_size: reviews per batch.
        num_workers: DataLoader workers; the tensors are in memory, so 0 is fastest.
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

    def _build(self, train_path: Path, test_path: Path) -> dict[str, torch.Tensor]:
        """Read, split, fit the vocabulary on the train part and encode all three splits."""
        hp = self.hparams
        labels, texts, numbers = read_labeled_texts(train_path)
        values = label_values(labels)
        if len(values) < 2:
            raise DataError(train_path, f"column '{LABEL_COLUMN}' needs at least two distinct labels, found {values}")
        train_labels = encode_labels(train_path, labels, numbers, values)
        test_raw, test_texts, test_numbers = read_labeled_texts(test_path)
        test_labels = encode_labels(test_path, test_raw, test_numbers, values)

        train_idx, val_idx = train_val_split(len(texts), hp.val_fraction, hp.seed, train_path, "review")
        test_order = torch.randperm(len(test_texts), generator=torch.Generator().manual_seed(hp.seed))

        tokenize = get_tokenizer(hp.tokenizer)
        tokens = [tokenize(text) for text in texts]
        vocabulary = build_vocabulary((tokens[i] for i in train_idx.tolist()), hp.vocab_size, hp.min_freq)
        index = vocabulary_index(vocabulary)

        def ids(token_lists: Iterable[Sequence[str]]) -> torch.Tensor:
            return encode_token_lists(token_lists, index, hp.max_len, hp.truncate, hp.pad)

        all_train_ids = ids(tokens)
        examples = val_idx[: hp.num_examples].tolist()
        vocab_bytes, vocab_lengths = _strings_to_tensors(vocabulary)
        value_bytes, value_lengths = _strings_to_tensors(values)
        example_bytes, example_lengths = _strings_to_tensors([texts[i] for i in examples])
        return {
            "train_ids": all_train_ids[train_idx],
            "train_labels": train_labels[train_idx],
            "val_ids": all_train_ids[val_idx],
            "val_labels": train_labels[val_idx],
            "test_ids": ids(tokenize(test_texts[i]) for i in test_order.tolist()),
            "test_labels": test_labels[test_order],
            "test_order": test_order,
            "vocab_bytes": vocab_bytes,
            "vocab_lengths": vocab_lengths,
            "label_bytes": value_bytes,
            "label_lengths": value_lengths,
            "example_bytes": example_bytes,
            "example_lengths": example_lengths,
            "example_labels": train_labels[examples],
        }

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train_path, test_path = self.split_file("train"), self.split_file("test")
        key = self.cache_key(train_path, test_path)
        cache_path = self.cache_dir / "imdb" / f"tokens-{key_digest(key)}.pt"
        tensors, self.cache_reused = cached_tensors(cache_path, key, lambda: self._build(train_path, test_path))
        log.info("IMDB token ids %s %s", "loaded from" if self.cache_reused else "built and cached in", cache_path)

        values = _tensors_to_strings(tensors["label_bytes"], tensors["label_lengths"])
        hp = self.hparams
        self._state = {
            "tokenizer": hp.tokenizer,
            "max_len": hp.max_len,
            "truncate": hp.truncate,
            "pad": hp.pad,
            "vocabulary": _tensors_to_strings(tensors["vocab_bytes"], tensors["vocab_lengths"]),
            "label_values": values,
            "class_names": list(hp.binary_names) if values == ["0", "1"] else values,
        }
        texts = _tensors_to_strings(tensors["example_bytes"], tensors["example_lengths"])
        self.val_examples = list(zip(texts, tensors["example_labels"].tolist(), strict=True))
        self.train_set = BatchIndexedTensors(tensors["train_ids"], tensors["train_labels"])
        self.val_set = BatchIndexedTensors(tensors["val_ids"], tensors["val_labels"])
        self.test_set = BatchIndexedTensors(tensors["test_ids"], tensors["test_labels"])
        self.test_order = tensors["test_order"]

    def model_kwargs(self) -> dict[str, Any]:
        state = self.preprocessing_state()
        return {
            "vocab_size": len(state["vocabulary"]),
            "num_classes": len(state["label_values"]),
            "max_len": state["max_len"],
        }

    def preprocessing_state(self) -> dict[str, Any]:
        """JSON-able: tokenizer name, ``max_len``, sides, vocabulary list (id = position), labels and class names."""
        if self._state is None:
            raise RuntimeError("call setup() before preprocessing_state()")
        return self._state
