"""Callbacks the ``fit`` entry point adds to every run."""

from __future__ import annotations

import math
import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any
from weakref import proxy

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the message says where."""


class FiniteLossGuard(pl.Callback):
    """Stop training at the first NaN or infinite training loss, before a checkpoint can store its weights.

    Each step only queues its detached loss (no host sync per step). Every
    ``check_every_n_steps`` steps, before every validation (so ``ModelCheckpoint``
    never saves the damaged weights) and at the end of each epoch, the queued
    losses are checked at once and the first non-finite one raises
    :class:`NonFiniteLossError` naming its epoch, batch and global step.
    """

    def __init__(self, check_every_n_steps: int = 50) -> None:
        self.check_every_n_steps = check_every_n_steps
        self._queued: list[tuple[int, int, int, torch.Tensor]] = []  # (epoch, batch, global step, loss)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        # global_step has already counted this batch's optimizer step, hence the - 1.
        self._queued.append((trainer.current_epoch, batch_idx, trainer.global_step - 1, loss.detach()))
        if len(self._queued) >= self.check_every_n_steps:
            self._raise_if_bad(trainer)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._raise_if_bad(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._raise_if_bad(trainer)

    def _raise_if_bad(self, trainer: pl.Trainer) -> None:
        if not self._queued:
            return
        losses = torch.stack([loss.float() for *_, loss in self._queued])
        finite = torch.isfinite(losses)
        if bool(finite.all()):  # the one host sync per check
            self._queued.clear()
            return
        first = int((~finite).nonzero()[0])
        epoch, batch, step, _ = self._queued[first]
        kind = "NaN" if math.isnan(float(losses[first])) else "infinite"
        saved = [path for callback in trainer.checkpoint_callbacks if (path := callback.best_model_path)]
        kept = f"checkpoints saved before it are intact in {Path(saved[0]).parent}" if saved else "no checkpoint saved"
        raise NonFiniteLossError(
            f"training loss became {kind} at epoch {epoch}, batch {batch} (global step {step}); "
            f"stopped before saving it ({kept}). Try a lower --lr."
        )


class RandomStateInCheckpoints(pl.Callback):
    """Keep torch's global random state in checkpoints and restore it when training resumes.

    Lightning's checkpoints hold no random state, so a resumed run would draw each later epoch's shuffle (and
    dropout masks) from the generator as ``seed_everything`` left it, not as the interrupted run had it. The
    state is restored at the start of the first training epoch after resuming, after the sanity check (whose
    loaders draw from the generator too), so that a resumed run trains exactly as an uninterrupted one.
    Only tensors are stored: checkpoints stay loadable with ``weights_only=True``.
    """

    def __init__(self) -> None:
        self._to_restore: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        return {"torch": torch.get_rng_state(), "torch.cuda": cuda}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._to_restore = state_dict

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._to_restore is None:
            return
        torch.set_rng_state(self._to_restore["torch"])
        if self._to_restore["torch.cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self._to_restore["torch.cuda"])
        self._to_restore = None


class CtrlCAtBatchBoundaries(pl.Callback):
    """Ctrl-C during ``fit`` stops the run at the start of the next batch instead of wherever SIGINT lands.

    Python raises ``KeyboardInterrupt`` at any bytecode, also while a checkpoint is written or TensorBoard's writer
    holds its lock; Lightning's graceful shutdown then closes the logger and can wait on that lock for ever. Here the
    signal only sets a flag, and the ``KeyboardInterrupt`` is raised from the next training or validation batch
    start, where Lightning's shutdown (checkpoints kept, loggers closed) runs from a clean state. A second Ctrl-C
    before then interrupts at once. Outside the main thread (no signal handlers there) it does nothing.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.requested = False
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)

    def _restore(self) -> None:
        # Only while the handler is still this one: Lightning ignores SIGINT during its shutdown, keep that.
        if self._previous is not None and signal.getsignal(signal.SIGINT) == self._on_sigint:
            signal.signal(signal.SIGINT, self._previous)
        self._previous = None

    def _stop_if_requested(self) -> None:
        if self.requested:
            self.requested = False
            self._restore()
            raise KeyboardInterrupt

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self._stop_if_requested()

    def on_validation_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self._stop_if_requested()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()


class LatestCheckpoint(ModelCheckpoint):
    """``last.ckpt``: the state after the latest epoch, to resume from (``--ckpt-path last``).

    A ``ModelCheckpoint(filename="last")`` that writes every epoch, except where ``best`` (the run's best-model
    callback) has just saved the same step: then ``last.ckpt`` becomes a hard link to that file, the same bytes
    without a second write (IMDB's checkpoints are ~240 MB). Both callbacks save in the same hook, so nothing runs
    between the two saves. An existing ``last.ckpt`` is unlinked before it is written again, so a write never goes
    through the link into the best checkpoint. Where a hard link cannot be made (another file system, a remote
    ``dirpath``) the file is written as usual.
    """

    def __init__(self, best: ModelCheckpoint | None = None, **kwargs: Any) -> None:
        super().__init__(filename="last", save_top_k=1, enable_version_counter=False, **kwargs)
        self.best = best

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        if trainer.is_global_zero and os.path.lexists(filepath):
            os.remove(filepath)
        if not self._link_to_best(trainer, filepath):
            super()._save_checkpoint(trainer, filepath)
            return
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))

    def _link_to_best(self, trainer: pl.Trainer, filepath: str) -> bool:
        """Hard-link ``filepath`` to the file ``best`` saved at this step; False (nothing done) where it saved none
        or the link fails, on every process alike."""
        # The best callback's record of its last save (ModelCheckpoint internals, as its own save_last="link" reads
        # them); without them nothing is linked and last.ckpt is written.
        source = getattr(self.best, "_last_checkpoint_saved", None)
        saved_step = getattr(self.best, "_last_global_step_saved", None)
        linked = False
        if trainer.is_global_zero and source and saved_step == trainer.global_step:
            try:
                os.link(source, filepath)
                linked = True
            except OSError:  # no hard links there (another file system, a remote path): write the file
                linked = False
        return trainer.strategy.broadcast(linked)
