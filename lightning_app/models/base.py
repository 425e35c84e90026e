"""The base LightningModule every task module derives from."""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, ClassVar, Literal

import pytorch_lightning as pl
import torch
from torchmetrics import MaxMetric, MeanMetric, MetricCollection, MinMetric

from lightning_app.batches import RawBatch
from lightning_app.optim import Optimization, OptimizerSpec, configure_optimization

Stage = Literal["train", "val", "test"]
STAGES: tuple[Stage, ...] = ("train", "val", "test")


#: Step outputs the base reads itself; paired metrics get every other output by name. ``loss_weight`` (optional,
#: a scalar): what the step's loss counts in the epoch's mean loss (default: the number of targets).
_OWN_KEYS = ("loss", "loss_weight", "preds", "target")

#: Prefix of the ``net`` hyperparameter of a module built around a network passed in as an ``nn.Module``.
CUSTOM_NET_PREFIX = "custom:"


def module_class_path(module_class: type) -> str:
    """``package.module.Class``: what a checkpoint records as ``"module_class"`` to name the module that wrote it."""
    return f"{module_class.__module__}.{module_class.__qualname__}"


class TaskModule(pl.LightningModule):
    """Owns metrics, logging and checkpointed preprocessing; subclasses own the model.

    A subclass sets ``self.net`` with :meth:`build_net` (a plain ``nn.Module``, built from a
    name or passed in; ``forward`` calls it) and implements:

    * :meth:`shared_step` ``(batch) -> {"loss", "preds", "target"}`` (and optionally
      ``"baseline"``: the predictions of a reference model such as persistence);
    * :meth:`optimizer_spec`: the optimizer and schedule as an :class:`~lightning_app.optim.OptimizerSpec` built
      from the hyperparameters (the base's ``configure_optimizers`` builds them; a subclass may still override
      ``configure_optimizers`` itself);
    * :meth:`to_predictions` when ``preds`` is not ``forward``'s output
      (e.g. probabilities from logits);
    * optionally :meth:`fit_before_training`: state fitted on the training batches before the first step.

    Step outputs: ``training_step``, ``validation_step`` and ``test_step`` return
    :meth:`shared_step`'s dict (the loss, everything else detached), so Lightning
    hands it as ``outputs`` to every ``Callback.on_{train,validation,test}_batch_end``
    and to the module's own batch-end hooks: review callbacks
    (:mod:`lightning_app.review`) read predictions there, never from module state.

    For each stage the base keeps a clone of the subclass's ``MetricCollection``
    (logged per epoch as ``train/acc``, ``val/acc``, ``test/acc``, ...), optionally a clone
    of ``paired_metrics``: metrics that also read the step's other outputs by name
    (``update(preds, target, baseline=..., ...)``, e.g. a score scaled by the baseline's error), a
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
    #: Constructor arguments that the DataModule's ``model_kwargs()`` supplies (sizes: features, classes, ...).
    sizes_from_data: ClassVar[tuple[str, ...]] = ()
    #: ``(hyperparameter, {net name or "*": settings})``: checkpoints written before that hyperparameter existed
    #: ran each built-in net (or every net) with the given settings, whatever their saved hyperparameters say;
    #: loading applies them.
    legacy_settings: ClassVar[tuple[tuple[str, dict[str, dict[str, Any]]], ...]] = ()
    #: Steps whose outputs are queued on the device before one batched metric update.
    metric_update_every_n_steps: ClassVar[int] = 32

    def __init__(
        self,
        metrics: MetricCollection,
        preprocessing: dict[str, Any] | None = None,
        paired_metrics: MetricCollection | None = None,
    ) -> None:
        super().__init__()
        self.preprocessing: dict[str, Any] = preprocessing or {}
        self.has_paired_metrics = paired_metrics is not None
        for stage in STAGES:
            setattr(self, f"{stage}_metrics", metrics.clone(prefix=f"{stage}/"))
            setattr(self, f"{stage}_loss", MeanMetric())
            if self.baseline_name:
                setattr(self, f"{stage}_baseline_metrics", metrics.clone(prefix=f"{stage}/{self.baseline_name}_"))
            if paired_metrics is not None:
                setattr(self, f"{stage}_paired_metrics", paired_metrics.clone(prefix=f"{stage}/"))
        self.val_best = MaxMetric() if self.monitor_mode == "max" else MinMetric()
        self._pending: dict[Stage, list[dict[str, torch.Tensor]]] = {stage: [] for stage in STAGES}

    #: The plain ``nn.Module`` network; ``forward`` is this network, so exports can use it alone.
    net: torch.nn.Module

    def build_net(
        self, net: str | torch.nn.Module, builders: Mapping[str, Callable[[], torch.nn.Module]]
    ) -> torch.nn.Module:
        """The network: ``net`` itself when it is an ``nn.Module``, else ``builders[net]()``.

        Records ``hparams.net`` as a plain string (``"custom:<class name>"`` for a
        network passed in), so checkpoints stay loadable with ``weights_only=True``;
        a custom network is passed again on loading:
        ``Module.load_from_checkpoint(path, net=MyNet())``. Subclasses call
        ``save_hyperparameters(ignore=["net", "preprocessing"])`` before this.
        """
        if isinstance(net, torch.nn.Module):
            self.hparams["net"] = f"{CUSTOM_NET_PREFIX}{type(net).__qualname__}"
            return net
        self.hparams["net"] = net
        if net in builders:
            return builders[net]()
        name = type(self).__name__
        if isinstance(net, str) and net.startswith(CUSTOM_NET_PREFIX):
            raise ValueError(
                f"this {name} was trained with a custom network ({net.removeprefix(CUSTOM_NET_PREFIX)}); "
                f"pass it again: {name}.load_from_checkpoint(path, net={net.removeprefix(CUSTOM_NET_PREFIX)}(...))"
            )
        raise ValueError(f"unknown {name} net {net!r}; choose from {sorted(builders)} or pass an nn.Module")

    # -- to implement ---------------------------------------------------------
    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.net(inputs)

    def inference_net(self) -> torch.nn.Module:
        """The network as evaluation uses it (``self.net``, or a wrapper such as test-time augmentation); exports
        trace this."""
        return self.net

    def export_metadata(self) -> dict[str, Any]:
        """What ``preprocessing.json`` needs beside the preprocessing state to turn raw inputs into the exported
        graph's input without this package (e.g. a tokenizer's rules); none by default."""
        return {}

    def shared_step(self, batch: Any) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def to_predictions(self, outputs: torch.Tensor) -> torch.Tensor:
        """Map ``forward``'s outputs to what the metrics and ``predict_step`` see."""
        return outputs

    @contextlib.contextmanager
    def eval_mode(self) -> Iterator[None]:
        """Evaluation mode inside the ``with`` block, the previous mode restored after it (also on errors)."""
        was_training = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was_training)

    # -- optimisation -----------------------------------------------------------
    def optimizer_spec(self) -> OptimizerSpec:
        """The optimizer and learning-rate schedule, from the hyperparameters (see :mod:`lightning_app.optim`)."""
        raise NotImplementedError(f"{type(self).__name__} defines neither optimizer_spec nor configure_optimizers")

    def configure_optimizers(self) -> Optimization:
        """:meth:`optimizer_spec` built over the parameters that require gradients (frozen ones get no optimizer
        state); a schedule is sized by the trainer's ``estimated_stepping_batches`` (outside a Trainer: the optimizer
        alone)."""
        total_steps = (lambda: self.trainer.estimated_stepping_batches) if self._trainer is not None else None
        trainable = [parameter for parameter in self.parameters() if parameter.requires_grad]
        return configure_optimization(self.optimizer_spec(), trainable, total_steps)

    # -- state fitted on the training data ---------------------------------------
    def fit_before_training(self, batches: Iterable[Any]) -> None:
        """Hook: fit state that must exist before the first optimizer step (statistics of the training data).

        Called once per ``trainer.fit``, from ``on_train_start``, with :meth:`training_batches`: an iterable that
        reads nothing until iterated, so a module with nothing to fit costs nothing (and draws no random numbers).
        In a multi-process run each process gets its own share of the batches; combine the processes' results
        with ``self.trainer.strategy.reduce``. The default fits nothing.
        """

    def training_batches(self) -> Iterator[Any]:
        """One pass over the batches this process trains on in this run: the trainer's training loader (with its
        distributed sampler), cut to ``trainer.num_training_batches`` (``--limit-train-batches``,
        ``--fast-dev-run``). Lazy: the loader is only opened on the first ``next``."""
        limit = self.trainer.num_training_batches  # inf when the loader has no length
        yield from itertools.islice(self.trainer.train_dataloader, None if math.isinf(limit) else int(limit))

    def validation_batches(self) -> Iterator[Any]:
        """One pass over the batches this process validates on in this run (cut to ``trainer.num_val_batches``;
        none when the run validates nothing), for choices made in :meth:`fit_before_training`. Lazy."""
        # The loop sets its loaders up itself before the first validation; asking early (the sanity check may be
        # off) gives the same loaders, not a second set.
        self.trainer.fit_loop.epoch_loop.val_loop.setup_data()
        loaders = self.trainer.val_dataloaders
        if loaders is None:
            return
        if isinstance(loaders, Mapping):
            loaders = list(loaders.values())
        elif not isinstance(loaders, (list, tuple)):
            loaders = [loaders]
        for loader, limit in zip(loaders, self.trainer.num_val_batches, strict=True):
            yield from itertools.islice(loader, None if math.isinf(limit) else int(limit))

    # -- steps ----------------------------------------------------------------
    def _step(self, stage: Stage, batch: Any) -> dict[str, torch.Tensor]:
        """Run :meth:`shared_step`, queue its outputs for the stage's metrics and return them (nothing logged)."""
        out = self.shared_step(batch)
        detached = {key: value.detach() for key, value in out.items() if key != "loss"}
        pending = self._pending[stage]
        pending.append({"loss": out["loss"].detach(), **detached})
        if len(pending) >= self.metric_update_every_n_steps:
            self._update_metrics(stage)
        return {"loss": out["loss"], **detached}

    def _update_metrics(self, stage: Stage) -> None:
        # One torchmetrics update per chunk of steps instead of one per step: each update call costs
        # a fixed few hundred microseconds, more than a small model's whole step on the CPU.
        pending = self._pending[stage]
        if not pending:
            return
        losses = torch.stack([step["loss"] for step in pending])
        weights = torch.stack(
            [torch.as_tensor(step.get("loss_weight", len(step["target"])), device=losses.device) for step in pending]
        )
        getattr(self, f"{stage}_loss").update(losses, weight=weights.to(losses.dtype))
        batched = {
            key: torch.cat([step[key] for step in pending]) for key in pending[0] if key not in ("loss", "loss_weight")
        }
        pending.clear()
        self.update_metrics(stage, batched)

    def update_metrics(self, stage: Stage, batched: dict[str, torch.Tensor]) -> None:
        """Update the stage's metrics with ``batched``: the queued steps' outputs but the loss, each concatenated."""
        preds, target = batched["preds"], batched["target"]
        getattr(self, f"{stage}_metrics").update(preds, target)
        if "baseline" in batched:
            getattr(self, f"{stage}_baseline_metrics").update(batched["baseline"], target)
        if self.has_paired_metrics:
            others = {key: value for key, value in batched.items() if key not in _OWN_KEYS}
            getattr(self, f"{stage}_paired_metrics").update(preds, target, **others)

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._step("train", batch)

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._step("val", batch)

    def test_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._step("test", batch)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor | list[dict[str, Any]]:
        """Predictions for an encoded batch (``inputs`` or ``(inputs, ...)``: :meth:`predict_encoded`), or the
        :meth:`predict_raw` records of a :class:`~lightning_app.batches.RawBatch` of raw inputs (such as the
        streaming predictors' ``RawChunk``)."""
        if isinstance(batch, RawBatch):
            return self.predict_raw(batch.inputs) if len(batch) else []
        inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.predict_encoded(inputs)

    def predict_raw(self, raw_inputs: Any) -> list[dict[str, Any]]:
        """Score raw inputs (task-specific: texts, image files, passengers): one record per input."""
        raise NotImplementedError(f"{type(self).__name__} does not score raw inputs")

    @torch.no_grad()
    def predict_encoded(self, inputs: torch.Tensor) -> torch.Tensor:
        """``to_predictions(forward(inputs))`` in eval mode: what ``predict_step``, ``predict_raw``, exports return."""
        with self.eval_mode():
            return self.to_predictions(self(inputs.to(self.device)))

    # -- epoch ends -----------------------------------------------------------
    def scalar_metrics(self, name: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a computed metric into loggable scalars; vectors become ``<name>_<index>``."""
        if value.numel() == 1:
            return {name: value.reshape(())}
        return {f"{name}_{index}": item for index, item in enumerate(value.flatten())}

    def compute_epoch_metrics(self, stage: Stage) -> dict[str, torch.Tensor]:
        """Compute (synced across processes by torchmetrics) and reset the stage's metrics."""
        collections = [getattr(self, f"{stage}_metrics")]
        if self.baseline_name:
            collections.append(getattr(self, f"{stage}_baseline_metrics"))
        if self.has_paired_metrics:
            collections.append(getattr(self, f"{stage}_paired_metrics"))
        self._update_metrics(stage)
        loss: MeanMetric = getattr(self, f"{stage}_loss")
        values = {f"{stage}/loss": loss.compute()}
        loss.reset()
        for collection in collections:
            for name, value in collection.compute().items():
                values.update(self.scalar_metrics(name, value))
            collection.reset()
        return values

    def _log_epoch(self, stage: Stage) -> dict[str, torch.Tensor]:
        # Logged once per epoch from values computed here: logging metric objects every step through
        # self.log costs about a millisecond per call, more than a small model's whole step.
        values = self.compute_epoch_metrics(stage)
        self.log_dict(values, prog_bar=stage == "val", sync_dist=True)
        return values

    def on_train_start(self) -> None:
        # The sanity check ran validation on a few batches; do not let it count.
        self._pending["val"].clear()
        self.val_metrics.reset()
        self.val_loss.reset()
        self.val_best.reset()
        self.fit_before_training(self.training_batches())

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        values = self._log_epoch("val")
        if self.trainer.sanity_checking:
            return
        self.val_best.update(values[self.monitor])
        self.log(f"{self.monitor}_best", self.val_best.compute(), prog_bar=True, sync_dist=True)

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["preprocessing"] = self.preprocessing
        checkpoint["module_class"] = module_class_path(type(self))

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.preprocessing = checkpoint.get("preprocessing", {})
        saved = checkpoint.get("hyper_parameters") or {}
        for marker, by_net in self.legacy_settings:
            if marker not in saved:
                self.hparams.update({**by_net.get("*", {}), **by_net.get(saved.get("net"), {})})
