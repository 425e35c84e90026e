"""``python -m lightning_app.predict --task NAME --ckpt PATH [INPUT ...]``: score raw inputs with a trained model.

* titanic: a passenger CSV in the Kaggle columns, or for a model trained on another table a CSV with its feature
  columns; CSV output carries every input column plus the prediction;
* imdb: review texts as arguments and/or one per line of --input-file (UTF-8, split on "\\n" only); a blank
  line keeps its row, with empty label and probability (null in JSON), so output rows match input lines, and
  is counted in one warning on stderr; --skip-blank-lines leaves blank lines out instead;
* cifar2: image files and folders of images;
* covid19: ``--days N`` forecasts past the end of the data and ``--plot`` draws history plus forecast.

titanic, imdb and cifar2 inputs are read, scored and written --batch-size items at a time (memory does not grow
with the input), through Lightning's Trainer.predict: --accelerator, --devices, --strategy ddp, --gpus and
--num-nodes spread the chunks over several processes (then --output is required, on a filesystem every machine
shares; the file is the one a single process writes). Rows go to stdout, or to --output, written under a
temporary name and renamed when complete, so a failed or interrupted run leaves no partial file. A progress bar
(rows, rows/s) goes to stderr when it is a terminal (--progress / --no-progress to force it).

A bad input (a line that is not UTF-8, a CSV row with the wrong number of fields or a bad value, an unreadable
image) stops the run with an error naming the file and line; with --skip-bad-inputs it is left out instead, with
one warning per item on stderr and a count at the end.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lightning_app.checkpoints import LoadedCheckpoint, load_checkpoint
from lightning_app.cli import add_hardware_arguments, run_cli
from lightning_app.config import HardwareSettings, build_trainer
from lightning_app.errors import UsageError
from lightning_app.predictors import Prediction, PredictRequest
from lightning_app.raw_inputs import StreamedInputs
from lightning_app.registry import TASKS
from lightning_app.tables import OUTPUT_FORMATS, render_records
from lightning_app.warning_filters import quiet_trainer_info


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
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        metavar="N",
        help="inputs read, scored and written at a time (default: 512 rows or reviews, 256 images)",
    )
    parser.add_argument(
        "--skip-bad-inputs",
        action="store_true",
        help="leave out bad inputs (undecodable lines, bad CSV rows, unreadable images) with a warning naming "
        "the file and line, instead of stopping at the first",
    )
    parser.add_argument(
        "--skip-blank-lines",
        action="store_true",
        help="imdb: leave blank lines of --input-file out of the output (default: keep each as an unscored row)",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )
    add_hardware_arguments(parser)
    return parser


@dataclass(frozen=True)
class PredictOptions:
    """How ``predict`` scores and writes: the format, the output file (``None``: stdout), inputs per chunk
    (``None``: the task's default), whether to skip bad inputs, the progress bar (``None``: when stderr is a
    terminal) and the hardware."""

    output_format: str = "table"
    output: Path | None = None
    batch_size: int | None = None
    skip_bad_inputs: bool = False
    progress: bool | None = None
    hardware: HardwareSettings = field(default_factory=HardwareSettings)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    options = PredictOptions(
        output_format=args.output_format,
        output=args.output,
        batch_size=args.batch_size,
        skip_bad_inputs=args.skip_bad_inputs,
        progress=args.progress,
        hardware=HardwareSettings.from_flags(vars(args)),
    )
    loaded = load_checkpoint(args.ckpt, args.task)
    request = PredictRequest(
        inputs=args.inputs,
        input_file=args.input_file,
        days=args.days,
        plot_path=args.plot,
        skip_blank_lines=args.skip_blank_lines,
    )
    prediction = loaded.task.predictor(loaded.module, request)
    if isinstance(prediction, StreamedInputs):
        return predict_streamed(options, loaded, prediction)
    return print_prediction(options, prediction)


def print_prediction(options: PredictOptions, prediction: Prediction) -> int:
    """Write a whole :class:`Prediction` (covid19's forecast) to stdout or ``--output``."""
    columns = prediction.columns if options.output_format == "table" else prediction.all_columns
    text = render_records(prediction.records, columns, options.output_format)
    if options.output is not None:
        from datamodules.files import atomic_write_bytes

        atomic_write_bytes(options.output, (text + "\n").encode())
        print(f"wrote {len(prediction.records)} predictions to {options.output}", file=sys.stderr)
    else:
        print(text)
    for path in prediction.written:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def predict_streamed(options: PredictOptions, loaded: LoadedCheckpoint, inputs: StreamedInputs) -> int:
    """Score ``inputs`` chunk by chunk with ``Trainer.predict`` on ``options.hardware``, writing rows as they come
    (see :mod:`lightning_app.streaming`)."""
    from pytorch_lightning.strategies.launchers import _MultiProcessingLauncher

    from lightning_app.streaming import MULTI_PROCESS_NEEDS_OUTPUT, ChunkWriter, RawChunkDataModule

    quiet_trainer_info()
    columns = inputs.columns if options.output_format == "table" else inputs.all_columns
    progress = options.progress if options.progress is not None else sys.stderr.isatty()
    writer = ChunkWriter(inputs, columns, options.output_format, options.output, progress)
    trainer = build_trainer(options.hardware, callbacks=[writer])
    if trainer.world_size > 1:
        if options.output is None:
            raise UsageError(MULTI_PROCESS_NEEDS_OUTPUT)
        if isinstance(trainer.strategy.launcher, _MultiProcessingLauncher):
            strategy = options.hardware.strategy
            raise UsageError(f"--strategy {strategy}: predict runs several processes with --strategy ddp only")
    batch_size = options.batch_size or inputs.default_batch_size
    datamodule = RawChunkDataModule(inputs, batch_size, skip_bad_inputs=options.skip_bad_inputs)
    try:
        with warnings.catch_warnings():
            # Lightning numbers the items of sampled batches only; every chunk carries its own index.
            warnings.filterwarnings("ignore", message="Couldn't infer the batch indices", category=UserWarning)
            trainer.predict(loaded.module, datamodule=datamodule, return_predictions=False)
        summary = writer.finish(trainer)
    except BaseException:
        writer.cleanup()
        raise
    if trainer.global_rank != 0:
        return 0
    if summary.skipped:
        print(f"lightning_app: skipped {summary.skipped} bad input(s) (see the warnings above)", file=sys.stderr)
    if summary.blank:
        print(
            f"lightning_app: warning: {summary.blank} blank input(s) not scored: their rows have an empty label and "
            "probability (--skip-blank-lines leaves them out)",
            file=sys.stderr,
        )
    if summary.output is not None:
        print(f"wrote {summary.rows} predictions to {summary.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
