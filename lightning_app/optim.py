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
from torch.optim.adagrad import adagrad


class Adagrad(torch.optim.Adagrad):
    """:class:`torch.optim.Adagrad` with a faster update for row-sparse gradients (``nn.Embedding`` /
    ``nn.EmbeddingBag`` with ``sparse=True``): the same arithmetic and state, faster on CPU (a step of the text
    default on a subj-sized batch 8.5 -> 5.5 ms; bundled IMDB's ``trainer.fit`` 45 s -> 41 s, one thread).

    torch's sparse branch ends in ``param.add_(sparse_update, alpha=-lr)``, a scaled scatter-add that takes ~100 ns
    per touched row on CPU (torch 2.14), up to 17x an unscaled one. Here the touched rows are gathered, updated by
    the same ``add_(..., alpha=-lr)`` (the same rounding: the results are bit for bit torch's) and written back.
    Every other gradient (dense, weight decay, more than one sparse dimension) takes torch's own functional
    ``adagrad``; optimizer states of either class load in the other.
    """

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, sums, steps = [], [], [], []
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if self._updates_rows(param.grad, group):
                    self._row_sparse_step(param, state, group)
                else:
                    params.append(param)
                    grads.append(param.grad)
                    sums.append(state["sum"])
                    steps.append(state["step"])
            if params:
                adagrad(
                    params,
                    grads,
                    sums,
                    steps,
                    lr=group["lr"],
                    weight_decay=group["weight_decay"],
                    lr_decay=group["lr_decay"],
                    eps=group["eps"],
                    has_sparse_grad=any(grad.is_sparse for grad in grads),
                    foreach=group["foreach"],
                    maximize=group["maximize"],
                    differentiable=group["differentiable"],
                    has_complex=any(torch.is_complex(param) for param in params),
                    fused=group["fused"],
                    grad_scale=getattr(self, "grad_scale", None),
                    found_inf=getattr(self, "found_inf", None),
                )
        return loss

    @staticmethod
    def _updates_rows(grad: torch.Tensor, group: dict[str, Any]) -> bool:
        """Whether :meth:`_row_sparse_step` takes this gradient (torch raises for sparse ones with weight decay)."""
        return (
            grad.is_sparse
            and grad.sparse_dim() == 1
            and not torch.is_complex(grad)
            and group["weight_decay"] == 0
            and not group["differentiable"]
        )

    @staticmethod
    def _row_sparse_step(param: torch.Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        """torch's sparse Adagrad update of the rows ``param.grad`` touches, without a scaled scatter-add."""
        state["step"] += 1
        lr = float(group["lr"]) / (1 + (float(state["step"]) - 1) * group["lr_decay"])
        rows, values = _summed_rows(param.grad)  # the update is not linear in the gradient: each row once
        if group["maximize"]:
            values = -values
        state["sum"].index_add_(0, rows, values.square())
        std = state["sum"].index_select(0, rows).sqrt_().add_(group["eps"])
        param.index_copy_(0, rows, param.index_select(0, rows).add_(values / std, alpha=-lr))


def _summed_rows(grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A row-sparse gradient's distinct rows, ascending, and the sum of each row's values: ``grad.coalesce()``'s
    indices and values in about a third of its time (the row ids sorted as int32 where they fit). Each row's values
    are added in the order of torch's default sort, as ``coalesce`` adds them: the same sums, bit for bit."""
    indices, values = grad._indices()[0], grad._values()
    if grad.is_coalesced():
        return indices, values
    keys = indices.int() if grad.shape[0] <= torch.iinfo(torch.int32).max else indices
    ordered, order = torch.sort(keys)
    first = torch.ones_like(ordered, dtype=torch.bool)
    first[1:] = ordered[1:] != ordered[:-1]
    summed = values.new_zeros((int(first.sum()), *values.shape[1:]))
    summed.index_add_(0, torch.cumsum(first, 0) - 1, values.index_select(0, order))
    return ordered[first].long(), summed


#: Optimizer classes by the name an :class:`OptimizerSpec` (and the modules' ``optimizer`` hyperparameter) uses.
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "adagrad": Adagrad,
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
