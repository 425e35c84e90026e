"""The base LightningModule every task module derives from."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import pytorch_lightning as pl
import torch
from torchmetrics import MaxMetric, MeanMetric, MetricCollection, MinMetric

Stage = Literal["train", "val", "test"]
STAGES: tuple[Stage, ...] = ("train", "val", "test")


class TaskModule(pl.LightningModule):
    """Owns metrics, logging and checkpointed preprocessing; subclasses own the model.

    A subclass sets ``self.net`` (a plain ``nn.Module``; ``forward`` calls it) and implements:

    * :meth:`shared_step` ``(batch) -> {"loss", "preds", "target"}`` (and optionally
      ``"baseline"``: the predictions of a reference model such as persistence);
    * ``configure_optimizers``;
    * :meth:`to_predictions` when ``preds`` is not ``forward``'s output
      (e.g. probabilities from logits).

    For each stage the base keeps a clone of the subclass's ``MetricCollection``
    (logged per epoch as ``train/acc``, ``val/acc``, ``test/acc``, ...), a
    ``MeanMetric`` of the loss (``<stage>/loss``) and the best validation value
    of :attr:`monitor` so far (``val/<name>_best``).

    ``preprocessing`` is the JSON-serialisable state the DataModule fitted on
    the training split (see ``TaskDataModule.preprocessing_state``). It is kept
    out of the hyperparameters and stored in the checkpoint under
    ``"preprocessing"``, so ``Module.load_from_checkpoint(path)`` alone returns
    a module that can score raw inputs.
    """

    #: Validation metric to select checkpoints on, and whether higher is better.
    monitor: ClassVar[str] = "val/loss"
    monitor_mode: ClassVar[Literal["min", "max"]] = "min"
    #: Name used in metric keys for the ``"baseline"`` predictions of :meth:`shared_step`.
    baseline_name: ClassVar[str | None] = None

    def __init__(self, metrics: MetricCollection, preprocessing: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.preprocessing: dict[str, Any] = preprocessing or {}
        for stage in STAGES:
            setattr(self, f"{stage}_metrics", metrics.clone(prefix=f"{stage}/"))
            setattr(self, f"{stage}_loss", MeanMetric())
            if self.baseline_name:
                setattr(self, f"{stage}_baseline_metrics", metrics.clone(prefix=f"{stage}/{self.baseline_name}_"))
        self.val_best = MaxMetric() if self.monitor_mode == "max" else MinMetric()

    #: The plain ``nn.Module`` network; ``forward`` is this network, so exports can use it alone.
    net: torch.nn.Module

    # -- to implement ---------------------------------------------------------
    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.net(inputs)

    def shared_step(self, batch: Any) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def to_predictions(self, outputs: torch.Tensor) -> torch.Tensor:
        """Map ``forward``'s outputs to what the metrics and ``predict_step`` see."""
        return outputs

    # -- steps ----------------------------------------------------------------
    def _step(self, stage: Stage, batch: Any) -> torch.Tensor:
        out = self.shared_step(batch)
        target = out["target"]
        loss_metric: MeanMetric = getattr(self, f"{stage}_loss")
        loss_metric.update(out["loss"].detach(), weight=target.shape[0])
        metrics: MetricCollection = getattr(self, f"{stage}_metrics")
        metrics.update(out["preds"].detach(), target)
        log = {"on_step": False, "on_epoch": True}
        self.log(f"{stage}/loss", loss_metric, prog_bar=stage != "test", **log)
        self.log_dict(metrics, **log)
        if "baseline" in out:
            baseline: MetricCollection = getattr(self, f"{stage}_baseline_metrics")
            baseline.update(out["baseline"].detach(), target)
            self.log_dict(baseline, **log)
        return out["loss"]

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step("train", batch)

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step("val", batch)

    def test_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step("test", batch)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.to_predictions(self(inputs))

    # -- hooks ----------------------------------------------------------------
    def on_train_start(self) -> None:
        # The sanity check ran validation on a few batches; do not let it count.
        self.val_metrics.reset()
        self.val_loss.reset()
        self.val_best.reset()

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        name = self.monitor.removeprefix("val/")
        current = self.val_loss.compute() if name == "loss" else self.val_metrics[name].compute()
        self.val_best.update(current)
        self.log(f"{self.monitor}_best", self.val_best.compute(), prog_bar=True, sync_dist=False)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["preprocessing"] = self.preprocessing
        checkpoint["module_class"] = f"{type(self).__module__}.{type(self).__qualname__}"

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.preprocessing = checkpoint.get("preprocessing", {})
