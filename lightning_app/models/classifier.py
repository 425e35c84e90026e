"""The shared base of the classification tasks (Titanic, cifar2, IMDB): binary or multi-class."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_warn
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryF1Score,
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassF1Score,
)

from lightning_app.models.base import STAGES, Stage, TaskModule

#: torchmetrics' warning when a class is missing from the targets (it then returns 0 for the metric).
TORCHMETRICS_NO_SAMPLES = r"No (positive|negative) samples in targets"

#: Suffix of the metric that holds one accuracy per class; logged as ``<stage>/acc_<class name>``.
PER_CLASS_SUFFIX = "_per_class"


def classification_metrics(num_classes: int) -> MetricCollection:
    """Accuracy, AUROC and F1 (binary), or micro accuracy, macro AUROC and F1 and accuracy per class."""
    if num_classes == 2:
        return MetricCollection({"acc": BinaryAccuracy(), "auroc": BinaryAUROC(), "f1": BinaryF1Score()})
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "auroc": MulticlassAUROC(num_classes),
            "f1": MulticlassF1Score(num_classes, average="macro"),
            f"acc{PER_CLASS_SUFFIX}": MulticlassAccuracy(num_classes, average=None),
        }
    )


class ClassCounts(Metric):
    """How many targets of each class a stage has seen (``int64[num_classes]``, summed across processes)."""

    full_state_update = False

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.add_state("counts", default=torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, target: torch.Tensor) -> None:
        self.counts += torch.bincount(target.long().flatten(), minlength=self.num_classes)[: self.num_classes]

    def compute(self) -> torch.Tensor:
        return self.counts


class ClassifierModule(TaskModule):
    """A :class:`TaskModule` for ``num_classes`` classes: binary (one logit, BCE) for 2, multi-class (CE) above.

    Batch: ``(inputs, labels int64[B])``; the task's DataModule says what ``inputs`` hold.
    The network returns logits: ``float[B]`` or ``float[B, 1]`` for two classes,
    ``float[B, num_classes]`` above. ``preds`` are probabilities: of class 1,
    ``float32[B]`` (binary), or of every class, ``float32[B, num_classes]``.
    Metrics per stage come from :func:`classification_metrics`. Subclasses call
    ``super().__init__(num_classes, preprocessing)`` and set ``self.net``; a
    ``label_smoothing`` hyperparameter, if they have one, smooths the loss.

    Class names come from ``preprocessing["class_names"]`` (fitted by the
    DataModule, stored in the checkpoint), else :attr:`default_class_names`.

    Metrics a stage's targets cannot define are reported as NaN, with one warning naming the stage, the
    missing classes and the metrics, instead of the 0 torchmetrics returns: AUROC when a class has no
    example, F1 when the positive class (binary) or any class (multi-class, macro average) has none, and
    the accuracy of a class with no example.
    """

    #: Names of the classes when the preprocessing state has none (``None``: ``"0"``, ``"1"``, ...).
    default_class_names: ClassVar[tuple[str, ...] | None] = None

    def __init__(self, num_classes: int, preprocessing: dict[str, Any] | None = None) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        names = (preprocessing or {}).get("class_names")
        if names is not None and len(names) != num_classes:
            raise ValueError(f"{num_classes} classes but {len(names)} class names in preprocessing")
        super().__init__(classification_metrics(num_classes), preprocessing)
        self.num_classes = num_classes
        for stage in STAGES:
            setattr(self, f"{stage}_class_counts", ClassCounts(num_classes))

    @property
    def binary(self) -> bool:
        return self.num_classes == 2

    @property
    def num_outputs(self) -> int:
        """Logits the network must return per example: 1 for binary, else one per class."""
        return 1 if self.binary else self.num_classes

    @property
    def class_names(self) -> list[str]:
        names = self.preprocessing.get("class_names") or self.default_class_names
        return list(names) if names else [str(i) for i in range(self.num_classes)]

    def _logits(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.squeeze(-1) if self.binary and outputs.ndim > 1 else outputs

    def to_predictions(self, outputs: torch.Tensor) -> torch.Tensor:
        """Probabilities: ``float32[B]`` of class 1 (binary) or ``float32[B, num_classes]``."""
        logits = self._logits(outputs)
        return torch.sigmoid(logits) if self.binary else torch.softmax(logits, dim=-1)

    def predicted_labels(self, preds: torch.Tensor) -> torch.Tensor:
        """Class ids ``int64[B]`` from the probabilities :meth:`to_predictions` returns."""
        return (preds >= 0.5).long() if self.binary else preds.argmax(dim=-1)

    def loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """BCE with logits (binary) or cross-entropy, smoothed by the ``label_smoothing`` hyperparameter if any."""
        logits = self._logits(outputs)
        smoothing = float(self.hparams.get("label_smoothing", 0.0))
        if self.binary:
            soft_target = target.to(logits.dtype) * (1.0 - smoothing) + 0.5 * smoothing
            return F.binary_cross_entropy_with_logits(logits, soft_target)
        return F.cross_entropy(logits, target, label_smoothing=smoothing)

    def shared_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Batch: ``(inputs, labels int64[B])``."""
        inputs, target = batch
        outputs = self(inputs)
        return {"loss": self.loss(outputs, target), "preds": self.to_predictions(outputs), "target": target}

    def update_metrics(self, stage: Stage, batched: dict[str, torch.Tensor]) -> None:
        getattr(self, f"{stage}_class_counts").update(batched["target"])
        super().update_metrics(stage, batched)

    def undefined_metrics(self, stage: Stage, counts: torch.Tensor) -> list[str]:
        """Keys of the stage's metrics that targets with these class ``counts`` cannot define (see the class)."""
        missing = counts == 0
        if not bool(missing.any()):
            return []
        keys = [f"{stage}/auroc"]
        if not self.binary or bool(missing[1]):  # binary F1 needs positives; a macro average every class
            keys.append(f"{stage}/f1")
        if not self.binary:
            keys += [
                f"{stage}/acc_{name}" for name, absent in zip(self.class_names, missing.tolist(), strict=True) if absent
            ]
        return keys

    def compute_epoch_metrics(self, stage: Stage) -> dict[str, torch.Tensor]:
        self._update_metrics(stage)  # counts every queued target before they are read
        class_counts: ClassCounts = getattr(self, f"{stage}_class_counts")
        counts = class_counts.compute()
        class_counts.reset()
        undefined = self.undefined_metrics(stage, counts)
        with warnings.catch_warnings():
            if undefined:  # torchmetrics' own warning says it returns 0; the one below replaces it
                warnings.filterwarnings("ignore", message=TORCHMETRICS_NO_SAMPLES, category=UserWarning)
            values = super().compute_epoch_metrics(stage)
        undefined = [key for key in undefined if key in values]
        if undefined:
            for key in undefined:
                values[key] = torch.full_like(values[key], float("nan"))
            if not (self._trainer is not None and self.trainer.sanity_checking):
                absent = [name for name, count in zip(self.class_names, counts.tolist(), strict=True) if count == 0]
                rank_zero_warn(
                    f"{stage}: the {stage} examples ({int(counts.sum())}) hold no example of class(es) "
                    f"{', '.join(absent)}; {', '.join(undefined)} cannot be computed and are reported as NaN"
                )
        return values

    def scalar_metrics(self, name: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
        if name.endswith(PER_CLASS_SUFFIX):
            base = name.removesuffix(PER_CLASS_SUFFIX)
            return {f"{base}_{label}": item for label, item in zip(self.class_names, value, strict=True)}
        return super().scalar_metrics(name, value)

    def label_records(self, preds: torch.Tensor) -> list[dict[str, Any]]:
        """One ``{"label", "class_id", "probability", "probabilities"}`` per row of :meth:`to_predictions`' output.

        ``probability`` is that of the predicted (most probable) class; ``probabilities`` maps every class name
        to its probability.
        """
        if preds.ndim == 1:
            preds = torch.stack([1.0 - preds, preds], dim=-1)
        names = self.class_names
        records = []
        for row in preds.float().cpu().tolist():
            best = max(range(len(row)), key=row.__getitem__)
            records.append(
                {
                    "label": names[best],
                    "class_id": best,
                    "probability": row[best],
                    "probabilities": dict(zip(names, row, strict=True)),
                }
            )
        return records

    def score_encoded(self, inputs: torch.Tensor, batch_size: int = 512) -> list[dict[str, Any]]:
        """:meth:`label_records` of encoded ``inputs``, scored in chunks of ``batch_size`` rows."""
        records: list[dict[str, Any]] = []
        for start in range(0, len(inputs), batch_size):
            records += self.label_records(self.predict_encoded(inputs[start : start + batch_size]))
        return records

    def predict_raw(self, raw_inputs: Sequence[Any]) -> list[dict[str, Any]]:
        """Score raw inputs (task-specific: texts, image files, passengers) into :meth:`label_records`."""
        raise NotImplementedError
