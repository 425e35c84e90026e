"""IMDB text task: tokenizers, vocabulary, encoding, reading errors, token cache, models, CLI and reload."""

from __future__ import annotations

import gzip
import json
import math
import random
import shutil
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from synthetic_data import FILLER, synthetic_reviews, write_tiny_data, write_tsv
from torch.utils.data import DataLoader

from datamodules import DataError, IMDBDataModule
from datamodules.base import PACKAGED_DATA_DIR, train_val_split
from datamodules.batches import BatchIndexedTensors, keep_batch
from datamodules.text_encoding import (
    PAD_ID,
    TOKENIZERS,
    UNK_ID,
    encode,
    encode_texts,
    tutorial_tokenize,
    vocabulary_from_counts,
    vocabulary_index,
    words_tokenize,
)
from datamodules.text_files import read_labeled_texts
from lightning_app import test as test_cli
from lightning_app.cli import run_cli
from lightning_app.export import export
from lightning_app.fit import main as fit_main
from lightning_app.models import IMDBModule
from lightning_app.nets import BigramBagNet, NBBagNet, TutorialTextCNN
from lightning_app.nets import text as text_nets
from lightning_app.nets.text import hashed_bigrams, hashed_ngrams, trim_padding, unique_per_row
from lightning_app.predict import main as predict_main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    return write_tiny_data(tmp_path / "data")


# -- tokenizers, vocabulary, encoding ---------------------------------------------------


def test_tutorial_tokenizer_lowercases_drops_breaks_and_punctuation() -> None:
    assert tutorial_tokenize("This is<br />GREAT,  isn't it?!") == ["this", "is", "great", "isnt", "it"]


def test_words_tokenizer_keeps_apostrophes_and_marks() -> None:
    assert words_tokenize("Don't<br/><br />STOP!! Great-ish, naïve?") == [
        "don't", "stop", "!", "!", "great", "ish", "naïve", "?",
    ]  # fmt: skip
    assert words_tokenize("") == []


def test_vocabulary_reserves_pad_and_unk_and_orders_by_frequency() -> None:
    docs = [["b", "a", "c", "a"], ["c", "a", "d", "<pad>", "<unk>"], ["e"]]
    counts = Counter(token for doc in docs for token in doc)
    vocab = vocabulary_from_counts(counts, max_size=5)
    assert vocab[PAD_ID] == "<pad>" and vocab[UNK_ID] == "<unk>"
    assert vocab == ["<pad>", "<unk>", "a", "c", "b"]  # a:3, c:2, then b/d/e tie at 1 -> alphabetical
    assert vocabulary_from_counts(counts, max_size=100, min_freq=2) == ["<pad>", "<unk>", "a", "c"]
    with pytest.raises(ValueError):
        vocabulary_from_counts(counts, max_size=1)


def test_encode_unknown_words_truncation_and_padding_sides() -> None:
    index = vocabulary_index(["<pad>", "<unk>", "a", "b", "c"])
    assert encode(["a", "zzz", "c"], index, 5) == [2, UNK_ID, 4, PAD_ID, PAD_ID]
    assert encode(["a", "b"], index, 4, pad="left") == [PAD_ID, PAD_ID, 2, 3]
    assert encode(["a", "b", "c"], index, 2) == [2, 3]  # truncate="right": keep the first tokens
    assert encode(["a", "b", "c"], index, 2, truncate="left") == [3, 4]  # keep the last (the tutorial)
    assert encode(["<pad>", "<unk>"], index, 2) == [UNK_ID, UNK_ID]  # literal reserved names are unknown words
    assert encode([], index, 3) == [PAD_ID] * 3


def test_encode_texts_accepts_empty_review() -> None:
    vocab = ["<pad>", "<unk>", "good"]
    state = {"tokenizer": "words", "vocabulary": vocab, "max_len": 4, "truncate": "right", "pad": "right"}
    ids = encode_texts(["", "Good, GOOD film"], state)
    assert ids.dtype == torch.int32
    assert ids.tolist() == [[0, 0, 0, 0], [2, 2, 1, 0]]


# -- reading files ----------------------------------------------------------------------


def test_bundled_files_keep_rows_with_nel_characters() -> None:
    labels, texts, _ = read_labeled_texts(PACKAGED_DATA_DIR / "imdb" / "train.tsv.gz")
    assert len(labels) == 24_996 and set(labels) == {"0", "1"}
    assert any("\x85" in text for text in texts)


def test_undecodable_bytes_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "train.tsv"
    path.write_bytes(b"label\ttext\n1\tfine\n0\tbad \xff byte\n")
    with pytest.raises(DataError, match=r"train\.tsv:3: not UTF-8") as err:
        read_labeled_texts(path)
    assert err.value.line == 3


def test_gzip_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "train.tsv.gz"
    path.write_bytes(gzip.compress(b'label\ttext\n1\t"Quoted" start\n'))
    assert read_labeled_texts(path) == (["1"], ['"Quoted" start'], [2])


def test_missing_label_column_names_file(tmp_path: Path) -> None:
    path = write_tsv(tmp_path / "train.tsv", [("1", "ok")], header="rating\tid\ttext")
    with pytest.raises(DataError, match=r"train\.tsv:1: missing column\(s\) \['label'\]"):
        read_labeled_texts(path)


