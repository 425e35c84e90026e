"""Optimizers and learning-rate schedules, chosen by name: the one mechanism every task module uses.

A module describes its optimisation as an :class:`OptimizerSpec` (plain values: names and numbers) built from its
hyperparameters (``TaskModule.optimizer_spec``); ``TaskModule.configure_optimizers`` hands it to
:func:`configure_optimization`, which looks the names up in :data:`OPTIMIZERS` and :data:`SCHEDULES`. Checkpoints
keep only those plain hyperparameters, so they load with ``weights_only=True``; a new optimizer or schedule is one
entry in a table here, not a branch in every module.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

#: Optimizer classes by the name an :class:`OptimizerSpec` (and the modules' ``optimizer`` hyperparameter) uses.
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "adagrad": torch.optim.Adagrad,
    "sgd": torch.optim.SGD,
}

#: What Lightning's ``configure_optimizers`` may return: an optimizer, or a dict with its scheduler.
Optimization = torch.optim.Optimizer | dict[str, Any]
#: A schedule builder: ``(optimizer, spec, total optimizer steps of the run) -> Lightning's lr_scheduler config``,
#: or ``None`` for no scheduler (e.g. a run too short for the schedule).
ScheduleBuilder = Callable[[torch.optim.Optimizer, "OptimizerSpec", float], dict[str, Any] | None]


@dataclass(frozen=True)
class OptimizerSpec:
    """How to optimise a module: the optimizer's name and arguments, and the learning-rate schedule's name.

    Attributes:
        name: a key of :data:`OPTIMIZERS`.
        lr: the learning rate (with a schedule such as ``"one_cycle"``, its peak).
        weight_decay: the optimizer's ``weight_decay`` (L2 for Adam, SGD and Adagrad; decoupled for AdamW);
            ``None``: the optimizer's default (0 but for AdamW's 0.01).
        options: other arguments of the optimizer (``momentum``, ``nesterov``, ...).
        decay_matrices_only: two parameter groups, in parameter order: the parameters with more than one dimension
            with ``weight_decay``, the others (biases, normalisation weights) with none.
        schedule: a key of :data:`SCHEDULES` (``"constant"``: no scheduler).
    """

    name: str
    lr: float
    weight_decay: float | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    decay_matrices_only: bool = False
    schedule: str = "constant"

    def __post_init__(self) -> None:
        check_choice("optimizer", self.name, OPTIMIZERS)
        check_choice("schedule", self.schedule, SCHEDULES)


def check_choice(what: str, name: str, allowed: Iterable[str]) -> None:
    """A ``ValueError`` naming the choices when ``name`` is not among ``allowed``."""
    allowed = list(allowed)
    if name not in allowed:
        raise ValueError(f"unknown {what} {name!r}; choose from {', '.join(repr(choice) for choice in allowed)}")


def build_optimizer(spec: OptimizerSpec, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer ``spec`` names over ``parameters`` (one group, or two with ``decay_matrices_only``)."""
    optimizer_class = OPTIMIZERS[spec.name]
    if not spec.decay_matrices_only:
        decay = {} if spec.weight_decay is None else {"weight_decay": spec.weight_decay}
        return optimizer_class(parameters, lr=spec.lr, **decay, **spec.options)
    matrices, others = [], []
    for param in parameters:
        (matrices if param.ndim > 1 else others).append(param)
    decay = spec.weight_decay if spec.weight_decay is not None else 0.0
    groups = [{"params": matrices, "weight_decay": decay}, {"params": others, "weight_decay": 0.0}]
    return optimizer_class(groups, lr=spec.lr, **spec.options)


def one_cycle(optimizer: torch.optim.Optimizer, spec: OptimizerSpec, total_steps: float) -> dict[str, Any] | None:
    """OneCycle stepped every batch: linear warm-up to ``spec.lr`` over the first quarter (at least two steps), then
    linear decay; ``None`` (no scheduler) for endless runs or runs of fewer than 4 steps."""
    if not math.isfinite(total_steps) or total_steps < 4:
        return None
    total_steps = int(total_steps)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=spec.lr,
        total_steps=total_steps,
        pct_start=max(0.25, 2 / total_steps),  # the warm-up needs at least two steps
        anneal_strategy="linear",
    )
    return {"scheduler": scheduler, "interval": "step"}


#: Schedule builders by name; ``None``: a constant learning rate (no scheduler).
SCHEDULES: dict[str, ScheduleBuilder | None] = {"constant": None, "one_cycle": one_cycle}


def configure_optimization(
    spec: OptimizerSpec,
    parameters: Iterable[torch.nn.Parameter],
    total_steps: Callable[[], float] | None = None,
) -> Optimization:
    """What ``configure_optimizers`` returns for ``spec``: the optimizer alone, or with its scheduler.

    ``total_steps`` gives the run's optimizer steps (``trainer.estimated_stepping_batches``); it is only called
    when the schedule needs it, and without it (a module used outside a Trainer) there is no scheduler.
    """
    optimizer = build_optimizer(spec, parameters)
    builder = SCHEDULES[spec.schedule]
    if builder is None or total_steps is None:
        return optimizer
    scheduler = builder(optimizer, spec, total_steps())
    return optimizer if scheduler is None else {"optimizer": optimizer, "lr_scheduler": scheduler}
