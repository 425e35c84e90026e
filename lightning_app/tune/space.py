"""A task's search space for ``python -m lightning_app.tune``: the registry's space with ``--search-space``
overrides on top, checked against what ``fit`` takes; sampled values applied to a run's settings."""

from __future__ import annotations

import typing
from collections.abc import Sequence
from typing import Any

from lightning_app.config import FitConfig, apply_params, check_arguments, resolve_config
from lightning_app.errors import UsageError
from lightning_app.registry import TASKS, Task
from lightning_app.tune.params import ARGUMENT_PREFIXES, SYNTAX, TUNABLE_FLAGS, Param, describe, parse_param


def tunable_defaults(task: Task, model: str | None) -> dict[str, Any]:
    """Every name a search space of ``task``/``model`` may hold, with the value ``fit`` uses by default."""
    _, _, resolved = resolve_config(FitConfig(task=task.name, model=model))
    defaults: dict[str, Any] = {flag: getattr(resolved, flag) for flag in TUNABLE_FLAGS}
    for prefix in ARGUMENT_PREFIXES:
        defaults.update({f"{prefix}.{name}": value for name, value in getattr(resolved, prefix).items()})
    return defaults


def check_search_space(task: Task, model: str | None, space: dict[str, Param], where: str) -> None:
    """Raise a one-line :class:`UsageError` (starting with ``where``) for a name ``fit`` does not take or a value
    of the wrong type for its argument."""
    defaults = tunable_defaults(task, model)
    for name, param in space.items():
        if name not in defaults:
            raise UsageError(f"{where}: unknown parameter '{name}' for {task.name}; {tunable_help(defaults)}")
        for value in param.examples():
            config = apply_params(FitConfig(task=task.name, model=model), {name: value})
            try:
                if "." in name:
                    resolve_config(config)
                else:
                    check_arguments("fit", {name: typing.get_type_hints(FitConfig)[name]}, {name: value})
                    if isinstance(value, (int, float)) and value <= 0:
                        raise UsageError(f"'{name}' must be positive, got {value}")
            except UsageError as err:
                raise UsageError(f"{where}: {name}={param}: {err}") from None


def tunable_help(defaults: dict[str, Any]) -> str:
    """The names a search space may hold, for messages."""
    return "the parameters are " + ", ".join(defaults)


def build_space(task: Task, model: str | None, overrides: Sequence[str], fixed: Sequence[str]) -> dict[str, Param]:
    """The registry's search space of ``task``/``model`` with ``--search-space NAME=SPEC`` ``overrides`` on top and
    the ``fixed`` flags (given on the command line) taken out."""
    space = dict(task.variant(model).search_space)
    defaults = tunable_defaults(task, model)
    given: dict[str, Param] = {}
    for override in overrides:
        name, equals, spec = override.partition("=")
        name = name.strip()
        if not equals or not name or not spec.strip():
            raise UsageError(f"--search-space {override!r}: expected NAME=SPEC with SPEC one of {SYNTAX}")
        if name not in defaults:
            raise UsageError(f"--search-space {override}: unknown parameter '{name}'; {tunable_help(defaults)}")
        try:
            given[name] = parse_param(spec.strip(), defaults[name])
        except ValueError as err:
            raise UsageError(f"--search-space {override}: {err}") from None
    check_search_space(task, model, given, "--search-space")
    for flag in fixed:
        if flag in given:
            raise UsageError(f"--{flag.replace('_', '-')} fixes '{flag}', which --search-space also searches; drop one")
        space.pop(flag, None)
    space.update(given)
    if not space:
        raise UsageError(
            f"task {task.name} ({task.variant(model).description}) declares no search space here; "
            f"give one with --search-space NAME=SPEC ({tunable_help(defaults)})"
        )
    return space


def space_help() -> str:
    """Every task's and variant's search space, for ``--help``."""
    lines = ["search spaces (--task NAME --model VARIANT), changed with --search-space NAME=SPEC:"]
    for task in TASKS.values():
        for name, variant in task.variants.items():
            lines.append(f"  {task.name} {name}: {describe(variant.search_space) or '(none: give --search-space)'}")
    lines.append("example: --search-space lr=1e-4:1e-2:log --search-space module_kwargs.hidden=32,64,128")
    return "\n".join(lines)
