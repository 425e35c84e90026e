"""Search-space parameters for ``python -m lightning_app.tune``: the kinds (:class:`FloatRange`, :class:`IntRange`,
:class:`Choice`) and the ``--search-space`` syntax. Building and checking a task's space is :mod:`.space`.

A search space maps what a trial changes to the values it may take. Keys are ``fit`` flags
(``lr``, ``batch_size``, ``max_epochs``) or arguments of the task's classes
(``module_kwargs.<name>``, ``datamodule_kwargs.<name>``). Each task's registry entry declares
its space next to its defaults; nothing here imports optuna: a parameter calls the
``suggest_*`` method of the trial it is handed. The registry imports this module, so it imports nothing of
the project's but its errors.

``--search-space NAME=SPEC`` syntax (SPEC):

- ``LOW:HIGH``: a uniform range (integers when the parameter's default is an integer);
- ``LOW:HIGH:log``: a log-uniform range (``LOW > 0``);
- ``LOW:HIGH:STEP``: an integer range in steps of ``STEP``;
- ``A,B,C``: a choice among these values (numbers, ``true``/``false``, ``none`` or text);
  a single value ``A`` fixes the parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

#: The ``fit`` flags a search space may hold; other keys are ``module_kwargs.<name>`` or ``datamodule_kwargs.<name>``.
TUNABLE_FLAGS = ("lr", "batch_size", "max_epochs")
#: The prefixes of the keys that set an argument of the task's LightningModule or DataModule.
ARGUMENT_PREFIXES = ("module_kwargs", "datamodule_kwargs")
SYNTAX = "LOW:HIGH, LOW:HIGH:log, LOW:HIGH:STEP or A,B,C"


class Trial(Protocol):
    """The part of ``optuna.trial.Trial`` the parameters use."""

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any: ...


@dataclass(frozen=True)
class FloatRange:
    """A real number between ``low`` and ``high`` (inclusive), uniform or (``log=True``) log-uniform."""

    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise ValueError(f"empty range: low {self.low:g} is not below high {self.high:g}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low:g}")

    def suggest(self, trial: Trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def contains(self, value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high

    def examples(self) -> tuple[Any, ...]:
        """Values the parameter can take, for checking them against the argument's type."""
        return (self.low, self.high)

    def __str__(self) -> str:
        return f"{self.low:g}:{self.high:g}" + (":log" if self.log else "")


@dataclass(frozen=True)
class IntRange:
    """An integer between ``low`` and ``high`` (inclusive) in steps of ``step``, or log-uniform."""

    low: int
    high: int
    step: int = 1
    log: bool = False

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise ValueError(f"empty range: low {self.low} is not below high {self.high}")
        if self.step < 1:
            raise ValueError(f"the step must be at least 1, got {self.step}")
        if self.log and (self.low <= 0 or self.step != 1):
            raise ValueError("a log range needs low > 0 and no step")

    def suggest(self, trial: Trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, step=self.step, log=self.log)

    def contains(self, value: Any) -> bool:
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            and self.low <= value <= self.high
            and (value - self.low) % self.step == 0
        )

    def examples(self) -> tuple[Any, ...]:
        return (self.low, self.high)

    def __str__(self) -> str:
        return f"{self.low}:{self.high}" + (":log" if self.log else f":{self.step}" if self.step != 1 else "")


@dataclass(frozen=True)
class Choice:
    """One of ``values`` (numbers, booleans, ``None`` or strings: what Optuna stores)."""

    values: tuple[Any, ...]

    def __post_init__(self) -> None:
        if not self.values:
            raise ValueError("a choice needs at least one value")
        for value in self.values:
            if value is not None and not isinstance(value, (bool, int, float, str)):
                raise ValueError(f"choice values must be numbers, booleans, None or strings, got {value!r}")

    def suggest(self, trial: Trial, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.values))

    def contains(self, value: Any) -> bool:
        return any(value == option and type(value) is type(option) for option in self.values)

    def examples(self) -> tuple[Any, ...]:
        return self.values

    def __str__(self) -> str:
        return ",".join(format_scalar(value) for value in self.values)


Param = FloatRange | IntRange | Choice


def format_scalar(value: Any) -> str:
    """``value`` as :func:`parse_scalar` reads it back."""
    if value is None:
        return "none"
    return str(value).lower() if isinstance(value, bool) else str(value)


def parse_scalar(text: str) -> Any:
    """A choice value from the command line: an int, a float, ``true``/``false``, ``none`` or the text itself."""
    text = text.strip()
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None, "null": None}.get(text.lower(), text)


def parse_param(spec: str, default: Any) -> Param:
    """A parameter from ``SPEC`` (see the module docstring); ``default`` (the parameter's default) sets int or float.

    Raises ``ValueError`` with a message naming what is wrong in ``spec``.
    """
    if ":" not in spec:
        values = [part.strip() for part in spec.split(",")]
        if any(not value for value in values):
            raise ValueError(f"empty value in {spec!r}; expected {SYNTAX}")
        return Choice(tuple(parse_scalar(value) for value in values))
    parts = spec.split(":")
    if len(parts) not in (2, 3):
        raise ValueError(f"{spec!r} is not {SYNTAX}")
    integer = isinstance(default, int) and not isinstance(default, bool)
    if not integer and not isinstance(default, float):
        raise ValueError(f"a range needs a numeric parameter, and its default is {default!r}; list values: A,B,C")
    number = int if integer else float
    option = parts[2].strip() if len(parts) == 3 else ""
    try:
        low, high = number(parts[0]), number(parts[1])
        step = number(option) if option and option != "log" else None
    except ValueError:
        raise ValueError(f"{spec!r}: expected {'integer' if integer else 'numeric'} LOW:HIGH[:log|:STEP]") from None
    if integer:
        return IntRange(low, high, step=step or 1, log=option == "log")
    if step is not None:
        raise ValueError(f"{spec!r}: a step is for integer parameters; a real range takes LOW:HIGH or LOW:HIGH:log")
    return FloatRange(low, high, log=option == "log")


def describe(space: dict[str, Param]) -> str:
    """``name=SPEC`` pairs in the ``--search-space`` syntax, one string."""
    return " ".join(f"{name}={param}" for name, param in space.items())


def format_value(value: Any) -> str:
    """A sampled value for tables and trial lines: floats to three significant digits."""
    return f"{value:.3g}" if isinstance(value, float) else format_scalar(value)
