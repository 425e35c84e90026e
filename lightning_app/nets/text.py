"""Networks for text classification over padded token ids (``0`` = padding)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from datamodules.text_encoding import PAD_ID

#: Multiplier of the n-gram hash; a prime larger than any vocabulary, so (a, b) pairs spread evenly.
_NGRAM_PRIME = 1_000_003
#: Modulus that keeps the hash of 3-grams and longer inside int64 (a Mersenne prime).
_MERSENNE_61 = (1 << 61) - 1
#: Feature rows per block when :meth:`NBBagNet.fit_nb_ratios` turns counts into ratios.
NB_RATIO_BLOCK_ROWS = 1 << 20


def hashed_ngrams(token_ids: torch.Tensor, n: int, buckets: int, offset: int, salt: int = 1) -> torch.Tensor:
    """Ids of the ``n``-token windows hashed into ``[offset, offset + buckets)``; those touching padding: ``PAD_ID``.

    ``int[B, L]`` -> ``int64[B, max(L - n + 1, 0)]``. Deterministic: the same tokens
    always give the same bucket, in any process. ``salt`` scatters the n-grams of
    different lengths that share a table (``2n + 1`` is used by :class:`NBBagNet`).
    """
    ids = token_ids.long()
    width = ids.shape[1] - n + 1
    if width < 1:
        return ids.new_zeros(ids.shape[0], 0)
    hashed = ids[:, :width]
    padded = hashed == PAD_ID
    for k in range(1, n):
        following = ids[:, k : k + width]
        hashed = hashed * _NGRAM_PRIME + following
        if k > 1:
            hashed = hashed % _MERSENNE_61
        padded = padded | (following == PAD_ID)
    return ((hashed * salt) % buckets + offset).masked_fill(padded, PAD_ID)


def hashed_bigrams(token_ids: torch.Tensor, buckets: int, offset: int) -> torch.Tensor:
    """Adjacent-token pairs hashed into ``[offset, offset + buckets)`` (:func:`hashed_ngrams` with ``n = 2``)."""
    return hashed_ngrams(token_ids, 2, buckets, offset)


def capturing_graph() -> bool:
    """Whether this forward is being traced, compiled or exported: the graph must then not depend on the batch's
    content (no shapes that follow how much of it is padding)."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


def trim_padding(token_ids: torch.Tensor) -> torch.Tensor:
    """Drop the trailing columns that are padding in every row (a speed-up only; outputs do not change).

    Left as it is while :func:`capturing_graph`.
    """
    if capturing_graph():
        return token_ids
    used = (token_ids != PAD_ID).any(0).nonzero()
    return token_ids[:, : int(used.max()) + 1] if len(used) else token_ids[:, :1]


