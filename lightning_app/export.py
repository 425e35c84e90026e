"""``python -m lightning_app.export --ckpt PATH --format torchscript|onnx``: a self-contained model file.

The exported graph maps a batch of encoded inputs to predictions (probabilities
for classifiers, next-day increments for the forecaster) exactly as the
LightningModule's ``predict_step`` does. Beside it, ``preprocessing.json``
holds what turns raw inputs into that batch (statistics, vocabulary, class
names) and describes the input and output tensors.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from datamodules.files import atomic_write_bytes
from lightning_app.checkpoints import load_checkpoint
from lightning_app.cli import run_cli
from lightning_app.errors import UsageError
from lightning_app.models import TaskModule

EXPORT_FORMATS = {"torchscript": "model.pt", "onnx": "model.onnx"}
_EXPORT_NOISE = (
    r"Converting a tensor to a Python boolean might cause the trace to be incorrect",
    r"_check_is_size will be removed",
    r"The tensor attributes .*_flat_weights.* were assigned during export",
)


class PredictionGraph(nn.Module):
    """``module.to_predictions(module.net(inputs))``: what ``predict_step`` returns, as one graph.

    Holds the plain network rather than the LightningModule, whose Trainer-bound
    properties the TorchScript tracer would trip over.
    """

    def __init__(self, module: TaskModule) -> None:
        super().__init__()
        self.net = module.inference_net()
        self.to_predictions = module.to_predictions

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.to_predictions(self.net(inputs))


def example_batch(module: TaskModule, batch_size: int = 2) -> torch.Tensor:
    example = module.example_input_array
    if not isinstance(example, torch.Tensor):
        raise UsageError(f"{type(module).__name__} sets no example_input_array, so it cannot be exported")
    return example.expand(batch_size, *example.shape[1:]).clone()


def _torchscript_bytes(graph: PredictionGraph, example: torch.Tensor) -> bytes:
    traced = torch.jit.trace(graph, example)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    return buffer.getvalue()


def _onnx_bytes(graph: PredictionGraph, example: torch.Tensor) -> bytes:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise UsageError("--format onnx needs the onnx extra: pip install -e '.[onnx]'") from None
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "model.onnx"
        batch = torch.export.Dim("batch", min=1)
        program = torch.onnx.export(
            graph, (example,), dynamo=True, input_names=["inputs"], output_names=["predictions"],
            dynamic_shapes={"inputs": {0: batch}}, verbose=False,
        )  # fmt: skip
        program.save(str(path), external_data=False)
        return path.read_bytes()


def export(checkpoint_path: str | Path, output_format: str, output_dir: str | Path | None = None) -> Path:
    """Export a checkpoint; returns the folder holding the model file and ``preprocessing.json``."""
    if output_format not in EXPORT_FORMATS:
        raise UsageError(f"--format {output_format}: choose from {sorted(EXPORT_FORMATS)}")
    loaded = load_checkpoint(checkpoint_path)
    graph = PredictionGraph(loaded.module).eval()
    example = example_batch(loaded.module)
    with torch.no_grad(), warnings.catch_warnings():
        # torch's LSTM and export internals warn about constructs that do not change these graphs' results;
        # the export tests check outputs against the module at another batch size.
        for message in _EXPORT_NOISE:
            warnings.filterwarnings("ignore", message=message)
        data = _onnx_bytes(graph, example) if output_format == "onnx" else _torchscript_bytes(graph, example)
    target = Path(output_dir) if output_dir else loaded.path.with_name(f"{loaded.path.stem}-{output_format}")
    metadata: dict[str, Any] = {
        "task": loaded.task.name,
        "format": output_format,
        "model_file": EXPORT_FORMATS[output_format],
        "input": {"shape": ["batch", *example.shape[1:]], "dtype": str(example.dtype).removeprefix("torch.")},
        "output": f"{type(loaded.module).__name__}.predict_step: {loaded.module.to_predictions.__doc__ or ''}".strip(),
        "hyper_parameters": dict(loaded.module.hparams),
        "preprocessing": loaded.module.preprocessing,
        **loaded.module.export_metadata(),
        "checkpoint": str(loaded.path),
    }
    atomic_write_bytes(target / EXPORT_FORMATS[output_format], data)
    atomic_write_bytes(target / "preprocessing.json", json.dumps(metadata, indent=2).encode())
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lightning_app.export", description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="checkpoint written by python -m lightning_app.fit")
    parser.add_argument("--format", required=True, choices=sorted(EXPORT_FORMATS), dest="output_format")
    parser.add_argument("--output-dir", default=None, help="default: <checkpoint name>-<format>/ beside it")
    args = parser.parse_args(argv)
    target = export(args.ckpt, args.output_format, args.output_dir)
    print(f"exported to {target}/ ({EXPORT_FORMATS[args.output_format]}, preprocessing.json)")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
