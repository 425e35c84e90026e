"""Batch types a ``TaskModule`` accepts besides tensors (no dependencies: the modules and the CLI both use them)."""

from __future__ import annotations

from typing import Any


class RawBatch:
    """A batch of raw inputs that ``TaskModule.predict_step`` scores with ``predict_raw``.

    ``inputs`` is what the module's ``predict_raw`` takes (a list of texts or passengers, or
    ``uint8[N, 3, S, S]`` images); ``len(batch)`` is the number of items (an empty batch is scored as ``[]``).
    ``lightning_app.raw_inputs.RawChunk`` (the streaming predictors' chunk) is one.
    """

    __slots__ = ("inputs",)

    def __init__(self, inputs: Any = ()) -> None:
        self.inputs = inputs

    def __len__(self) -> int:
        return len(self.inputs)
