"""Callbacks the ``fit`` entry point adds to every run."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the message says where."""


class FiniteLossGuard(pl.Callback):
    """Stop training at the first NaN or infinite training loss, before a checkpoint can store its weights.

    The check stays on the device (no host sync per step): each step folds
    ``isfinite(loss)`` into a device tensor that remembers the first bad global
    step and its loss. The host reads it every ``check_every_n_steps`` steps,
    before every validation (so ``ModelCheckpoint`` never saves the damaged
    weights) and at the end of each epoch, and then raises
    :class:`NonFiniteLossError` naming the epoch, batch and global step.
    """

    def __init__(self, check_every_n_steps: int = 50) -> None:
        self.check_every_n_steps = check_every_n_steps
        self._first_bad_step: torch.Tensor | None = None
        self._first_bad_loss: torch.Tensor | None = None
        self._epoch_start_steps: dict[int, int] = {}

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start_steps[trainer.current_epoch] = trainer.global_step

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        loss = loss.detach().float()
        if self._first_bad_step is None or self._first_bad_step.device != loss.device:
            self._first_bad_step = torch.full((), -1, dtype=torch.long, device=loss.device)
            self._first_bad_loss = torch.zeros((), device=loss.device)
        first_time_bad = ~torch.isfinite(loss) & (self._first_bad_step < 0)
        # global_step has already counted this batch's optimizer step, hence the - 1.
        self._first_bad_step = torch.where(first_time_bad, trainer.global_step - 1, self._first_bad_step)
        self._first_bad_loss = torch.where(first_time_bad, loss, self._first_bad_loss)
        if (batch_idx + 1) % self.check_every_n_steps == 0:
            self._raise_if_bad(trainer)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._raise_if_bad(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._raise_if_bad(trainer)

    def _raise_if_bad(self, trainer: pl.Trainer) -> None:
        if self._first_bad_step is None:
            return
        step = int(self._first_bad_step)
        if step < 0:
            return
        loss = float(self._first_bad_loss)
        epoch = max((e for e, start in self._epoch_start_steps.items() if start <= step), default=0)
        batch = step - self._epoch_start_steps.get(epoch, 0)
        kind = "NaN" if math.isnan(loss) else "infinite"
        saved = [path for callback in trainer.checkpoint_callbacks if (path := callback.best_model_path)]
        kept = f"checkpoints saved before it are intact in {Path(saved[0]).parent}" if saved else "no checkpoint saved"
        raise NonFiniteLossError(
            f"training loss became {kind} at epoch {epoch}, batch {batch} (global step {step}); "
            f"stopped before saving it ({kept}). Try a lower --lr."
        )
