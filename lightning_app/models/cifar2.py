"""Image classification LightningModule (CIFAR-2 and any ImageFolder tree)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch import nn

from datamodules.cifar2 import load_images, normalize_images
from lightning_app.models.classifier import ClassifierModule
from lightning_app.nets import ConvPoolNet, HorizontalFlipAverage, SmallResNet, TutorialCifarNet
from lightning_app.optim import OptimizerSpec, check_choice

VisionNet = Literal["convpool", "resnet", "tutorial"]
Schedule = Literal["one_cycle", "constant"]


class Cifar2Module(ClassifierModule):
    """Classifies images into ``num_classes`` classes: binary (one logit, BCE) for 2, multi-class (CE) above.

    Batch (as :class:`~datamodules.cifar2.Cifar2DataModule` delivers it to the
    model): ``(images float32[B, 3, S, S] normalised, labels int64[B])``.
    ``preds`` are probabilities: of class 1, ``float32[B]`` (binary), or of every
    class, ``float32[B, num_classes]`` (multi-class). Metrics per stage: see
    :func:`~lightning_app.models.classifier.classification_metrics` (multi-class
    adds ``acc_<class name>``). The review figures (validation images with their
    predictions, confusion matrix) are callbacks: :mod:`lightning_app.review`.
    Built with no arguments it is the registry's default model.

    Optimisation is SGD: with ``momentum``, ``nesterov`` and ``weight_decay``
    (not applied to BatchNorm weights and biases), at a constant ``lr`` or along
    a OneCycle schedule peaking at ``lr`` (``schedule``).

    Args:
        num_classes: number of classes (from ``Cifar2DataModule.model_kwargs()``).
        net: ``"convpool"`` (:class:`~lightning_app.nets.ConvPoolNet`), ``"resnet"``
            (:class:`~lightning_app.nets.SmallResNet`, the previous default), ``"tutorial"`` (the
            tutorial's network), or any ``nn.Module`` mapping ``float32[B, 3, S, S]`` to logits
            ``float32[B]`` (two classes) or ``float32[B, num_classes]``.
        lr: SGD learning rate (with ``"one_cycle"``, the peak).
        momentum: SGD momentum.
        nesterov: Nesterov momentum (needs ``momentum > 0``).
        weight_decay: SGD weight decay.
        schedule: ``"one_cycle"`` (warm-up over the first quarter, then linear decay) or ``"constant"``.
        label_smoothing: label smoothing of the loss.
        width: channels of the first stage of ``"convpool"`` or ``"resnet"`` (then x2, x4).
        stem_stride: stride of the first convolution of ``"resnet"`` (``"convpool"`` keeps full resolution).
        dropout: dropout before the linear head of ``"convpool"`` or ``"resnet"``.
        channels_last: run the network in channels-last memory format (same layers and weights; faster
            convolutions and pooling on CPU and GPU: 1.6x for the tutorial's Net on a CPU core).
        flip_average: test-time augmentation: outside training, the logits are the mean over each image and its
            mirror image (:class:`~lightning_app.nets.HorizontalFlipAverage`; exports include it).
        preprocessing: ``Cifar2DataModule.preprocessing_state()`` (class names, mean, std, image size).
    """

    # Checkpoints are selected on the validation loss, not accuracy: on 1000 validation images the
    # accuracy moves in steps of 0.001 and ties early in the OneCycle schedule (ModelCheckpoint keeps
    # the first of equal scores), while the loss keeps improving to the end of the schedule.
    monitor = "val/loss"
    monitor_mode = "min"
    sizes_from_data = ("num_classes",)
    legacy_settings = (
        (
            "schedule",
            {
                "tutorial": {
                    "momentum": 0.0,
                    "nesterov": False,
                    "weight_decay": 0.0,
                    "schedule": "constant",
                    "label_smoothing": 0.0,
                }
            },
        ),
        ("flip_average", {"*": {"flip_average": False}}),
    )

    def __init__(
        self,
        num_classes: int = 2,
        net: VisionNet | nn.Module = "convpool",
        lr: float = 0.2,
        momentum: float = 0.9,
        nesterov: bool = True,
        weight_decay: float = 5e-4,
        schedule: Schedule = "one_cycle",
        label_smoothing: float = 0.1,
        width: int = 32,
        stem_stride: int = 2,
        dropout: float = 0.0,
        channels_last: bool = True,
        flip_average: bool = True,
        preprocessing: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(num_classes, preprocessing)
        self.save_hyperparameters(ignore=["net", "preprocessing"], logger=False)
        check_choice("schedule", schedule, get_args(Schedule))
        image_size = int(self.preprocessing.get("image_size", 32))
        self.example_input_array = torch.zeros(1, 3, image_size, image_size)
        outputs = self.num_outputs
        self.net = self.build_net(
            net,
            {
                "convpool": lambda: ConvPoolNet(outputs, width=width, dropout=dropout),
                "resnet": lambda: SmallResNet(outputs, width=width, stem_stride=stem_stride, dropout=dropout),
                "tutorial": lambda: TutorialCifarNet(outputs),
            },
        )
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return (self.net if self.training else self.inference_net())(images)

    def inference_net(self) -> nn.Module:
        return HorizontalFlipAverage(self.net) if self.hparams.flip_average else self.net

    def optimizer_spec(self) -> OptimizerSpec:
        """SGD with ``momentum`` and ``nesterov``; ``weight_decay`` on weight matrices and kernels only (not on
        biases and BatchNorm weights); ``schedule`` ``"one_cycle"`` (peaking at ``lr``) or ``"constant"``."""
        return OptimizerSpec(
            "sgd",
            lr=self.hparams.lr,
            weight_decay=self.hparams.weight_decay,
            options={"momentum": self.hparams.momentum, "nesterov": self.hparams.nesterov},
            decay_matrices_only=True,
            schedule=self.hparams.schedule,
        )

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """``uint8[B, 3, S, S]`` images at the model's size -> the normalised ``float32`` batch the net takes."""
        state = self.preprocessing
        return normalize_images(images.to(self.device), state["mean"], state["std"])

    def denormalize(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images back to ``[0, 1]`` RGB for display (clamped; unchanged without statistics)."""
        mean, std = self.preprocessing.get("mean"), self.preprocessing.get("std")
        if mean is None or std is None:
            return images.float().clamp(0, 1)
        mean_t = torch.tensor(mean, device=images.device).view(1, -1, 1, 1)
        std_t = torch.tensor(std, device=images.device).view(1, -1, 1, 1)
        return (images.float() * std_t + mean_t).clamp(0, 1)

    def predict_raw(self, images: Sequence[str | Path] | torch.Tensor, batch_size: int = 256) -> list[dict[str, Any]]:
        """Classify raw images: a list of image files or ``uint8[N, 3, H, W]`` RGB tensors.

        Uses the preprocessing stored with the model (image size, mean, std, class
        names), so ``Cifar2Module.load_from_checkpoint(path).predict_raw(files)``
        works on its own. Returns one ``{"label": class name, "class_id", "probability": p,
        "probabilities": {class name: p, ...}}`` per image, where ``p`` is the
        probability of the predicted class.
        """
        missing = [key for key in ("mean", "std", "image_size", "class_names") if key not in self.preprocessing]
        if missing:
            raise RuntimeError(f"this model has no preprocessing state {missing}; train it with Cifar2DataModule")
        raw = load_images(images, self.preprocessing["image_size"])
        records: list[dict[str, Any]] = []
        for start in range(0, raw.shape[0], batch_size):
            records += self.label_records(self.predict_encoded(self.normalize(raw[start : start + batch_size])))
        return records
