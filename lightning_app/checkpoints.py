"""Reading checkpoints safely: tensors and plain types only, never pickled code."""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from lightning_app.errors import UsageError
from lightning_app.models.base import module_class_path
from lightning_app.registry import TASKS, Task


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a Lightning checkpoint with ``torch.load(weights_only=True, mmap=True)``.

    The tensors of a zip-format file stay memory-mapped from it, so a caller that keeps the dict for its settings
    (``predict``, ``test``, ``export``) does not also keep a resident copy of the weights it loads.

    Raises :class:`UsageError` (one line, naming the file) for a missing file, a
    file that is not a checkpoint, or one holding pickled objects other than
    tensors and plain types — such a file is refused before any of its code runs.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such checkpoint file")
    try:
        # Only the zip format torch.save writes today can be mapped; older files are read whole (and refused the
        # same way when they hold code).
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found is None:
            raise UsageError(f"{path}: not a PyTorch checkpoint (unreadable pickle data)") from None
        raise UsageError(
            f"{path}: refused: it would import {found.group(1)} when loaded; "
            "checkpoints of this project hold only tensors and plain types"
        ) from None
    except Exception as err:  # torch raises several types for files that are not checkpoints at all
        raise UsageError(f"{path}: not a PyTorch checkpoint ({type(err).__name__}: {err})".splitlines()[0]) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UsageError(f"{path}: not a Lightning checkpoint (no 'state_dict')")
    return checkpoint


def task_of_checkpoint(checkpoint: dict[str, Any]) -> Task | None:
    """The registered task whose LightningModule wrote ``checkpoint``, if any."""
    written_by = checkpoint.get("module_class")
    return next((task for task in TASKS.values() if module_class_path(task.module) == written_by), None)


def check_checkpoint_task(path: str | Path, checkpoint: dict[str, Any], task: Task) -> None:
    """Raise :class:`UsageError` unless ``checkpoint`` was written by ``task``'s module."""
    owner = task_of_checkpoint(checkpoint)
    if owner is None:
        written_by = checkpoint.get("module_class", "an unknown module")
        raise UsageError(f"{path}: not a checkpoint of this project's tasks (written by {written_by})")
    if owner.name != task.name:
        raise UsageError(f"{path}: a checkpoint of task '{owner.name}', not '{task.name}'")