def test_wrong_field_count_names_line(tmp_path: Path) -> None:
    path = tmp_path / "train.tsv"
    path.write_text("label\ttext\n1\tok\n0\ttoo\tmany\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.tsv:3: expected 2 tab-separated fields, found 3"):
        read_labeled_texts(path)


def test_unknown_test_label_names_file_and_line(tmp_path: Path) -> None:
    write_tsv(tmp_path / "train.tsv", synthetic_reviews(20, seed=1))
    write_tsv(tmp_path / "test.tsv", [("1", "good"), ("0", "bad"), ("2", "what")])
    dm = IMDBDataModule(data_dir=tmp_path, cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match=r"test\.tsv:4: unknown label '2'"):
        dm.setup("fit")


# -- DataModule -------------------------------------------------------------------------


def test_datamodule_vocabulary_from_train_part_only(tiny_data: Path, tmp_path: Path) -> None:
    dm = IMDBDataModule(data_dir=tiny_data, cache_dir=tmp_path / "cache", batch_size=16, max_len=48, val_fraction=0.25)
    dm.setup("fit")
    train_ids, _ = dm.train_set.all_rows()
    val_ids, _ = dm.val_set.all_rows()
    assert len(train_ids) == 150 and len(val_ids) == 50 and len(dm.test_set) == 80
    vocab = dm.preprocessing_state()["vocabulary"]
    # every review ends in a word of its own: train's are in the vocabulary, validation's are not
    unique_words = [word for word in vocab if word.startswith("w1x")]
    assert len(unique_words) == 150
    assert (val_ids == UNK_ID).sum(dim=1).min() >= 1
    assert dm.model_kwargs() == {"vocab_size": len(vocab), "num_classes": 2, "max_len": 48}
    assert dm.preprocessing_state()["class_names"] == ["negative", "positive"]
    json.dumps(dm.preprocessing_state())
    token_ids, labels = next(iter(dm.train_dataloader()))
    assert token_ids.shape == (16, 48) and token_ids.dtype == torch.int32 and labels.dtype == torch.int64
    assert len(dm.val_examples) == 8 and all(isinstance(text, str) for text, _ in dm.val_examples)
    first, state = dm.train_set, dm.preprocessing_state()
    dm.setup("test")  # a second setup keeps the same splits
    assert dm.train_set is first and dm.preprocessing_state() == state