def without_padding(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The non-padding ids of ``features`` (``[B, L]``), row after row, and how many each row has (``int64[B]``)."""
    kept = features != PAD_ID
    return features[kept], kept.sum(1)


def unique_per_row(features: torch.Tensor) -> torch.Tensor:
    """A bag of ids with each id kept once per row (repeats become ``PAD_ID``; the order is not kept)."""
    ordered, _ = features.sort(dim=1)
    repeated = torch.zeros_like(ordered, dtype=torch.bool)
    repeated[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    return ordered.masked_fill(repeated, PAD_ID)


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
        if capturing_graph():
            return self.head(self.embedding(features))
        # The same means from the rows without their padding, one bag per row, with no padding_idx: torch's
        # padding_idx path takes 2-4x the time forward and backward on CPU (bit for bit the same results).
        ids, lengths = without_padding(features)
        bags = self.embedding
        means = F.embedding_bag(
            ids, bags.weight, torch.cumsum(lengths, 0) - lengths, mode=bags.mode, sparse=bags.sparse
        )
        return self.head(means)


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


@dataclass(frozen=True)
class FeatureRows:
    """A batch's NBSVM-view features, as :meth:`NBBagNet.nb_feature_rows` computes them once for the fits before
    training: each row's distinct feature ids, ascending, row after row (``ids``: ``int32[N]``, no padding), and
    how many each row has (``lengths``: ``int64[B]``)."""

    ids: torch.Tensor
    lengths: torch.Tensor

    def to(self, device: torch.device) -> FeatureRows:
        return FeatureRows(self.ids.to(device), self.lengths.to(device))

    def row_of_ids(self) -> torch.Tensor:
        """``int64[N]``: the row (``0..B-1``) each id belongs to."""
        return torch.repeat_interleave(torch.arange(len(self.lengths), device=self.ids.device), self.lengths)


class NBBagNet(nn.Module):
    """NBSVM as a network, plus the fastText view of :class:`BigramBagNet`; their logits add up.

    ``int[B, L]`` token ids -> ``float32[B, num_outputs]`` logits. The NBSVM view
    (Wang & Manning, 2012) scores the set of a review's distinct words and hashed
    2..``nb_ngrams``-grams: ``sum_f (w_f + weight_offset) * r_f / ratio_scale + b``, with
    ``r`` the naive-Bayes log-count ratio of each feature, fitted on the training data by
    :meth:`fit_nb_ratios` before training (one ratio per class against the rest above two
    classes), and ``w`` either learned (sparse) from 0 (the naive-Bayes interpolation) or set to the
    logistic regression :meth:`fit_nb_logistic` solves on those features (NBSVM proper), then
    learned further or kept fixed (:class:`~lightning_app.models.IMDBModule`'s ``nb_frozen``).
    ``r`` is the buffer ``nb_ratio`` and ``nb_ready`` says whether it was fitted; both travel
    in the state dict.

    Sizes: ``(vocab_size + nb_buckets) x num_outputs`` weights and ratios, plus the
    fastText view's ``(vocab_size + bigram_buckets) x embed_dim`` embedding. Use an
    optimizer that takes sparse gradients (Adagrad, SGD).
    """

    def __init__(
        self,
        vocab_size: int,
        num_outputs: int,
        nb_buckets: int = 1 << 24,
        nb_ngrams: int = 3,
        embed_dim: int = 16,
        bigram_buckets: int = 1 << 18,
        weight_offset: float = 0.4,
        ratio_scale: float = 10.0,
    ) -> None:
        super().__init__()
        self.vocab_size, self.nb_buckets, self.nb_ngrams = vocab_size, nb_buckets, nb_ngrams
        self.weight_offset, self.ratio_scale = weight_offset, ratio_scale
        self.nb_rows = vocab_size + nb_buckets
        self.nb_weight = nn.Embedding(self.nb_rows, num_outputs, padding_idx=PAD_ID, sparse=True)
        nn.init.zeros_(self.nb_weight.weight)
        self.nb_bias = nn.Parameter(torch.zeros(num_outputs))
        self.register_buffer("nb_ratio", torch.zeros(self.nb_rows, num_outputs))
        self.register_buffer("nb_ready", torch.tensor(False))
        self.bag = BigramBagNet(vocab_size, num_outputs, embed_dim=embed_dim, bigram_buckets=bigram_buckets)

    def nb_features(self, token_ids: torch.Tensor) -> torch.Tensor:
        """The distinct word and hashed n-gram ids of each row (``PAD_ID`` fills the rest): ``int64[B, ~nL]``."""
        ids = token_ids.long()
        ngrams = [
            hashed_ngrams(ids, n, self.nb_buckets, self.vocab_size, salt=2 * n + 1)
            for n in range(2, self.nb_ngrams + 1)
        ]
        return unique_per_row(torch.cat([ids, *ngrams], dim=1))

    def nb_feature_rows(self, token_ids: torch.Tensor) -> FeatureRows:
        """:meth:`nb_features` without the padding, compactly (int32: the table has fewer than 2^31 rows)."""
        ids, lengths = without_padding(self.nb_features(trim_padding(token_ids)))
        return FeatureRows(ids.int(), lengths)

    def nb_feature_counts(
        self, rows: FeatureRows, labels: torch.Tensor, num_classes: int, counts: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``float64[num_classes, vocab_size + nb_buckets]``: in how many of the batch's rows (:meth:`nb_feature_rows`)
        of each class (``labels``) every feature occurs.

        Given ``counts`` (such a tensor), the batch's counts are added into it in place and it is returned:
        a pass over many batches then touches only their features, never the whole table per batch.
        """
        if counts is None:
            counts = torch.zeros(num_classes, self.nb_rows, dtype=torch.float64, device=rows.ids.device)
        row_labels = labels.to(rows.ids.device)[rows.row_of_ids()]
        cells = row_labels * self.nb_rows + rows.ids  # (class, feature) -> position in the flattened table
        counts.view(-1).index_add_(0, cells, torch.ones_like(cells, dtype=torch.float64))
        return counts

    @torch.no_grad()
    def fit_nb_ratios(self, counts: torch.Tensor, alpha: float = 1.0) -> None:
        """Set ``nb_ratio`` from the summed :meth:`nb_feature_counts` of the training data, smoothed by ``alpha``.

        Two classes: ``log(p / |p|) - log(q / |q|)`` of class 1 (``p``) against class 0 (``q``); more:
        each class against the rest. A large ``alpha`` keeps rare n-grams, which point to their one
        review's label, from dominating.
        """
        # Row blocks keep the float64 temporaries small: whole-table ones took ~0.8 GB at 2^24 buckets.
        rows = counts.shape[1]
        class_sums = counts.sum(1)
        totals = class_sums + alpha * rows  # per class: the sum over features of (count + alpha)
        rest_totals = class_sums.sum() - class_sums + alpha * rows  # the same for all other classes
        for start in range(0, rows, NB_RATIO_BLOCK_ROWS):
            block = counts[:, start : start + NB_RATIO_BLOCK_ROWS]
            smoothed = block + alpha
            if counts.shape[0] == 2:
                ratio = (torch.log(smoothed[1] / totals[1]) - torch.log(smoothed[0] / totals[0]))[:, None]
            else:
                rest = block.sum(0, keepdim=True) - block + alpha
                ratio = (torch.log(smoothed / totals[:, None]) - torch.log(rest / rest_totals[:, None])).T
            self.nb_ratio[start : start + NB_RATIO_BLOCK_ROWS] = ratio.float()
        self.nb_ratio[PAD_ID] = 0.0
        self.nb_ready.fill_(True)

    def fit_nb_logistic(
        self,
        batches: Iterable[tuple[FeatureRows, torch.Tensor]],
        seen: torch.Tensor,
        c: float | Sequence[float] = 1.0,
        sum_over_processes: Callable[[torch.Tensor], torch.Tensor] = lambda total: total,
        max_iter: int = 100,
        score: Callable[[], float] | None = None,
    ) -> float:
        """Set the NBSVM view to NBSVM proper: its weights and bias become the L2-regularised logistic regression on
        the ratio-scaled features of the training rows in ``batches`` (``(feature_rows, labels)``, the rows from
        :meth:`nb_feature_rows`; two classes: one model, more: one per class against the rest, as scikit-learn's
        liblinear peers), solved by L-BFGS.

        Call after :meth:`fit_nb_ratios`. ``seen`` (``bool[vocab_size + nb_buckets]``, the same in every process)
        marks the features to fit (:class:`~lightning_app.models.IMDBModule`: those in at least two training texts,
        as the peers' ``min_df=2``); the others get a weight of zero, so features first seen at test time add
        nothing. ``c`` is the inverse regularisation strength (``0.5 |u|^2 + c * sum of losses``).
        In a multi-process run each process passes its share of the rows and ``sum_over_processes`` (a sum
        all-reduce): every process then takes the same L-BFGS steps.

        Several ``c`` with a ``score`` (say, the view's validation accuracy: higher is better, the same in every
        process): each is solved in increasing order, starting from the previous one's solution, the view set to it
        and scored; the view ends at the best-scoring ``c`` (the smallest of ties). Without ``score`` the middle
        value of the sorted ``c`` is fitted alone. Returns the ``c`` the view holds.
        """
        outputs = self.nb_ratio.shape[1]
        column = torch.cumsum(seen.long(), 0) - 1  # feature id -> position among the seen features
        entry_rows, columns, targets, count = [], [], [], 0
        with torch.no_grad():
            for rows, labels in batches:
                rows, labels = rows.to(seen.device), labels.to(seen.device)
                kept = seen[rows.ids]
                entry_rows.append(rows.row_of_ids()[kept] + count)
                # Row by row, each row's columns ascending and distinct (nb_features sorts them): CSR order as is.
                columns.append(column[rows.ids[kept]])
                targets.append(labels[:, None].float() if outputs == 1 else F.one_hot(labels, outputs).float())
                count += len(labels)
        used = int(seen.sum())
        row_of_entry = torch.cat(entry_rows)
        row_starts = torch.zeros(count + 1, dtype=torch.long, device=seen.device)
        row_starts[1:] = torch.cumsum(torch.bincount(row_of_entry, minlength=count), 0)
        entries = torch.cat(columns)
        ones = torch.ones(len(entries), device=seen.device)
        design = torch.sparse_csr_tensor(row_starts, entries, ones, (count, used))
        # The transpose in CSR (features x rows): the entries grouped by feature, rows ascending within each; a
        # stable int32 sort gives to_sparse_csc()'s arrays in half its time.
        by_feature = torch.sort(entries.int(), stable=True).indices
        feature_starts = torch.zeros(used + 1, dtype=torch.long, device=seen.device)
        feature_starts[1:] = torch.cumsum(torch.bincount(entries, minlength=used), 0)
        design_t = torch.sparse_csr_tensor(feature_starts, row_of_entry[by_feature], ones, (used, count))
        target = torch.cat(targets) if targets else torch.zeros(0, outputs, device=seen.device)
        ratio = self.nb_ratio[seen]
        weight = torch.zeros(used, outputs, device=seen.device, requires_grad=True)
        bias = torch.zeros(outputs, device=seen.device, requires_grad=True)

        @torch.no_grad()
        def objective(c: float) -> torch.Tensor:
            # The logistic loss's gradient written out: autograd through sparse products was 10x slower.
            logits = torch.sparse.mm(design, weight * ratio) + bias
            loss = F.binary_cross_entropy_with_logits(logits, target, reduction="sum")
            error = torch.sigmoid(logits) - target
            weight.grad = sum_over_processes(torch.sparse.mm(design_t, error) * ratio) + weight / c
            bias.grad = sum_over_processes(error.sum(0))
            return sum_over_processes(loss) + 0.5 * weight.square().sum() / c

        choices = sorted([c] if isinstance(c, (int, float)) else c)
        if score is None:
            choices = [choices[len(choices) // 2]]
        best: tuple[float, float, torch.Tensor, torch.Tensor] | None = None
        for choice in choices:
            solver = torch.optim.LBFGS(
                [weight, bias], max_iter=max_iter, history_size=10, line_search_fn="strong_wolfe"
            )
            solver.step(partial(objective, choice))
            self._set_nb_logistic(seen, weight.detach(), bias.detach())
            if len(choices) > 1:
                quality = score()
                if best is None or quality > best[1]:
                    best = (choice, quality, weight.detach().clone(), bias.detach().clone())
        if best is None:
            return choices[0]
        self._set_nb_logistic(seen, best[2], best[3])
        return best[0]

    @torch.no_grad()
    def _set_nb_logistic(self, seen: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Effective weights ``weight`` on the ``seen`` features (zero on the others) and the bias ``bias``."""
        # forward computes (w + weight_offset) * r / ratio_scale: pick w so that this is weight * r.
        self.nb_weight.weight.fill_(-self.weight_offset)
        self.nb_weight.weight[seen] = weight * self.ratio_scale - self.weight_offset
        self.nb_bias.copy_(bias)

    def nb_logits(self, token_ids: torch.Tensor) -> torch.Tensor:
        """The NBSVM view's logits alone: ``int[B, L]`` token ids -> ``float32[B, num_outputs]``."""
        features = self.nb_features(trim_padding(token_ids).long())
        present = (features != PAD_ID).unsqueeze(-1)
        weights = (self.nb_weight(features) + self.weight_offset) * self.nb_ratio[features] * present
        return weights.sum(1) / self.ratio_scale + self.nb_bias

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        ids = trim_padding(token_ids).long()
        return self.nb_logits(ids) + self.bag(ids)
