"""Checkpoints of ``fit`` read back: read safely (tensors and plain types only, never pickled code), checked
against the task and its network, loaded into a module on the CPU, and evaluated on the test split.

``predict``, ``test``, ``export`` and ``tune`` all go through :func:`load_checkpoint`; a checkpoint that cannot
be used (missing, truncated, another task's, holding code, or written for a network whose parameter names or
shapes differ) is a one-line :class:`UsageError` naming the file.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from datamodules import TaskDataModule
from lightning_app.config import HardwareSettings, accepts_argument, build_trainer
from lightning_app.errors import UsageError
from lightning_app.models import TaskModule
from lightning_app.models.base import module_class_path
from lightning_app.registry import TASKS, Task, get_task


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
        reason = f"{type(err).__name__}: {err}".splitlines()[0]
        raise UsageError(f"{path}: not a PyTorch checkpoint, or a truncated one ({reason})") from None
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


#: How ``torch.nn.Module.load_state_dict`` names what does not fit: (label in our message, pattern in torch's).
_STATE_DICT_PROBLEMS = (
    ("missing", r'Missing key\(s\) in state_dict: ((?:"[^"]*",? ?)+)'),
    ("unexpected", r'Unexpected key\(s\) in state_dict: ((?:"[^"]*",? ?)+)'),
    ("wrong shape", r"size mismatch for ([^:]+):"),
)


def _network_mismatch(path: str | Path, task: Task, checkpoint: dict[str, Any], err: RuntimeError) -> str:
    """A one-line message for a state dict that does not fit ``task``'s network, naming the first keys at fault."""
    found = []
    for label, pattern in _STATE_DICT_PROBLEMS:
        keys = [key for match in re.findall(pattern, str(err)) for key in re.findall(r'"([^"]*)"', match) or [match]]
        if keys:
            more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
            found.append(f"{label} {', '.join(keys[:3])}{more}")
    net = (checkpoint.get("hyper_parameters") or {}).get("net")
    network = f"{task.name} network" + (f" '{net}'" if isinstance(net, str) else "")
    details = "; ".join(found) or str(err).splitlines()[0]
    return (
        f"{path}: its weights do not fit this version's {network} ({details}); it was written by another "
        f"version of the network: retrain it (python -m lightning_app.fit --task {task.name})"
    )


@dataclass
class LoadedCheckpoint:
    """A checkpoint read back: its task, the module rebuilt from it (CPU, eval mode), the raw dict and its file."""

    task: Task
    module: TaskModule
    checkpoint: dict[str, Any]
    path: Path

    def datamodule(self, **overrides: Any) -> TaskDataModule:
        """The task's DataModule with the settings the checkpoint was trained with, ``overrides`` on top.

        A setting the checkpoint predates takes the DataModule's ``legacy_defaults`` value. Overrides set to
        ``None`` are ignored. Settings and overrides the DataModule does not take are dropped
        (covid19 checkpoints written before its unused ``seed`` argument was removed still hold one).
        """
        settings = dict(self.checkpoint.get("datamodule_hyper_parameters") or {})
        if settings:
            for key, value in self.task.datamodule.legacy_defaults.items():
                settings.setdefault(key, value)
        settings.update({key: value for key, value in overrides.items() if value is not None})
        return self.task.datamodule(
            **{key: value for key, value in settings.items() if accepts_argument(self.task.datamodule, key)}
        )


def load_checkpoint(path: str | Path, task_name: str | None = None) -> LoadedCheckpoint:
    """Read ``path`` safely, check it belongs to ``task_name`` (or find its task) and rebuild the module on the CPU."""
    checkpoint = read_checkpoint(path)
    if task_name is not None:
        try:
            task = get_task(task_name)
        except KeyError as err:
            raise UsageError(err.args[0]) from None
        check_checkpoint_task(path, checkpoint, task)
    else:
        task = task_of_checkpoint(checkpoint)
        if task is None:
            raise UsageError(f"{path}: not a checkpoint of this project's tasks")
    try:
        module = task.module.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    except RuntimeError as err:
        if "Error(s) in loading state_dict" not in str(err):
            raise
        raise UsageError(_network_mismatch(path, task, checkpoint, err)) from None
    module.eval()
    return LoadedCheckpoint(task=task, module=module, checkpoint=checkpoint, path=Path(path))


def evaluate(
    checkpoint: str | Path | LoadedCheckpoint,
    task_name: str | None = None,
    *,
    hardware: HardwareSettings | None = None,
    data: dict[str, Any] | None = None,
    limit_test_batches: float | int | None = None,
    deterministic: bool = False,
) -> dict[str, float]:
    """The test metrics of ``checkpoint`` (a file of ``task_name``, or one already loaded) on its task's test split.

    ``data`` overrides the DataModule settings the checkpoint was trained with (``data_dir``, ``cache_dir``,
    ``batch_size``, ``num_workers``; ``None`` values are ignored); ``hardware`` says where to run (default: auto).
    """
    loaded = checkpoint if isinstance(checkpoint, LoadedCheckpoint) else load_checkpoint(checkpoint, task_name)
    datamodule = loaded.datamodule(**(data or {}))
    limits = {"limit_test_batches": limit_test_batches} if limit_test_batches is not None else {}
    trainer = build_trainer(hardware or HardwareSettings(), deterministic=deterministic, **limits)
    results = trainer.test(loaded.module, datamodule=datamodule, verbose=False)
    return {key: float(value) for key, value in results[0].items()}
