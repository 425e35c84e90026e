"""Loading trained modules back for evaluation, prediction and export."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datamodules import TaskDataModule
from lightning_app.checkpoints import check_checkpoint_task, read_checkpoint, task_of_checkpoint
from lightning_app.errors import UsageError
from lightning_app.models import TaskModule
from lightning_app.registry import Task, get_task
from lightning_app.training import accepts_argument


@dataclass
class LoadedCheckpoint:
    task: Task
    module: TaskModule
    checkpoint: dict[str, Any]
    path: Path

    def datamodule(self, **overrides: Any) -> TaskDataModule:
        """The task's DataModule with the settings the checkpoint was trained with, ``overrides`` on top.

        Overrides set to ``None`` are ignored. Settings and overrides the DataModule does not take are dropped
        (covid19 checkpoints written before its unused ``seed`` argument was removed still hold one).
        """
        settings = dict(self.checkpoint.get("datamodule_hyper_parameters") or {})
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
    module = task.module.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    module.eval()
    return LoadedCheckpoint(task=task, module=module, checkpoint=checkpoint, path=Path(path))
