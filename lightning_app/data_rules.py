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

#: What a rule may set: these ``fit`` flags, or an argument of the task's LightningModule. ``batch_size`` is the one
#: DataModule setting among them: a rule that changes it has the DataModule built again (its set-up data is cached).
RULE_FLAGS = ("max_epochs", "lr", "batch_size")
MODULE_PREFIX = "module_kwargs."

Profile = Mapping[str, float]


@dataclass(frozen=True)
class DataRule:
    """One setting computed from the training data.

    ``setting`` is ``"max_epochs"``, ``"lr"``, ``"batch_size"`` or ``"module_kwargs.<name>"`` (keys as a search
    space has them; the DataModule's other arguments are not among them: the profile is read from the set-up
    DataModule, so they must not change it); ``value`` maps the
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


def describe_settings(settings: Mapping[str, object]) -> str:
    """Settings keyed as rules key them, for people: ``max_epochs 4, nb_buckets 1024``."""
    return ", ".join(f"{name.removeprefix(MODULE_PREFIX)} {value}" for name, value in settings.items())


def clip(value: float, low: float, high: float) -> float:
    return min(high, max(low, value))


# -- tables (the titanic task's default) ---------------------------------------------------------------------------
#: Training rows of the bundled Titanic split, where the table rules give the hand-chosen 30 epochs and batch 128.
TITANIC_TRAIN_ROWS = 605
#: At most this many training rows seen in a run (a few tens of seconds on two CPU cores).
TABLE_ROWS_SEEN = 1_000_000


def table_max_epochs(profile: Profile) -> int:
    """30 epochs at Titanic's 605 rows, growing with the square root of the rows up to 100, and no more than a
    million rows seen: a 3,300-row table gets 70 epochs (+2.5 points of validation accuracy on wine_quality over
    30), a 28,000-row one 36."""
    rows = profile["train_size"]
    epochs = round(clip(30 * math.sqrt(rows / TITANIC_TRAIN_ROWS), 30, 100))
    return max(1, min(epochs, TABLE_ROWS_SEEN // max(1, int(rows))))


def table_batch_size(profile: Profile) -> int:
    """A power of two near a fiftieth of the rows, from 128 (Titanic, tables under ~9,000 rows) to 512 (adult's
    27,700 rows: the same validation accuracy as 128 in 2.4x less time)."""
    return int(clip(2 ** round(math.log2(max(1.0, profile["train_size"] / 50))), 128, 512))


#: The table learning rates: the hand-chosen Titanic one, and the one from :data:`TABLE_LARGE_ROWS` training rows on.
TABLE_LR = 3e-3
TABLE_LARGE_LR = 1e-3
#: The same threshold as ``datamodules.tabular.LARGE_TABLE_ROWS`` (the bins rule), kept here as this module imports
#: nothing of the project's; a test checks that they agree.
TABLE_LARGE_ROWS = 10_000


def table_lr(profile: Profile) -> float:
    """3e-3 (Titanic's) under 10,000 training rows, 1e-3 from there, where the batch rule gives batches of 256-512
    and a run takes a thousand or more steps: adult's 27,700 rows get validation accuracy 0.8694 vs 0.8675 at 3e-3
    (128 bins, seeds 42-44; 0.8683 vs 0.8673 on seeds 45-46; validation loss 0.280 vs 0.281). wine_quality's
    2,800 rows keep 3e-3 (0.600 vs 0.596 at 1e-3, seeds 42-44), as do german_credit's 850 (0.783 vs 0.773, seeds
    42-46; both measured with 128 bins)."""
    return TABLE_LARGE_LR if profile["train_size"] >= TABLE_LARGE_ROWS else TABLE_LR


# -- text (the imdb task's default) --------------------------------------------------------------------------------
#: Training texts of the bundled IMDB split (after the validation carve), where the text rules give one epoch.
IMDB_TRAIN_TEXTS = 22_500
#: Rows of the NBSVM view's hash table over all its outputs: the binary IMDB model's one output has 2^24.
NB_TABLE_ROWS = 1 << 24
#: Hash buckets per training token (IMDB: 3 x 5.3 million tokens rounded up to a power of two is 2^24), and the least.
NB_BUCKETS_PER_TOKEN = 3
NB_MIN_BUCKETS = 1 << 16


def text_max_epochs(profile: Profile) -> int:
    """About as many steps as one epoch over IMDB's 22,500 reviews, 1 to 4 epochs: 4,900 questions (trec) get 4
    (+3.3 points of validation accuracy over 1), 7,200 sentences (subj) 3."""
    return int(clip(round(IMDB_TRAIN_TEXTS / max(1, profile["train_size"])), 1, 4))


def text_nb_buckets(profile: Profile) -> int:
    """Hash buckets of the NBSVM view per output: the power of two at or above 3 per training token, as IMDB's
    5.3 million tokens get 2^24 (the same share of colliding n-grams on any corpus), from 2^16; the table over all
    outputs no larger than the binary IMDB one (k classes: at most 2^24 / k rounded down to a power of two).
    Small corpora train 1.5-3x faster with the same validation accuracy (subj 2^19, custrev 2^18, trec 2^16)."""
    classes = int(profile["num_classes"])
    outputs = 1 if classes == 2 else classes
    tokens = profile["train_size"] * profile["mean_tokens"]
    wanted = 2 ** math.ceil(math.log2(max(1.0, NB_BUCKETS_PER_TOKEN * tokens)))
    return int(clip(wanted, NB_MIN_BUCKETS, NB_TABLE_ROWS >> math.ceil(math.log2(outputs))))


# -- images (the cifar2 task's default) ----------------------------------------------------------------------------
#: Training images of the bundled cifar2 split (after the validation carve), where the image rule gives 25 epochs.
CIFAR2_TRAIN_IMAGES = 9_000


def image_max_epochs(profile: Profile) -> int:
    """25 epochs at cifar2's 9,000 training images, growing with the square root of how many fewer there are, up
    to 100: 648 flower photos get 93 (validation accuracy 0.75 at 25 epochs, 0.88 at 50, 0.90 at 100; two
    seeds), 3,600 digits 40. The one-cycle schedule spans the run, so its shape stays the same."""
    return round(clip(25 * math.sqrt(CIFAR2_TRAIN_IMAGES / max(1, profile["train_size"])), 25, 100))
