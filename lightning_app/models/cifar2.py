"""Image classification LightningModule (CIFAR-2 and any ImageFolder tree)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import TensorBoardLogger
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryConfusionMatrix,
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
)

from datamodules.cifar2 import load_images, normalize_images
from lightning_app.models.base import STAGES, Stage, TaskModule
from lightning_app.nets import SmallResNet, TutorialCifarNet

VisionNet = Literal["resnet", "tutorial"]

#: How many validation images the TensorBoard review grid shows.
REVIEW_IMAGES = 16


class Cifar2Module(TaskModule):
    """Classifies images into ``num_classes`` classes: binary (one logit, BCE) for 2, multi-class (CE) above.

    Batch (as :class:`~datamodules.cifar2.Cifar2DataModule` delivers it to the
    model): ``(images float32[B, 3, S, S] normalised, labels int64[B])``.
    ``preds`` are probabilities: of class 1, ``float32[B]`` (binary), or of every
    class, ``float32[B, num_classes]`` (multi-class).

    Metrics per stage: ``acc`` and ``auroc`` (binary) or ``acc`` (micro) and
    ``acc_<class name>`` for every class (multi-class). With a TensorBoard logger,
    every validation epoch adds a figure of validation images with predicted and
    true labels and a confusion-matrix figure.

    Args:
        num_classes: number of classes (from ``Cifar2DataModule.model_kwargs()``).
        net: ``"resnet"`` (default, :class:`~lightning_app.nets.SmallResNet`, SGD
            with Nesterov momentum and a OneCycle schedule) or ``"tutorial"`` (the
            tutorial's network and its plain SGD at a constant rate).
        lr: SGD learning rate (for ``"resnet"``, OneCycle's peak).
        momentum: SGD momentum of ``"resnet"``.
        weight_decay: SGD weight decay of ``"resnet"`` (not applied to BatchNorm and biases).
        label_smoothing: label smoothing of the loss for ``"resnet"``.
        width: channels of the first ResNet stage (then x2, x4).
        stem_stride: stride of the ResNet's first convolution.
        dropout: dropout before the ResNet's linear head.
        channels_last: run the network in channels-last memory format (same layers and weights; faster
            convolutions and pooling on CPU and GPU: 1.6x for the tutorial's Net on a CPU core).
        preprocessing: ``Cifar2DataModule.preprocessing_state()`` (class names, mean, std, image size).
    """

    # Checkpoints are selected on the validation loss, not accuracy: on 1000 validation images the
    # accuracy moves in steps of 0.001 and ties early in the OneCycle schedule (ModelCheckpoint keeps
    # the first of equal scores), while the loss keeps improving to the end of the schedule.
    monitor = "val/loss"
    monitor_mode = "min"

    def __init__(
        self,
        num_classes: int = 2,
        net: VisionNet = "resnet",
        lr: float = 0.2,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        label_smoothing: float = 0.1,
        width: int = 32,
        stem_stride: int = 2,
        dropout: float = 0.0,
        channels_last: bool = True,
        preprocessing: dict[str, Any] | None = None,
    ) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        self.binary = num_classes == 2
        class_names = (preprocessing or {}).get("class_names")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{num_classes} classes but {len(class_names)} class names in preprocessing")
        if self.binary:
            metrics = MetricCollection({"acc": BinaryAccuracy(), "auroc": BinaryAUROC()})
        else:
            metrics = MetricCollection({"acc": MulticlassAccuracy(num_classes, average="micro")})
        super().__init__(metrics, preprocessing)
        self.save_hyperparameters(ignore=["preprocessing"], logger=False)
        outputs = 1 if self.binary else num_classes
        image_size = int((preprocessing or {}).get("image_size", 32))
        self.example_input_array = torch.zeros(1, 3, image_size, image_size)
        if net == "tutorial":
            self.net = TutorialCifarNet(outputs)
        elif net == "resnet":
            self.net = SmallResNet(outputs, width=width, stem_stride=stem_stride, dropout=dropout)
        else:
            raise ValueError(f"unknown image net {net!r}; choose 'resnet' or 'tutorial'")
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        if not self.binary:
            for stage in STAGES:
                setattr(self, f"{stage}_class_acc", MulticlassAccuracy(num_classes, average=None))
        self.val_confusion = (
            BinaryConfusionMatrix() if self.binary else MulticlassConfusionMatrix(num_classes=num_classes)
        )
        self._review: dict[str, torch.Tensor] | None = None
        self._last_step: dict[str, torch.Tensor] = {}

    @property
    def class_names(self) -> list[str]:
        """Class names from the preprocessing state (restored from a checkpoint), else ``"0"``, ``"1"``, ..."""
        names = self.preprocessing.get("class_names")
        return list(names) if names else [str(i) for i in range(self.hparams.num_classes)]

    # -- model ------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.net(images)

    def to_predictions(self, outputs: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(outputs) if self.binary else torch.softmax(outputs, dim=-1)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        smoothing = self.hparams.label_smoothing if self.hparams.net == "resnet" else 0.0
        if self.binary:
            soft_target = target.to(logits.dtype) * (1.0 - smoothing) + 0.5 * smoothing
            return F.binary_cross_entropy_with_logits(logits, soft_target)
        return F.cross_entropy(logits, target, label_smoothing=smoothing)

    def shared_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        images, target = batch
        logits = self(images)
        out = {"loss": self.loss(logits, target), "preds": self.to_predictions(logits), "target": target}
        self._last_step = out  # read by the per-class and review bookkeeping of the stage hooks below
        return out

    # -- per-class accuracy, confusion matrix, review images ----------------------
    def _after_step(self, stage: Stage, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        preds, target = self._last_step["preds"].detach(), self._last_step["target"]
        if not self.binary:
            getattr(self, f"{stage}_class_acc").update(preds, target)
        if stage == "val":
            self.val_confusion.update(preds, target)
            if batch_idx == 0:
                self._review = {
                    "images": batch[0][:REVIEW_IMAGES].detach(),
                    "preds": preds[:REVIEW_IMAGES],
                    "target": target[:REVIEW_IMAGES],
                }

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        self._after_step("train", batch, batch_idx)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = super().validation_step(batch, batch_idx)
        self._after_step("val", batch, batch_idx)
        return loss

    def test_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = super().test_step(batch, batch_idx)
        self._after_step("test", batch, batch_idx)
        return loss

    def _log_class_accuracy(self, stage: Stage) -> None:
        if self.binary:
            return
        metric: MulticlassAccuracy = getattr(self, f"{stage}_class_acc")
        values = metric.compute()
        for name, value in zip(self.class_names, values, strict=True):
            self.log(f"{stage}/acc_{name}", value)
        metric.reset()

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self._log_class_accuracy("train")

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        self._log_class_accuracy("test")

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self.trainer.sanity_checking:
            if not self.binary:
                self.val_class_acc.reset()
            self.val_confusion.reset()
            self._review = None
            return
        self._log_class_accuracy("val")
        confusion = self.val_confusion.compute()
        self.val_confusion.reset()
        review, self._review = self._review, None
        logger = self.logger
        if isinstance(logger, TensorBoardLogger) and self.trainer.is_global_zero and review is not None:
            from lightning_app.figures import confusion_matrix_figure, image_review_figure

            step = self.global_step
            images = self._denormalize(review["images"]).cpu()
            predicted = self._labels(review["preds"]).cpu()
            figure = image_review_figure(images, predicted.tolist(), review["target"].cpu().tolist(), self.class_names)
            logger.experiment.add_figure("val/predictions", figure, global_step=step)
            logger.experiment.add_figure(
                "val/confusion_matrix", confusion_matrix_figure(confusion.cpu(), self.class_names), global_step=step
            )

    def _labels(self, preds: torch.Tensor) -> torch.Tensor:
        return (preds >= 0.5).long() if self.binary else preds.argmax(dim=-1)

    def _denormalize(self, images: torch.Tensor) -> torch.Tensor:
        mean = self.preprocessing.get("mean")
        std = self.preprocessing.get("std")
        if mean is None or std is None:
            return images.clamp(0, 1)
        mean_t = torch.tensor(mean, device=images.device).view(1, -1, 1, 1)
        std_t = torch.tensor(std, device=images.device).view(1, -1, 1, 1)
        return (images.float() * std_t + mean_t).clamp(0, 1)

    # -- optimisation -------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        if self.hparams.net == "tutorial":
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
        decay, no_decay = [], []
        for param in self.parameters():
            (decay if param.ndim > 1 else no_decay).append(param)
        optimizer = torch.optim.SGD(
            [
                {"params": decay, "weight_decay": self.hparams.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.hparams.lr,
            momentum=self.hparams.momentum,
            nesterov=True,
        )
        if self._trainer is None:  # used outside a Trainer (a plain loop): no run length to schedule over
            return optimizer
        total_steps = self.trainer.estimated_stepping_batches
        if not math.isfinite(total_steps) or total_steps < 4:  # no schedule for endless or tiny runs
            return optimizer
        total_steps = int(total_steps)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=self.hparams.lr,
            total_steps=total_steps,
            pct_start=max(0.25, 2 / total_steps),  # the warm-up needs at least two steps
            anneal_strategy="linear",
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- scoring raw images -------------------------------------------------------
    @torch.no_grad()
    def predict_raw(self, images: Sequence[str | Path] | torch.Tensor, batch_size: int = 256) -> list[dict[str, Any]]:
        """Classify raw images: a list of image files or ``uint8[N, 3, H, W]`` RGB tensors.

        Uses the preprocessing stored with the model (image size, mean, std, class
        names), so ``Cifar2Module.load_from_checkpoint(path).predict_raw(files)``
        works on its own. Returns one ``{"label": class name, "probability": p,
        "probabilities": {class name: p, ...}}`` per image, where ``p`` is the
        probability of the predicted class.
        """
        state = self.preprocessing
        missing = [key for key in ("mean", "std", "image_size", "class_names") if key not in state]
        if missing:
            raise RuntimeError(f"this model has no preprocessing state {missing}; train it with Cifar2DataModule")
        raw = load_images(images, state["image_size"])
        results: list[dict[str, Any]] = []
        with self.eval_mode():
            for start in range(0, raw.shape[0], batch_size):
                chunk = normalize_images(raw[start : start + batch_size].to(self.device), state["mean"], state["std"])
                results += self.label_records(self.to_predictions(self(chunk)), self.class_names)
        return results
