"""Review callbacks: TensorBoard figures, curves and tables drawn from the validation steps' outputs.

They read what every step of a :class:`~lightning_app.models.TaskModule` returns
(``{"loss", "preds", "target", ...}``, handed by Lightning to
``on_validation_batch_end``), so the modules hold model logic only. The registry
attaches them to ``fit``'s Trainer; research code can pass them to its own:
``pl.Trainer(callbacks=[ConfusionMatrixFigure(), ImagePredictionGrid()])``. They
draw after each validation epoch (not the sanity check) and only when the
Trainer has a ``TensorBoardLogger``; in multi-process runs rank zero draws its
own share of the validation set.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torchmetrics.functional.classification import binary_confusion_matrix, multiclass_confusion_matrix

#: Characters of each text shown in the TensorBoard table of validation texts.
TEXT_TABLE_CHARS = 300


def tensorboard_logger(trainer: pl.Trainer) -> TensorBoardLogger | None:
    """The Trainer's TensorBoard logger, if it has one."""
    return next((logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)), None)


def _reviewing(trainer: pl.Trainer) -> bool:
    return not trainer.sanity_checking and trainer.is_global_zero and tensorboard_logger(trainer) is not None


class ValidationReview(pl.Callback):
    """Base of the review callbacks: hands each validation step's outputs to :meth:`collect` while reviewing."""

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if _reviewing(trainer) and isinstance(outputs, dict):
            self.collect(outputs, batch, batch_idx)

    def collect(self, outputs: dict[str, torch.Tensor], batch: Any, batch_idx: int) -> None:
        """Keep what the review needs of one validation step (``outputs``: the step's detached dict)."""


class ValidationPredictions(ValidationReview):
    """Collects the validation epoch's ``preds`` and ``target`` and hands them to :meth:`review` at its end."""

    def __init__(self) -> None:
        self._preds: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._preds, self._targets = [], []

    def collect(self, outputs: dict[str, torch.Tensor], batch: Any, batch_idx: int) -> None:
        self._preds.append(outputs["preds"])
        self._targets.append(outputs["target"])

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        logger = tensorboard_logger(trainer)
        if not _reviewing(trainer) or logger is None or not self._preds:
            return
        preds, targets = torch.cat(self._preds).cpu(), torch.cat(self._targets).cpu()
        self._preds, self._targets = [], []
        self.review(logger.experiment, trainer.global_step, pl_module, preds, targets)

    def review(self, writer: Any, step: int, module: Any, preds: torch.Tensor, targets: torch.Tensor) -> None:
        raise NotImplementedError


class ConfusionMatrixFigure(ValidationPredictions):
    """``val/confusion_matrix``: the validation confusion matrix as an annotated figure (IMAGES tab)."""

    def review(self, writer: Any, step: int, module: Any, preds: torch.Tensor, targets: torch.Tensor) -> None:
        from lightning_app.figures import confusion_matrix_figure

        if module.binary:
            confusion = binary_confusion_matrix(preds, targets)
        else:
            confusion = multiclass_confusion_matrix(preds, targets, num_classes=module.num_classes)
        writer.add_figure("val/confusion_matrix", confusion_matrix_figure(confusion, module.class_names), step)


class PRCurve(ValidationPredictions):
    """``val/pr_curve`` (binary) or ``val/pr_curve/<class>`` (one-vs-rest): precision-recall curves (PR CURVES tab)."""

    def review(self, writer: Any, step: int, module: Any, preds: torch.Tensor, targets: torch.Tensor) -> None:
        if module.binary:
            writer.add_pr_curve("val/pr_curve", targets, preds, global_step=step)
            return
        for class_id, name in enumerate(module.class_names):
            writer.add_pr_curve(f"val/pr_curve/{name}", targets == class_id, preds[:, class_id], global_step=step)


class ImagePredictionGrid(ValidationReview):
    """``val/predictions``: the first validation batch's images titled "predicted / true", wrong ones in red.

    Needs a module with ``denormalize``, ``predicted_labels`` and ``class_names``
    (:class:`~lightning_app.models.Cifar2Module`) and batches ``(images, labels)``.
    """

    def __init__(self, num_images: int = 16) -> None:
        self.num_images = num_images
        self._first_batch: dict[str, torch.Tensor] | None = None

    def collect(self, outputs: dict[str, torch.Tensor], batch: Any, batch_idx: int) -> None:
        if batch_idx == 0:
            count = self.num_images
            self._first_batch = {
                "images": batch[0][:count].detach(),
                "preds": outputs["preds"][:count],
                "target": outputs["target"][:count],
            }

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        first, self._first_batch = self._first_batch, None
        logger = tensorboard_logger(trainer)
        if first is None or logger is None or not _reviewing(trainer):
            return
        from lightning_app.figures import image_review_figure

        images = pl_module.denormalize(first["images"]).cpu()
        predicted = pl_module.predicted_labels(first["preds"]).cpu().tolist()
        figure = image_review_figure(images, predicted, first["target"].cpu().tolist(), pl_module.class_names)
        logger.experiment.add_figure("val/predictions", figure, global_step=trainer.global_step)


def _markdown_cell(text: str, limit: int = TEXT_TABLE_CHARS) -> str:
    text = text.replace("<br />", " ").replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[:limit].rstrip() + " ..."


class ValidationTextTable(pl.Callback):
    """``val/examples``: a markdown table of a few validation texts with true and predicted labels (TEXT tab).

    The texts come from the DataModule's ``val_examples`` (``[(text, class_id), ...]``,
    as :class:`~datamodules.IMDBDataModule` keeps them) and are scored with the
    module's ``predict_raw``, the same path as ``python -m lightning_app.predict``.
    """

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        logger = tensorboard_logger(trainer)
        examples = getattr(trainer.datamodule, "val_examples", None)
        if logger is None or not examples or not _reviewing(trainer):
            return
        names = pl_module.class_names
        scored = pl_module.predict_raw([text for text, _ in examples])
        lines = ["| review | label | predicted | probability |", "| --- | --- | --- | --- |"]
        for (text, label), result in zip(examples, scored, strict=True):
            lines.append(
                f"| {_markdown_cell(text)} | {names[label]} | {result['label']} | {result['probability']:.3f} |"
            )
        logger.experiment.add_text("val/examples", "\n".join(lines), global_step=trainer.global_step)
