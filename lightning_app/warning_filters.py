"""The few third-party warnings judged harmless, silenced by the CLIs and the test suite alike."""

from __future__ import annotations

import logging
import warnings

#: (message regex, category, why it is harmless)
HARMLESS_WARNINGS: list[tuple[str, type[Warning], str]] = [
    (
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        FutureWarning,
        "raised inside pytorch_lightning's own pytree helper on newer torch; nothing for users to change",
    ),
    (
        r"Sparse invariant checks are implicitly disabled",
        UserWarning,
        "the IMDB default's logistic-regression fit, which builds its sparse matrices from valid indices",
    ),
    (
        r"Sparse CSR tensor support is in beta state",
        UserWarning,
        "the IMDB default's logistic-regression fit multiplies sparse CSR matrices; only torch.sparse.mm is used",
    ),
    (
        r"The '\w+_dataloader' does not have many workers",
        UserWarning,
        "the DataModules serve in-memory tensors, where worker processes only add start-up time",
    ),
]


def silence_harmless_warnings() -> None:
    for message, category, _why in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


def quiet_trainer_info() -> None:
    """Hide Lightning's set-up lines ("GPU available", "TPU available", product tips) in commands whose output
    is the point (``test``, ``predict``); its warnings still show."""
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
