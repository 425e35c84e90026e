"""IMDB review classification LightningModule."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import TensorBoardLogger
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryF1Score,
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassF1Score,
)

from datamodules.imdb import encode_texts, vocabulary_index
from lightning_app.models.base import TaskModule
from lightning_app.nets import BigramBagNet, TutorialTextCNN

TextNet = Literal["bigram_bag", "tutorial_cnn"]
#: Characters of each review shown in the TensorBoard example table.
EXAMPLE_CHARS = 300


def _metrics(num_classes: int) -> MetricCollection:
    if num_classes == 2:
        return MetricCollection({"acc": BinaryAccuracy(), "auroc": BinaryAUROC(), "f1": BinaryF1Score()})
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "auroc": MulticlassAUROC(num_classes),
            "f1": MulticlassF1Score(num_classes, average="macro"),
        }
    )


def _markdown_cell(text: str, limit: int = EXAMPLE_CHARS) -> str:
    text = text.replace("<br />", " ").replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[:limit].rstrip() + " ..."


class IMDBModule(TaskModule):
    """Review classifier over padded token ids.

    Batch: ``(token_ids int32[B, max_len], label int64[B])``. With two classes the
    network has one logit (BCE-with-logits) and ``preds`` are ``float32[B]``
    probabilities of class 1; with more it has ``num_classes`` logits
    (cross-entropy) and ``preds`` are ``float32[B, num_classes]`` probabilities.
    Metrics per stage: accuracy, AUROC and F1 (macro for multi-class).

    :meth:`predict_raw` scores raw strings with the tokenizer and vocabulary kept
    in :attr:`preprocessing` (saved in the checkpoint).

    Args:
        vocab_size: rows of the word embedding (from ``IMDBDataModule.model_kwargs()``).
        num_classes: number of labels (2 = binary).
        max_len: tokens per review (fixes the tutorial CNN's Linear width).
        net: ``"bigram_bag"`` (default; mean of word + hashed-bigram embeddings) or
            ``"tutorial_cnn"`` (the tutorial's Conv1d network).
        lr: Adagrad learning rate (the tutorial's optimizer; it also accepts the
            bag's sparse gradients).
        embed_dim: embedding width of the bigram bag.
        bigram_buckets: hash buckets for bigrams in the bigram bag (0 = words only).
    """

    monitor = "val/acc"
    monitor_mode = "max"

    def __init__(
        self,
        vocab_size: int,
        num_classes: int = 2,
        max_len: int = 200,
        net: TextNet = "bigram_bag",
        lr: float = 0.1,
        embed_dim: int = 16,
        bigram_buckets: int = 1 << 18,
        preprocessing: dict[str, Any] | None = None,
    ) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        super().__init__(_metrics(num_classes), preprocessing)
        self.save_hyperparameters(ignore=["preprocessing"], logger=False)
        outputs = 1 if num_classes == 2 else num_classes
        self.example_input_array = torch.zeros(1, max_len, dtype=torch.int32)
        if net == "bigram_bag":
            self.net = BigramBagNet(vocab_size, outputs, embed_dim=embed_dim, bigram_buckets=bigram_buckets)
        elif net == "tutorial_cnn":
            self.net = TutorialTextCNN(vocab_size, max_len=max_len, num_outputs=outputs)
        else:
            raise ValueError(f"unknown IMDB net {net!r}; choose 'bigram_bag' or 'tutorial_cnn'")
        self._index: dict[str, int] | None = None
        self._collect_val = False
        self._val_probs: list[torch.Tensor] = []
        self._val_targets: list[torch.Tensor] = []
        self._last_step: dict[str, torch.Tensor] = {}

    @property
    def binary(self) -> bool:
        return self.hparams.num_classes == 2

    def to_predictions(self, outputs: torch.Tensor) -> torch.Tensor:
        """Probabilities: ``float32[B]`` of class 1 (binary) or ``float32[B, num_classes]``."""
        return torch.sigmoid(outputs.squeeze(-1)) if self.binary else torch.softmax(outputs, dim=-1)

    def shared_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        token_ids, target = batch
        logits = self(token_ids)
        if self.binary:
            loss = F.binary_cross_entropy_with_logits(logits.squeeze(-1), target.float())
        else:
            loss = F.cross_entropy(logits, target)
        self._last_step = {"preds": self.to_predictions(logits).detach(), "target": target}
        return {"loss": loss, **self._last_step}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adagrad(self.parameters(), lr=self.hparams.lr)

    # -- scoring raw text ---------------------------------------------------------
    @torch.no_grad()
    def predict_raw(self, texts: list[str]) -> list[dict[str, Any]]:
        """Score raw reviews: ``[{"label": name, "probability": p(label), "probabilities": {name: p}}, ...]``.

        Uses the tokenizer and vocabulary of :attr:`preprocessing`; an empty
        string is valid (all padding). Runs in eval mode and restores the mode.
        """
        if not self.preprocessing.get("vocabulary"):
            raise RuntimeError("this module has no vocabulary; train it with IMDBDataModule or load a checkpoint")
        if self._index is None:
            self._index = vocabulary_index(self.preprocessing["vocabulary"])
        token_ids = encode_texts(texts, self.preprocessing, self._index).to(self.device)
        with self.eval_mode():
            probs = self.to_predictions(self(token_ids))
        return self.label_records(probs, self.preprocessing["class_names"])

    # -- TensorBoard review ---------------------------------------------------------
    def _tensorboard(self) -> TensorBoardLogger | None:
        return next((lg for lg in self.loggers if isinstance(lg, TensorBoardLogger)), None)

    def on_validation_epoch_start(self) -> None:
        self._collect_val = not self.trainer.sanity_checking and self._tensorboard() is not None
        self._val_probs, self._val_targets = [], []

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = super().validation_step(batch, batch_idx)
        if self._collect_val:
            self._val_probs.append(self._last_step["preds"])
            self._val_targets.append(self._last_step["target"])
        return loss

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        logger = self._tensorboard()
        if not self._collect_val or logger is None or not self._val_probs:
            return
        writer, step = logger.experiment, self.global_step
        probs, targets = torch.cat(self._val_probs).cpu(), torch.cat(self._val_targets).cpu()
        self._val_probs, self._val_targets = [], []
        names = self.preprocessing.get("class_names") or [str(i) for i in range(self.hparams.num_classes)]
        if self.binary:
            writer.add_pr_curve("val/pr_curve", targets, probs, global_step=step)
        else:
            for class_id, name in enumerate(names):
                writer.add_pr_curve(f"val/pr_curve/{name}", targets == class_id, probs[:, class_id], global_step=step)
        examples = getattr(getattr(self.trainer, "datamodule", None), "val_examples", [])
        if examples and self.preprocessing.get("vocabulary"):
            scored = self.predict_raw([text for text, _ in examples])
            lines = ["| review | label | predicted | probability |", "| --- | --- | --- | --- |"]
            for (text, label), result in zip(examples, scored, strict=True):
                lines.append(
                    f"| {_markdown_cell(text)} | {names[label]} | {result['label']} | {result['probability']:.3f} |"
                )
            writer.add_text("val/examples", "\n".join(lines), global_step=step)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self._index = None
