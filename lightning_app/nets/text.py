"""Networks for text classification over padded token ids (``0`` = padding)."""

from __future__ import annotations

import torch
from torch import nn

PAD_ID = 0
#: Multiplier of the bigram hash; a prime larger than any vocabulary, so (a, b) pairs spread evenly.
_BIGRAM_PRIME = 1_000_003


def hashed_bigrams(token_ids: torch.Tensor, buckets: int, offset: int) -> torch.Tensor:
    """Ids of adjacent-token pairs, hashed into ``[offset, offset + buckets)``; pairs touching padding -> ``PAD_ID``.

    ``int[B, L]`` -> ``int64[B, L - 1]``. Deterministic: the same two token ids
    always give the same bucket, in any process.
    """
    first, second = token_ids[:, :-1].long(), token_ids[:, 1:].long()
    bigrams = (first * _BIGRAM_PRIME + second) % buckets + offset
    return bigrams.masked_fill((first == PAD_ID) | (second == PAD_ID), PAD_ID)


class BigramBagNet(nn.Module):
    """fastText-style classifier: the mean embedding of a review's words and hashed bigrams, then a linear layer.

    ``int[B, L]`` token ids -> ``float32[B, num_outputs]`` logits. Padding is left
    out of the mean; an all-padding (empty) review gives the bias alone.
    The embedding table has ``vocab_size + bigram_buckets`` rows and sparse
    gradients (use an optimizer that accepts them, e.g. Adagrad or SGD).
    """

    def __init__(self, vocab_size: int, num_outputs: int, embed_dim: int = 16, bigram_buckets: int = 1 << 18) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.bigram_buckets = bigram_buckets
        rows = vocab_size + bigram_buckets
        self.embedding = nn.EmbeddingBag(rows, embed_dim, mode="mean", padding_idx=PAD_ID, sparse=True)
        self.head = nn.Linear(embed_dim, num_outputs)
        nn.init.uniform_(self.embedding.weight, -1.0 / embed_dim, 1.0 / embed_dim)
        with torch.no_grad():
            self.embedding.weight[PAD_ID].zero_()

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        features = token_ids.long()
        if self.bigram_buckets:
            features = torch.cat([features, hashed_bigrams(token_ids, self.bigram_buckets, self.vocab_size)], dim=1)
        return self.head(self.embedding(features))


class TutorialTextCNN(nn.Module):
    """The tutorial's CNN: Embedding(V, 3) -> Conv1d(3, 16, 5) -> MaxPool(2) -> ReLU -> Conv1d(16, 128, 2)
    -> MaxPool(2) -> ReLU -> Flatten -> Linear(6144, 1) (6144 = 128 x 48 for ``max_len`` 200).

    ``int[B, max_len]`` token ids -> ``float32[B, num_outputs]`` logits (no sigmoid).
    """

    def __init__(self, vocab_size: int = 10_000, max_len: int = 200, num_outputs: int = 1) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, 3, padding_idx=PAD_ID)
        self.conv = nn.Sequential(
            nn.Conv1d(3, 16, kernel_size=5),
            nn.MaxPool1d(2),
            nn.ReLU(),
            nn.Conv1d(16, 128, kernel_size=2),
            nn.MaxPool1d(2),
            nn.ReLU(),
            nn.Flatten(),
        )
        length = ((max_len - 4) // 2 - 1) // 2
        if length < 1:
            raise ValueError(f"max_len {max_len} is too short for the tutorial CNN (needs at least 10)")
        self.linear = nn.Linear(128 * length, num_outputs)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        embedded = self.embedding(token_ids.long()).transpose(1, 2)  # [B, 3, L]
        return self.linear(self.conv(embedded))
