"""``python -m lightning_app.predict --task NAME --ckpt PATH [INPUT ...]``: score raw inputs with a trained model.

* titanic: a passenger CSV in the Kaggle columns; CSV output carries every input column plus the prediction;
* covid19: ``--days N`` forecasts past the end of the data and ``--plot`` draws history plus forecast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from lightning_app.cli import run_cli
from lightning_app.inference import load_checkpoint
from lightning_app.predictors import PredictRequest
from lightning_app.registry import TASKS
from lightning_app.tables import OUTPUT_FORMATS, render_records


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_app.predict",
        description=__doc__.splitlines()[0].split(": ", 1)[1],
        epilog="\n".join(__doc__.splitlines()[2:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--task", required=True, choices=sorted(TASKS))
    parser.add_argument("--ckpt", required=True, help="checkpoint written by python -m lightning_app.fit")
    parser.add_argument("inputs", nargs="*", help="raw inputs: review texts, image paths or folders, a CSV file")
    parser.add_argument("--input-file", type=Path, default=None, help="a file of inputs (for text: one per line)")
    parser.add_argument("--days", type=int, default=None, help="forecast horizon for time-series tasks (default 7)")
    parser.add_argument("--plot", type=Path, default=None, help="save a figure of the prediction here (PNG)")
    parser.add_argument("--format", choices=OUTPUT_FORMATS, default="table", dest="output_format")
    parser.add_argument("--output", type=Path, default=None, help="write the result here instead of stdout")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    loaded = load_checkpoint(args.ckpt, args.task)
    request = PredictRequest(inputs=args.inputs, input_file=args.input_file, days=args.days, plot_path=args.plot)
    prediction = loaded.task.predictor(loaded.module, request)
    columns = prediction.columns if args.output_format == "table" else prediction.all_columns
    text = render_records(prediction.records, columns, args.output_format)
    if args.output is not None:
        from datamodules.cache import atomic_write_bytes

        atomic_write_bytes(args.output, (text + "\n").encode())
        print(f"wrote {len(prediction.records)} predictions to {args.output}", file=sys.stderr)
    else:
        print(text)
    for path in prediction.written:
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
