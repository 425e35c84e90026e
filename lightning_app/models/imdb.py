"""IMDB review classification LightningModule."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import Any, Literal

import torch
from torch import nn

from datamodules.imdb import encode_texts, vocabulary_index
from datamodules.text_encoding import TOKENIZER_RULES
from lightning_app.models.classifier import ClassifierModule
from lightning_app.nets import BigramBagNet, NBBagNet, TutorialTextCNN
from lightning_app.optim import Optimization, OptimizerSpec

TextNet = Literal["nb_bag", "bigram_bag", "tutorial_cnn"]


class IMDBModule(ClassifierModule):
    """Review classifier over padded token ids.

    Batch: ``(token_ids int32[B, max_len], label int64[B])``. With two classes the
    network has one logit (BCE-with-logits) and ``preds`` are ``float32[B]``
    probabilities of class 1; with more it has ``num_classes`` logits
    (cross-entropy) and ``preds`` are ``float32[B, num_classes]`` probabilities.
    Metrics per stage: accuracy, AUROC and F1 (macro for multi-class). The
    TensorBoard review (PR curve, table of validation reviews) is a callback:
    :mod:`lightning_app.review`. Built with no arguments it is the registry's
    default model for the default ``IMDBDataModule()`` on the bundled data.

    :meth:`predict_raw` scores raw strings with the tokenizer and vocabulary kept
    in :attr:`preprocessing` (saved in the checkpoint).

    Args:
        vocab_size: rows of the word embedding (from ``IMDBDataModule.model_kwargs()``).
        num_classes: number of labels (2 = binary).
        max_len: tokens per review (fixes the tutorial CNN's Linear width).
        net: ``"nb_bag"`` (:class:`~lightning_app.nets.NBBagNet`: NBSVM over distinct words and
            hashed 2..``nb_ngrams``-grams plus the bigram bag), ``"bigram_bag"`` (mean of word +
            hashed-bigram embeddings), ``"tutorial_cnn"`` (the tutorial's Conv1d network), or any
            ``nn.Module`` mapping token ids ``int32[B, max_len]`` to logits ``float32[B, 1]`` (two
            classes) or ``float32[B, num_classes]``.
        lr: Adagrad learning rate (the tutorial's optimizer; it also accepts the
            bags' sparse gradients).
        embed_dim: embedding width of the bigram bag.
        bigram_buckets: hash buckets for bigrams in the bigram bag (0 = words only).
        nb_buckets: hash buckets of the NBSVM view's n-grams (its tables have ``vocab_size + nb_buckets`` rows
            per output). The default 2^24 leaves three in four of the 4.6M distinct 2-3-grams of the IMDB
            training reviews a bucket of their own (2^22: one in three); that was worth 0.34 points of validation
            accuracy over 5 seeds, for a 155 MB model (232 MB checkpoint with the optimizer state) instead of 54 MB.
        nb_ngrams: longest n-gram of the NBSVM view.
        nb_alpha: smoothing of the naive-Bayes counts behind the NBSVM view's ratios (1, as in scikit-learn-style
            NBSVM; with the fitted weights below it beat 8 on validation: tweet_emotion 0.705 vs 0.686, custrev
            0.829 vs 0.826, seeds 42-44).
        nb_c: inverse L2 strength of the logistic regression that fits the NBSVM view's weights before training
            (:meth:`~lightning_app.nets.NBBagNet.fit_nb_logistic` over the features in at least two training texts:
            NBSVM proper, solved to convergence; the fastText view then trains beside it), or several, of which the
            view keeps the one whose fit scores best on the validation batches (the view alone, before any training
            step: how the scikit-learn peers choose their C); the checkpoint's ``nb_c`` is then the chosen value.
            Without validation batches the middle one is fitted. ``None`` leaves the weights at the interpolation
            for the optimizer alone (checkpoints written before ``nb_c`` existed). C = 1 alone: choosing among 0.3,
            1 and 3 on validation gained nothing on the external corpora (``benchmarks/RESULTS.md``).
        nb_frozen: keep the NBSVM view's weights at the fit (``nb_c`` set) while the fastText view trains, with no
            optimizer state for the view's table. On seven external corpora: the validation accuracy of training
            both, in up to 10% less time; on the bundled IMDB data 0.2-0.4 points lower (validation and test), for
            7% less time: off by default.
        preprocessing: ``IMDBDataModule.preprocessing_state()`` (tokenizer, vocabulary, class names).

    The NBSVM view's naive-Bayes ratios, then its weights, are fitted on the training
    batches when training starts (:meth:`fit_before_training`, summed over processes),
    and saved with the weights.
    """

    monitor = "val/acc"
    monitor_mode = "max"
    sizes_from_data = ("vocab_size", "num_classes", "max_len")
    legacy_settings = (("nb_c", {"*": {"nb_c": None}}),)

    def __init__(
        self,
        vocab_size: int = 50_000,
        num_classes: int = 2,
        max_len: int = 1000,
        net: TextNet | nn.Module = "nb_bag",
        lr: float = 0.1,
        embed_dim: int = 16,
        bigram_buckets: int = 1 << 18,
        nb_buckets: int = 1 << 24,
        nb_ngrams: int = 3,
        nb_alpha: float = 1.0,
        nb_c: float | tuple[float, ...] | None = 1.0,
        nb_frozen: bool = False,
        preprocessing: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(num_classes, preprocessing)
        self.save_hyperparameters(ignore=["net", "preprocessing"], logger=False)
        self.example_input_array = torch.zeros(1, max_len, dtype=torch.int32)
        outputs = self.num_outputs
        self.net = self.build_net(
            net,
            {
                "nb_bag": lambda: NBBagNet(
                    vocab_size, outputs, nb_buckets, nb_ngrams, embed_dim=embed_dim, bigram_buckets=bigram_buckets
                ),
                "bigram_bag": lambda: BigramBagNet(
                    vocab_size, outputs, embed_dim=embed_dim, bigram_buckets=bigram_buckets
                ),
                "tutorial_cnn": lambda: TutorialTextCNN(vocab_size, max_len=max_len, num_outputs=outputs),
            },
        )
        self._index: dict[str, int] | None = None

    def optimizer_spec(self) -> OptimizerSpec:
        """Adagrad at a constant ``lr`` (the tutorial's optimizer; it also takes the bags' sparse gradients)."""
        return OptimizerSpec("adagrad", lr=self.hparams.lr)

    def configure_optimizers(self) -> Optimization:
        if isinstance(self.net, NBBagNet):  # read here, after a checkpoint's legacy nb_c is in the hparams
            frozen = self.hparams.nb_frozen and self.hparams.nb_c is not None
            self.net.nb_weight.weight.requires_grad_(not frozen)
        return super().configure_optimizers()

    def fit_before_training(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Fit the NBSVM view, unless already fitted (a resumed or fine-tuned model): count every n-gram per class
        over ``batches`` (``(token_ids, labels)``: this process's share of the run's training batches), sum the
        counts over processes, fit the naive-Bayes ratios, then (``nb_c`` set) the weights. Other nets fit
        nothing."""
        net = self.net
        if not isinstance(net, NBBagNet) or bool(net.nb_ready):
            return
        counts = torch.zeros(self.num_classes, net.nb_rows, dtype=torch.float64, device=self.device)
        kept = []  # each batch's features, hashed and sorted once for both fits
        with torch.no_grad():
            for token_ids, labels in batches:
                rows, labels = net.nb_feature_rows(token_ids.to(self.device)), labels.to(self.device)
                net.nb_feature_counts(rows, labels, self.num_classes, counts=counts)
                kept.append((rows, labels))
        counts = self.trainer.strategy.reduce(counts, reduce_op="sum")
        net.fit_nb_ratios(counts, alpha=self.hparams.nb_alpha)
        if self.hparams.nb_c is None:
            return
        summed = partial(self.trainer.strategy.reduce, reduce_op="sum")
        choices = self.hparams.nb_c
        to_choose = isinstance(choices, (list, tuple)) and len(choices) > 1
        batches = self.validation_batches() if to_choose else ()
        validation = [(ids.to(self.device), labels.to(self.device)) for ids, labels in batches]
        chosen = net.fit_nb_logistic(
            kept,
            counts.sum(0) >= 2,
            c=choices,
            sum_over_processes=summed,
            score=partial(self._nb_view_accuracy, validation) if validation else None,
        )
        self.hparams.nb_c = chosen  # the checkpoint records the C the view was fitted with

    @torch.no_grad()
    def _nb_view_accuracy(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
        """Accuracy of the NBSVM view alone on ``batches`` (``(token_ids, labels)``), over every process's share."""
        correct = torch.zeros(2, dtype=torch.float64, device=self.device)
        for token_ids, labels in batches:
            predicted = self.predicted_labels(self.to_predictions(self.net.nb_logits(token_ids)))
            correct += torch.stack([(predicted == labels).sum(), torch.tensor(len(labels))]).to(correct)
        correct = self.trainer.strategy.reduce(correct, reduce_op="sum")
        return float(correct[0] / correct[1].clamp(min=1))

    def export_metadata(self) -> dict[str, Any]:
        """The tokenizer as rules (:data:`datamodules.text_encoding.TOKENIZER_RULES`): the state holds its name."""
        name = self.preprocessing.get("tokenizer")
        return {"tokenizer_rule": TOKENIZER_RULES[name]} if name in TOKENIZER_RULES else {}

    def predict_raw(self, texts: list[str], batch_size: int = 512) -> list[dict[str, Any]]:
        """Score raw reviews: one ``{"label", "class_id", "probability", "probabilities"}`` per text.

        Uses the tokenizer and vocabulary of :attr:`preprocessing`; an empty
        string is valid (all padding). Runs in eval mode and restores the mode.
        """
        if not self.preprocessing.get("vocabulary"):
            raise RuntimeError("this module has no vocabulary; train it with IMDBDataModule or load a checkpoint")
        if self._index is None:
            self._index = vocabulary_index(self.preprocessing["vocabulary"])
        return self.score_encoded(encode_texts(texts, self.preprocessing, self._index), batch_size)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self._index = None