def test_token_cache_is_reused_and_invalidated(tiny_data: Path, tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    first = IMDBDataModule(data_dir=tiny_data, cache_dir=cache, max_len=32)
    first.setup("fit")
    assert first.cache_reused is False

    def no_tokenising(text: str) -> list[str]:
        raise AssertionError("a cached run must not tokenise")

    monkeypatch.setitem(TOKENIZERS, "words", no_tokenising)
    second = IMDBDataModule(data_dir=tiny_data, cache_dir=cache, max_len=32)
    second.setup("fit")
    assert second.cache_reused is True
    assert torch.equal(first.train_set.all_rows()[0], second.train_set.all_rows()[0])
    assert first.preprocessing_state() == second.preprocessing_state()
    assert second.val_examples == first.val_examples
    monkeypatch.undo()

    other_settings = IMDBDataModule(data_dir=tiny_data, cache_dir=cache, max_len=16)
    other_settings.setup("fit")
    assert other_settings.cache_reused is False
    other_tokenizer = IMDBDataModule(data_dir=tiny_data, cache_dir=cache, max_len=32, tokenizer="tutorial")
    other_tokenizer.setup("fit")
    assert other_tokenizer.cache_reused is False

    write_tsv(tiny_data / "train.tsv", synthetic_reviews(200, seed=3))  # the data changed: rebuild
    changed = IMDBDataModule(data_dir=tiny_data, cache_dir=cache, max_len=32)
    changed.setup("fit")
    assert changed.cache_reused is False
    assert any(word.startswith("w3x") for word in changed.preprocessing_state()["vocabulary"])


def bundled_sample(folder: Path, train_rows: int = 300, test_rows: int = 100) -> Path:
    """The first rows of the bundled reviews (real punctuation, ``<br />``, NEL characters), plus an empty review
    and one with no words, as ``train.tsv``/``test.tsv`` in ``folder``."""
    folder.mkdir()
    for split, count in (("train", train_rows), ("test", test_rows)):
        labels, texts, _ = read_labeled_texts(PACKAGED_DATA_DIR / "imdb" / f"{split}.tsv.gz")
        rows = [*zip(labels[:count], texts[:count], strict=True), ("0", ""), ("1", "!!! ... ???")]
        (folder / f"{split}.tsv").write_text("label\ttext\n" + "".join(f"{label}\t{text}\n" for label, text in rows))
    return folder


@pytest.mark.parametrize("tokenizer", ["words", "tutorial"])
@pytest.mark.parametrize(
    ("truncate", "pad"), [("right", "right"), ("left", "left"), ("right", "left"), ("left", "right")]
)
def test_streamed_cache_serves_the_batches_of_in_memory_encoding(
    tmp_path: Path, tokenizer: str, truncate: str, pad: str
) -> None:
    """The cache (unpadded ids, vocabulary counted while streaming) gives, batch for batch, what encoding every review
    in memory gives: the vocabulary of :func:`vocabulary_from_counts` on the train part, the padded ids of
    :func:`encode_texts`, the labels, and with a seed the same shuffled training batches as a DataLoader over them."""
    data = bundled_sample(tmp_path / "data")
    settings = {"max_len": 64, "vocab_size": 700, "min_freq": 2, "tokenizer": tokenizer, "truncate": truncate}
    dm = IMDBDataModule(
        data_dir=data, cache_dir=tmp_path / "cache", batch_size=32, val_fraction=0.2, pad=pad, **settings
    )
    dm.setup("fit")

    labels, texts, _ = read_labeled_texts(data / "train.tsv")
    test_labels, test_texts, _ = read_labeled_texts(data / "test.tsv")
    train_index, val_index = train_val_split(len(texts), 0.2, dm.hparams.seed, data / "train.tsv")
    tokenize = TOKENIZERS[tokenizer]
    train_counts = Counter(token for i in train_index.tolist() for token in tokenize(texts[i]))
    vocabulary = vocabulary_from_counts(train_counts, 700, min_freq=2)
    state = {**dm.preprocessing_state()}
    assert state["vocabulary"] == vocabulary and len(vocabulary) == 700
    ids = encode_texts(texts, state)
    assert (ids[:, -1 if pad == "right" else 0] == PAD_ID).any() and (ids != PAD_ID).all(dim=1).any()  # both cases

    expected = {
        "train": (ids[train_index], torch.tensor([int(label) for label in labels])[train_index]),
        "val": (ids[val_index], torch.tensor([int(label) for label in labels])[val_index]),
        "test": (
            encode_texts([test_texts[i] for i in dm.test_order.tolist()], state),
            torch.tensor([int(label) for label in test_labels])[dm.test_order],
        ),
    }
    for split, dataset in (("train", dm.train_set), ("val", dm.val_set), ("test", dm.test_set)):
        got = dataset.all_rows()
        assert got[0].dtype == torch.int32 and torch.equal(got[0], expected[split][0]), split
        assert torch.equal(got[1], expected[split][1]), split

    in_memory = DataLoader(BatchIndexedTensors(*expected["train"]), batch_size=32, shuffle=True, collate_fn=keep_batch)
    for loader in (dm.train_dataloader(), DataLoader(dm.train_set, batch_size=32, shuffle=True, collate_fn=keep_batch)):
        torch.manual_seed(5)
        want = [batch for _ in range(2) for batch in in_memory]
        torch.manual_seed(5)
        got = [batch for _ in range(2) for batch in loader]
        assert len(got) == len(want) == 2 * math.ceil(len(train_index) / 32)
        assert all(
            torch.equal(g, w)
            for got_batch, want_batch in zip(got, want, strict=True)
            for g, w in zip(got_batch, want_batch, strict=True)
        )


def test_cache_is_memory_mapped_and_a_second_setup_reuses_it(tiny_data: Path, tmp_path: Path) -> None:
    first = IMDBDataModule(data_dir=tiny_data, cache_dir=tmp_path / "cache", max_len=32)
    first.setup("fit")
    entry = next((tmp_path / "cache" / "imdb").glob("tokens-*/"))
    assert sorted(path.name for path in entry.iterdir() if path.name.startswith("train_"))[:2] == [
        "train_ids.bin", "train_index.bin"
    ]  # fmt: skip
    assert not [path for path in entry.iterdir() if "scratch" in path.name]  # working files are gone
    mapped = {line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines()}
    assert str(entry / "train_ids.bin") in mapped  # memory-mapped, not read into memory
    again = IMDBDataModule(data_dir=tiny_data, cache_dir=tmp_path / "cache", max_len=32)
    again.setup("fit")
    assert again.cache_reused is True
    assert torch.equal(again.val_set.all_rows()[0], first.val_set.all_rows()[0])


def test_multiclass_labels_are_sorted(tmp_path: Path) -> None:
    labels = ("10", "2", "mixed")
    write_tsv(tmp_path / "train.tsv", synthetic_reviews(30, seed=1, labels=labels))
    write_tsv(tmp_path / "test.tsv", synthetic_reviews(9, seed=2, labels=labels))
    dm = IMDBDataModule(data_dir=tmp_path, cache_dir=tmp_path / "cache")
    dm.setup("fit")
    state = dm.preprocessing_state()
    assert state["label_values"] == ["10", "2", "mixed"]  # not all integers -> alphabetical
    assert state["class_names"] == state["label_values"] and dm.model_kwargs()["num_classes"] == 3
    write_tsv(tmp_path / "train.tsv", synthetic_reviews(30, seed=1, labels=("10", "2", "3")))
    write_tsv(tmp_path / "test.tsv", synthetic_reviews(9, seed=2, labels=("10", "2", "3")))
    dm = IMDBDataModule(data_dir=tmp_path, cache_dir=tmp_path / "cache")
    dm.setup("fit")
    assert dm.preprocessing_state()["label_values"] == ["2", "3", "10"]  # all integers -> numeric order


# -- networks and module ------------------------------------------------------------------


def test_tutorial_cnn_shapes() -> None:
    net = TutorialTextCNN(vocab_size=10_000, max_len=200)
    assert net.linear.in_features == 6144
    assert net.embedding.padding_idx == PAD_ID
    assert net(torch.randint(0, 10_000, (3, 200), dtype=torch.int32)).shape == (3, 1)


def test_bigram_bag_hashing_and_empty_input() -> None:
    ids = torch.tensor([[5, 7, 5, 7, 0, 0]])
    bigrams = hashed_bigrams(ids, buckets=100, offset=50)
    assert bigrams[0, 0] == bigrams[0, 2] != bigrams[0, 1]  # same pair -> same bucket
    assert bigrams[0, 3:].tolist() == [PAD_ID, PAD_ID] and bigrams[0, :3].ge(50).all()
    net = BigramBagNet(vocab_size=50, num_outputs=1, embed_dim=4, bigram_buckets=100)
    empty = net(torch.zeros(2, 6, dtype=torch.int32))
    assert torch.allclose(empty, net.head.bias.expand(2, 1))


@pytest.mark.filterwarnings("ignore:`torch.jit.\\w+` is deprecated:FutureWarning")
@pytest.mark.filterwarnings("ignore:Converting a tensor to a Python boolean:torch.jit.TracerWarning")
def test_bigram_bag_means_equal_the_padding_idx_bags_bit_for_bit() -> None:
    """The bag's rows without their padding give torch's padding_idx means and sparse gradients exactly."""
    torch.manual_seed(0)
    net = BigramBagNet(vocab_size=40, num_outputs=2, embed_dim=3, bigram_buckets=30)
    ids = torch.randint(1, 40, (5, 9))
    ids[1, 4:] = PAD_ID
    ids[3] = PAD_ID  # an empty row
    features = torch.cat([ids, hashed_bigrams(ids, 30, 40)], dim=1)
    upstream = torch.randn(5, 2)
    (net(ids) * upstream).sum().backward()
    ours = net.embedding.weight.grad.to_dense()
    net.zero_grad()
    reference = net.head(net.embedding(features))  # nn.EmbeddingBag(padding_idx=PAD_ID) on the padded rows
    (reference * upstream).sum().backward()
    assert torch.equal(net(ids), reference)
    assert torch.equal(ours, net.embedding.weight.grad.to_dense()) and ours.abs().sum() > 0
    traced = torch.jit.trace(net, ids)  # a traced graph takes the padded rows as they are: no content-bound shapes
    other = ids.flip(0)
    other[0, 2:] = PAD_ID
    assert torch.equal(traced(other), net(other))


def test_nb_view_gradient_holds_no_padding_rows() -> None:
    """Padding's features (masked out of the logits) add no rows to the sparse gradient the optimizer steps on."""
    net = NBBagNet(vocab_size=20, num_outputs=1, nb_buckets=32, embed_dim=2, bigram_buckets=8)
    net(torch.tensor([[3, 4, 5, 0, 0], [6, 0, 0, 0, 0]])).sum().backward()
    rows = net.nb_weight.weight.grad.coalesce().indices()[0].tolist()
    assert PAD_ID not in rows and {3, 4, 5, 6} <= set(rows)


def test_ngram_hashing_unique_features_and_trimming() -> None:
    ids = torch.tensor([[5, 7, 9, 5, 7, 9, 0, 0]])
    trigrams = hashed_ngrams(ids, 3, buckets=1000, offset=50, salt=7)
    assert trigrams[0, 0] == trigrams[0, 3] and trigrams[0, 4:].eq(PAD_ID).all()  # windows touching padding
    assert torch.equal(hashed_ngrams(ids, 2, 100, 50), hashed_bigrams(ids, 100, 50))
    assert sorted(unique_per_row(torch.tensor([[3, 1, 3, 0, 2]]))[0].tolist()) == [0, 0, 1, 2, 3]
    assert trim_padding(ids).shape == (1, 6) and trim_padding(torch.zeros(2, 4, dtype=torch.long)).shape == (2, 1)


def test_nb_ratios_are_the_smoothed_log_count_ratios() -> None:
    net = NBBagNet(vocab_size=6, num_outputs=1, nb_buckets=8, nb_ngrams=1, embed_dim=2, bigram_buckets=4)
    ids = torch.tensor([[2, 2, 3, 0], [2, 4, 0, 0], [5, 0, 0, 0]])
    counts = net.nb_feature_counts(net.nb_feature_rows(ids), torch.tensor([1, 1, 0]), num_classes=2)
    assert counts[1, 2] == 2 and counts[1, 3] == 1 and counts[0, 5] == 1 and counts[:, PAD_ID].sum() == 0
    # Added in place batch by batch, the counts equal those of the whole set at once.
    accumulated = net.nb_feature_counts(net.nb_feature_rows(ids[:2]), torch.tensor([1, 1]), num_classes=2)
    more = net.nb_feature_rows(ids[2:])
    assert net.nb_feature_counts(more, torch.tensor([0]), num_classes=2, counts=accumulated) is accumulated
    assert torch.equal(accumulated, counts)
    net.fit_nb_ratios(counts, alpha=1.0)
    positive, negative = counts[1] + 1, counts[0] + 1
    expected = torch.log(positive / positive.sum()) - torch.log(negative / negative.sum())
    assert net.nb_ratio[2, 0] == pytest.approx(float(expected[2])) and net.nb_ratio[PAD_ID, 0] == 0
    assert bool(net.nb_ready)
    three = NBBagNet(vocab_size=6, num_outputs=3, nb_buckets=8, nb_ngrams=2, embed_dim=2, bigram_buckets=4)
    three.fit_nb_ratios(three.nb_feature_counts(three.nb_feature_rows(ids), torch.tensor([0, 1, 2]), num_classes=3))
    assert three.nb_ratio.shape == (14, 3) and three(ids).shape == (3, 3)


@pytest.mark.parametrize("num_classes", [2, 3])
def test_nb_ratios_fitted_block_by_block_equal_the_whole_table_formula(monkeypatch, num_classes) -> None:
    monkeypatch.setattr(text_nets, "NB_RATIO_BLOCK_ROWS", 5)  # 14 rows: three blocks, the last one short
    net = NBBagNet(vocab_size=6, num_outputs=1 if num_classes == 2 else num_classes, nb_buckets=8, embed_dim=2)
    counts = torch.randint(0, 50, (num_classes, 14), generator=torch.Generator().manual_seed(0)).double()
    net.fit_nb_ratios(counts, alpha=2.0)
    smoothed = counts + 2.0
    if num_classes == 2:
        expected = (smoothed[1] / smoothed[1].sum()).log() - (smoothed[0] / smoothed[0].sum()).log()
        expected = expected[:, None]
    else:
        rest = counts.sum(0, keepdim=True) - counts + 2.0
        expected = ((smoothed / smoothed.sum(1, keepdim=True)).log() - (rest / rest.sum(1, keepdim=True)).log()).T
    expected[PAD_ID] = 0.0
    torch.testing.assert_close(net.nb_ratio, expected.float())


def _fitted_nb_logistic(
    num_classes: int, c: float | tuple[float, ...], copies: int = 1, score: Callable[[], float] | None = None
) -> tuple[NBBagNet, torch.Tensor, list]:
    """An NBBagNet whose NBSVM view is fitted on 60 random rows (labels follow the first token), and
    ``[rows, labels, the c fit_nb_logistic returned]``."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(2, 30, (60, 8), generator=generator)
    ids[::4, 6:] = PAD_ID
    labels = ids[:, 0] % num_classes
    outputs = 1 if num_classes == 2 else num_classes
    net = NBBagNet(vocab_size=30, num_outputs=outputs, nb_buckets=128, nb_ngrams=2, embed_dim=2, bigram_buckets=4)
    batches = [(net.nb_feature_rows(ids[:25]), labels[:25]), (net.nb_feature_rows(ids[25:]), labels[25:])]
    counts = sum(net.nb_feature_counts(part, part_labels, num_classes) for part, part_labels in batches)
    net.fit_nb_ratios(counts, alpha=1.0)
    seen = counts.sum(0) >= 2
    chosen = net.fit_nb_logistic(batches, seen, c=c, sum_over_processes=lambda total: copies * total, score=score)
    return net, seen, [ids, labels, chosen]


@pytest.mark.parametrize("num_classes", [2, 3])
def test_nb_logistic_fit_reaches_the_regularised_optimum_and_leaves_unseen_features_out(num_classes) -> None:
    net, seen, (ids, labels, _) = _fitted_nb_logistic(num_classes, c=0.5)
    # The view's effective weights u (forward adds (w + offset) * r / scale): the objective's gradient is ~0.
    u = ((net.nb_weight.weight + net.weight_offset) / net.ratio_scale).detach().requires_grad_()
    bias = net.nb_bias.detach().clone().requires_grad_()
    features = net.nb_features(ids)
    present = (features != PAD_ID).unsqueeze(-1)
    logits = (u[features] * net.nb_ratio[features] * present).sum(1) + bias
    target = labels[:, None].float() if num_classes == 2 else torch.nn.functional.one_hot(labels).float()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="sum")
    (loss + 0.5 * u[seen].square().sum() / 0.5).backward()
    assert u.grad[seen].abs().max() < 5e-3 and bias.grad.abs().max() < 5e-3  # a loss of ~40: converged
    assert torch.all(u[~seen] == 0), "features seen in fewer than two rows (or never) add nothing"
    assert u[seen].abs().sum() > 0
    accuracy = ((logits > 0).long().squeeze(-1) if num_classes == 2 else logits.argmax(-1)) == labels
    assert accuracy.float().mean() >= 0.8  # chance: 1 / num_classes


def test_nb_logistic_fit_sums_the_processes_shares() -> None:
    # Two processes holding the same rows sum to the loss of every row twice: the optimum of c = 0.5 on one copy
    # is that of c = 1 on one process (0.5 |u|^2 / c + 2 L = 2 (0.5 |u|^2 / (2c) + L)).
    doubled, _, _ = _fitted_nb_logistic(2, c=0.5, copies=2)
    single, _, _ = _fitted_nb_logistic(2, c=1.0)
    torch.testing.assert_close(doubled.nb_weight.weight, single.nb_weight.weight, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize(("scores", "expected"), [((0.5, 0.9, 0.7), 1.0), ((0.8, 0.8, 0.8), 0.1), (None, 1.0)])
def test_nb_logistic_fit_keeps_the_c_that_scores_best(scores, expected) -> None:
    # Solved in increasing order, each from the previous solution; without a score the middle c is fitted alone.
    scored = iter(scores or ())
    score = (lambda: next(scored)) if scores else None
    chosen_net, _, (_, _, chosen) = _fitted_nb_logistic(2, c=(10.0, 0.1, 1.0), score=score)
    assert chosen == expected and next(scored, None) is None  # scored once per c
    alone, _, _ = _fitted_nb_logistic(2, c=expected)
    # The same optimum up to L-BFGS's tolerance (compared as effective weights, which the view scales by 10).
    scale = alone.ratio_scale
    torch.testing.assert_close(chosen_net.nb_weight.weight / scale, alone.nb_weight.weight / scale, atol=1e-3, rtol=0)
    torch.testing.assert_close(chosen_net.nb_bias, alone.nb_bias, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize(
    "labels",
    # Three classes train 11 s: run in the slow stage; the fast suite keeps two string labels and test_cli_multiclass.
    [("neg", "pos"), pytest.param(("sports", "politics", "weather"), marks=pytest.mark.slow)],
)
def test_default_model_learns_short_separable_sentences_with_string_labels(tmp_path: Path, labels, capsys) -> None:
    cues = {label: [f"{label}{k}" for k in range(6)] for label in labels}
    rng = random.Random(0)

    def sentences(n: int) -> list[tuple[str, str]]:
        rows = []
        for i in range(n):
            label = labels[i % len(labels)]
            words = [rng.choice(FILLER) for _ in range(rng.randint(2, 5))] + [rng.choice(cues[label])]
            rng.shuffle(words)
            rows.append((label, " ".join(words)))
        return rows

    data = tmp_path / "data"
    data.mkdir()
    write_tsv(data / "train.tsv", sentences(240))
    write_tsv(data / "test.tsv", sentences(90))
    best = _fit(data, tmp_path)  # the registry's default model and epochs
    assert float(capsys.readouterr().out.split("test/acc")[1].split()[0]) >= 0.9
    module = IMDBModule.load_from_checkpoint(best)
    assert module.hparams.net == "nb_bag" and bool(module.net.nb_ready)
    assert module.class_names == sorted(labels)
    (result,) = module.predict_raw([f"the {cues[labels[1]][0]} story"])
    assert result["label"] == labels[1]


def test_module_multiclass_step_and_predict_raw() -> None:
    state = {
        "tokenizer": "words", "vocabulary": ["<pad>", "<unk>", "good", "bad"], "max_len": 6, "truncate": "right",
        "pad": "right", "label_values": ["a", "b", "c"], "class_names": ["a", "b", "c"],
    }  # fmt: skip
    module = IMDBModule(vocab_size=4, num_classes=3, max_len=6, embed_dim=4, bigram_buckets=16, preprocessing=state)
    out = module.shared_step((torch.tensor([[2, 3, 0, 0, 0, 0]]), torch.tensor([2])))
    assert out["preds"].shape == (1, 3) and torch.allclose(out["preds"].sum(), torch.tensor(1.0))
    results = module.predict_raw(["good", ""])
    assert [set(r["probabilities"]) for r in results] == [{"a", "b", "c"}] * 2
    assert module.training  # predict_raw restores the mode


# -- CLI end to end and reload in a fresh process -----------------------------------------


def _fit(data: Path, tmp_path: Path, *extra: str) -> Path:
    argv = ["--task", "imdb", "--data-dir", str(data), "--cache-dir", str(tmp_path / "cache")]
    argv += ["--log-dir", str(tmp_path / "runs"), "--no-progress-bar", "--batch-size", "8", *extra]
    assert run_cli(fit_main, argv) == 0
    return next((tmp_path / "runs" / "imdb").glob("version_*/checkpoints/best-*.ckpt"))


def test_several_c_are_chosen_among_on_validation_and_the_checkpoint_records_the_choice(tiny_fit, tmp_path) -> None:
    choices = [0.3, 1.0, 3.0]
    data = write_tiny_data(tmp_path / "data")
    result = tiny_fit("imdb", data_dir=str(data), max_epochs=1, batch_size=8, module_kwargs={"nb_c": choices})
    saved = torch.load(result.best_model_path, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert saved["nb_c"] in choices


@pytest.mark.parametrize("frozen", [True, False])
def test_the_fitted_nbsvm_view_is_left_out_of_the_optimizer_when_frozen(frozen: bool) -> None:
    module = IMDBModule(vocab_size=8, nb_buckets=16, bigram_buckets=4, embed_dim=2, nb_frozen=frozen)
    optimized = {id(parameter) for group in module.configure_optimizers().param_groups for parameter in group["params"]}
    assert (id(module.net.nb_weight.weight) in optimized) is not frozen
    assert id(module.net.nb_bias) in optimized and id(module.net.bag.embedding.weight) in optimized


def test_cli_trains_logs_and_reloads_in_fresh_process(trained_imdb: tuple[Path, str]) -> None:
    best, summary = trained_imdb
    test_acc = float(summary.split("test/acc")[1].split()[0])
    assert test_acc >= 0.9, summary
    assert "test/auroc" in summary and "test/f1" in summary

    events = b"".join(path.read_bytes() for path in best.parent.parent.glob("events.out.tfevents.*"))
    assert b"val/examples" in events and b"val/pr_curve" in events

    checkpoint = torch.load(best, weights_only=True, map_location="cpu")
    assert checkpoint["preprocessing"]["vocabulary"][:2] == ["<pad>", "<unk>"]
    in_process = IMDBModule.load_from_checkpoint(best).predict_raw(["A superb, moving film.", ""])

    script = textwrap.dedent(
        f"""
        import json
        from lightning_app.models import IMDBModule
        model = IMDBModule.load_from_checkpoint({str(best)!r}, map_location="cpu")
        print(json.dumps(model.predict_raw(["An awful, boring waste of time.", "A superb, moving film.", ""])))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    negative, positive, empty = json.loads(done.stdout.strip().splitlines()[-1])
    assert negative["label"] == "negative" and positive["label"] == "positive"
    assert positive["probability"] == pytest.approx(in_process[0]["probability"], abs=1e-6)
    assert 0.0 <= empty["probability"] <= 1.0


def test_cli_tutorial_variant_runs(tiny_data: Path, tmp_path: Path, capsys) -> None:
    best = _fit(tiny_data, tmp_path, "--model", "tutorial", "--max-epochs", "1")
    assert "test/acc" in capsys.readouterr().out
    module = IMDBModule.load_from_checkpoint(best)
    assert module.hparams.net == "tutorial_cnn" and module.preprocessing["truncate"] == "left"
    assert module.predict_raw([""])[0]["label"] in ("negative", "positive")


def test_cli_multiclass_data_dir(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    data.mkdir()
    labels = ("0", "1", "mixed")
    write_tsv(data / "train.tsv", synthetic_reviews(90, seed=1, labels=labels))
    write_tsv(data / "test.tsv", synthetic_reviews(30, seed=2, labels=labels))
    with pytest.warns(UserWarning, match=r"^val: .* cannot be computed and are reported as NaN"):
        best = _fit(data, tmp_path, "--max-epochs", "1")  # the 9 validation reviews miss a class
    summary = capsys.readouterr().out
    assert "test/auroc" in summary and "test/f1" in summary
    module = IMDBModule.load_from_checkpoint(best)
    assert module.hparams.num_classes == 3
    (result,) = module.predict_raw(["superb but boring"])
    assert set(result["probabilities"]) == set(labels)
    assert sum(result["probabilities"].values()) == pytest.approx(1.0)


def test_cli_reports_bad_data_with_file_and_line(tmp_path: Path, capsys) -> None:
    write_tsv(tmp_path / "train.tsv", [("1", "ok")], header="rating\tid\ttext")
    write_tsv(tmp_path / "test.tsv", [("1", "ok")])
    argv = ["--task", "imdb", "--data-dir", str(tmp_path), "--cache-dir", str(tmp_path / "cache")]
    assert run_cli(fit_main, [*argv, "--log-dir", str(tmp_path / "runs")]) == 1
    assert f"{tmp_path / 'train.tsv'}:1: missing column(s) ['label']" in capsys.readouterr().err


def test_raw_test_reviews_score_as_the_encoded_test_batches(scored_fresh, rows_match) -> None:
    """The test TSV's review texts scored by ``predict_raw`` from the checkpoint reloaded in a fresh process give,
    row for row, the probabilities of the DataModule's encoded test batches (tokenizer, vocabulary, padding and
    truncation at prediction time are training's)."""
    scored = scored_fresh["imdb"]
    assert len(scored["raw"]) == 80
    rows_match(scored["encoded"], scored["raw"])
    rows_match(scored["encoded_outputs"], scored["raw_outputs"])


# -- test order: a fixed seeded shuffle, so a limited test run sees every class --------------------------


def label_sorted_reviews(n: int, seed: int) -> list[tuple[str, str]]:
    return sorted(synthetic_reviews(n, seed), key=lambda row: row[0])


def test_test_order_is_a_fixed_seeded_shuffle_so_the_first_batch_holds_both_classes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write_tsv(data / "train.tsv", synthetic_reviews(60, seed=1))
    write_tsv(data / "test.tsv", label_sorted_reviews(80, seed=2))  # 40 negatives, then 40 positives
    file_labels = torch.tensor([int(label) for label in read_labeled_texts(data / "test.tsv")[0]])

    def ready(cache: str, seed: int = 42) -> IMDBDataModule:
        datamodule = IMDBDataModule(data_dir=data, cache_dir=tmp_path / cache, batch_size=8, seed=seed)
        datamodule.setup("test")
        return datamodule

    first, rebuilt, other_seed = ready("a"), ready("b"), ready("c", seed=7)
    assert sorted(first.test_order.tolist()) == list(range(80))
    assert torch.equal(first.test_set.labels, file_labels[first.test_order])  # labels move with their reviews
    assert set(next(iter(first.test_dataloader()))[1].tolist()) == {0, 1}
    assert torch.equal(rebuilt.test_order, first.test_order) and not rebuilt.cache_reused
    assert torch.equal(rebuilt.test_set.all_rows()[0], first.test_set.all_rows()[0])
    assert not torch.equal(other_seed.test_order, first.test_order)


def test_full_split_metrics_do_not_depend_on_the_test_order(trained_imdb, monkeypatch, tmp_path, capsys) -> None:
    """The test command (shuffled test set) reports what the file-order predictions give."""
    from torchmetrics.functional.classification import binary_accuracy, binary_auroc, binary_f1_score

    monkeypatch.setenv("LIGHTNING_APP_CACHE", str(tmp_path / "environment-cache"))
    best, _ = trained_imdb
    data = best.parents[4] / "data"
    argv = ["--task", "imdb", "--ckpt", str(best), "--data-dir", str(data), "--cache-dir", str(tmp_path / "cache")]
    assert run_cli(test_cli.main, [*argv, "--format", "json"]) == 0
    assert any((tmp_path / "cache").iterdir()) and not (tmp_path / "environment-cache").exists()  # --cache-dir wins
    reported = json.loads(capsys.readouterr().out)
    labels, texts, _ = read_labeled_texts(data / "test.tsv")
    target = torch.tensor([int(label) for label in labels])
    preds = torch.tensor(
        [r["probabilities"]["positive"] for r in IMDBModule.load_from_checkpoint(best).predict_raw(texts)]
    )
    expected = {
        "test/acc": binary_accuracy(preds, target),
        "test/auroc": binary_auroc(preds, target),
        "test/f1": binary_f1_score(preds, target),
        "test/loss": torch.nn.functional.binary_cross_entropy(preds, target.float()),
    }
    for key, value in expected.items():
        assert reported[key] == pytest.approx(float(value), rel=1e-5, abs=1e-6), key


@pytest.mark.parametrize("rows", ["label_sorted", "positives_only"])
def test_limited_test_run_reports_auroc_only_when_both_classes_are_scored(
    trained_imdb, monkeypatch, tmp_path, capsys, rows
) -> None:
    monkeypatch.setenv("LIGHTNING_APP_CACHE", str(tmp_path / "cache"))
    best, _ = trained_imdb
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(best.parents[4] / "data" / "train.tsv", data / "train.tsv")
    reviews = label_sorted_reviews(80, seed=3)
    write_tsv(data / "test.tsv", reviews if rows == "label_sorted" else [row for row in reviews if row[0] == "1"])
    argv = ["--task", "imdb", "--ckpt", str(best), "--data-dir", str(data), "--format", "json"]
    argv += ["--batch-size", "8", "--limit-test-batches", "1"]
    if rows == "label_sorted":
        assert run_cli(test_cli.main, argv) == 0
        reported = json.loads(capsys.readouterr().out)
        assert 0.0 <= reported["test/auroc"] <= 1.0  # the first 8 rows of the seeded order hold both classes
    else:
        with pytest.warns(UserWarning) as caught:
            assert run_cli(test_cli.main, argv) == 0
        reported = json.loads(capsys.readouterr().out)
        assert math.isnan(reported["test/auroc"]), reported  # not 0
        assert math.isfinite(reported["test/f1"]) and math.isfinite(reported["test/acc"])
        messages = [str(w.message) for w in caught.list if "cannot be computed" in str(w.message)]
        assert messages == [
            "test: the test examples (8) hold no example of class(es) negative; "
            "test/auroc cannot be computed and are reported as NaN"
        ]


def test_cache_dir_flag_reaches_only_datamodules_that_take_it() -> None:
    from lightning_app.registry import get_task
    from lightning_app.training import accepts_argument

    assert accepts_argument(get_task("imdb").datamodule, "cache_dir")
    assert not accepts_argument(get_task("titanic").datamodule, "cache_dir")


def test_missing_split_file_is_named(tmp_path: Path) -> None:
    write_tsv(tmp_path / "train.tsv", synthetic_reviews(10, seed=1))
    with pytest.raises(DataError, match=r"test\.tsv: file not found \(expected 'test\.tsv' or 'test\.tsv\.gz'"):
        IMDBDataModule(data_dir=tmp_path, cache_dir=tmp_path / "cache").prepare_data()


# -- using the trained model: predict and export ----------------------------------------------------


def test_predict_cli_scores_arguments_and_a_file_of_reviews(trained_imdb, tmp_path: Path, capsys) -> None:
    best, _ = trained_imdb
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("A superb, moving film.\nAn awful\u0085boring waste of time.\n\n", encoding="utf-8")
    argv = ["--task", "imdb", "--ckpt", str(best), "Wonderful acting and a great story.", "--input-file", str(reviews)]
    assert run_cli(predict_main, [*argv, "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["text"] for r in records] == [
        "Wonderful acting and a great story.",
        "A superb, moving film.",
        "An awful\u0085boring waste of time.",  # split on newlines only: U+0085 stays inside its review
        "",  # a blank line keeps its row, unscored
    ]
    assert (records[-1]["label"], records[-1]["probability"]) == (None, None)
    expected = IMDBModule.load_from_checkpoint(best).predict_raw([r["text"] for r in records[:-1]])
    assert [r["label"] for r in records[:-1]] == [e["label"] for e in expected]
    assert [r["probability"] for r in records[:-1]] == pytest.approx([e["probability"] for e in expected])

    assert run_cli(predict_main, argv[:4]) == 2
    assert "give review texts as arguments or --input-file" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:`torch.jit.\\w+` is deprecated:FutureWarning")
@pytest.mark.parametrize("output_format", ["torchscript", "onnx"])
def test_export_matches_the_module(trained_imdb, tmp_path: Path, output_format: str, run_exported) -> None:
    best, _ = trained_imdb
    target = export(best, output_format, tmp_path / "exported")
    module = IMDBModule.load_from_checkpoint(best, map_location="cpu").eval()
    token_ids = torch.randint(0, module.hparams.vocab_size, (3, module.hparams.max_len), dtype=torch.int32)
    token_ids[0] = 0  # an empty review: all padding
    with torch.no_grad():
        expected = module.predict_step((token_ids,), 0)
    assert torch.allclose(run_exported(target, output_format, token_ids), expected, atol=1e-5)
    assert json.loads((target / "preprocessing.json").read_text())["preprocessing"]["vocabulary"][:2] == [
        "<pad>",
        "<unk>",
    ]
