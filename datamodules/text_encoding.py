"""Text to token ids: the tokenizers, the vocabulary and the fixed-length encoding of the IMDB task.

Pure functions, so the same code prepares the training data (:mod:`datamodules.imdb`) and scores raw
strings from a checkpoint:

* :data:`TOKENIZERS` maps a tokenizer name to a function ``str -> list[str]``
  (:func:`tutorial_tokenize` is the tutorial's, :func:`words_tokenize` the default);
* :func:`vocabulary_from_counts` keeps the most frequent training tokens behind the
  reserved ids :data:`PAD_ID` (0, ``<pad>``) and :data:`UNK_ID` (1, ``<unk>``);
* :func:`encode` maps tokens to a fixed-length id list (truncation and padding side configurable);
* :func:`encode_texts` runs the whole chain with a ``preprocessing_state`` dict.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import torch

TokenizerName = Literal["tutorial", "words"]
Side = Literal["left", "right"]

PAD_TOKEN, UNK_TOKEN = "<pad>", "<unk>"
#: Reserved ids: every vocabulary starts ``["<pad>", "<unk>", ...]``.
PAD_ID, UNK_ID = 0, 1
RESERVED_TOKENS = (PAD_TOKEN, UNK_TOKEN)

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

#: Each tokenizer as data, for code that reads an exported model's ``preprocessing.json`` rather than this module:
#: lowercase (or not), replace every match of ``replace_with_space`` by a space, delete every match of ``delete``,
#: then the tokens are the matches of ``token`` (Python ``re`` syntax; ``None``: that step does nothing).
TOKENIZER_RULES: dict[str, dict[str, Any]] = {
    "tutorial": {
        "lowercase": True,
        "replace_with_space": re.escape("<br />"),
        "delete": _PUNCTUATION.pattern,
        "token": "[^ ]+",
    },
    "words": {"lowercase": True, "replace_with_space": r"<br\s*/?>", "delete": None, "token": _WORD.pattern},
}


def get_tokenizer(name: str) -> Callable[[str], list[str]]:
    if name not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {name!r}; choose from {sorted(TOKENIZERS)}")
    return TOKENIZERS[name]


def vocabulary_from_counts(counts: Mapping[str, int], max_size: int, min_freq: int = 1) -> list[str]:
    """The vocabulary as a list: ``["<pad>", "<unk>", most frequent token, ...]``, from token counts.

    ``max_size`` counts the two reserved entries (the tutorial's ``MAX_WORDS = 10000``
    is 9998 words + 2). Tokens counted fewer than ``min_freq`` times (or 0 times) are left out;
    ties in frequency are broken alphabetically, so the result is deterministic.
    A token equal to a reserved name is counted as an ordinary unknown word.
    """
    if max_size < len(RESERVED_TOKENS):
        raise ValueError(f"max_size must be at least {len(RESERVED_TOKENS)}, got {max_size}")
    threshold = max(min_freq, 1)
    kept = ((token, count) for token, count in counts.items() if count >= threshold and token not in RESERVED_TOKENS)
    ranked = sorted(kept, key=lambda item: (-item[1], item[0]))
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
