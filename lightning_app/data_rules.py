"""Settings that follow the data: rules a registry variant computes from the training split's profile.

A variant's defaults were chosen on the bundled data; some of them depend on how much data there is (epochs for
a few thousand texts, hash buckets for a small corpus). A :class:`DataRule` makes such a setting a function of
``TaskDataModule.data_profile()`` (training rows, classes, text lengths, ...), computed after the DataModule's
``setup`` and before the model is built. What a user sets (a flag, ``--config``, a tune trial) always wins; the
rules fill in only what was left unset, and the resolved values go to ``config.yaml``, the checkpoint's
hyperparameters and TensorBoard's HPARAMS like any other setting. Each rule gives the bundled data's setting back
on the bundled data, so the bundled results do not move.

This module imports nothing of the project's: the registry declares the rules, :mod:`lightning_app.config` applies
them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

#: What a rule may set: a ``fit`` flag that does not rebuild the data, or an argument of the task's LightningModule.
RULE_FLAGS = ("max_epochs", "lr")
MODULE_PREFIX = "module_kwargs."

Profile = Mapping[str, float]


@dataclass(frozen=True)
class DataRule:
    """One setting computed from the training data.

    ``setting`` is ``"max_epochs"``, ``"lr"`` or ``"module_kwargs.<name>"`` (the keys of a search space; the
    DataModule's own arguments are not among them: it is set up before the rules run); ``value`` maps the
    DataModule's :meth:`~datamodules.base.TaskDataModule.data_profile` to the setting; ``description`` says the
    rule in words for ``--help`` and the docs.
    """

    setting: str
    value: Callable[[Profile], int | float | str | bool]
    description: str

    def __post_init__(self) -> None:
        if self.setting not in RULE_FLAGS and not self.setting.startswith(MODULE_PREFIX):
            raise ValueError(f"a data rule sets {RULE_FLAGS} or '{MODULE_PREFIX}<name>', not '{self.setting}'")

    def __call__(self, profile: Profile) -> int | float | str | bool:
        try:
            return self.value(profile)
        except KeyError as err:
            raise KeyError(f"the rule for '{self.setting}' needs '{err.args[0]}' in the data profile") from None


def power_of_two_at_least(value: float, low: int, high: int) -> int:
    """The smallest power of two ``>= value``, clamped to ``[low, high]`` (both powers of two)."""
    return min(high, max(low, 1 << max(0, math.ceil(math.log2(max(value, 1.0))))))
