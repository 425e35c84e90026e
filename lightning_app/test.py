"""``python -m lightning_app.test --task NAME --ckpt PATH``: evaluate a checkpoint on the task's test split."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from lightning_app.checkpoints import evaluate
from lightning_app.cli import add_data_arguments, add_hardware_arguments, parse_limit, run_cli
from lightning_app.config import HardwareSettings
from lightning_app.registry import TASKS
from lightning_app.tables import metrics_table
from lightning_app.warning_filters import quiet_trainer_info


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_app.test",
        description="Evaluate a trained checkpoint on its task's test split (or the test split under --data-dir).",
    )
    parser.add_argument("--task", required=True, choices=sorted(TASKS))
    parser.add_argument("--ckpt", required=True, help="checkpoint written by python -m lightning_app.fit")
    parser.add_argument("--format", choices=["table", "json"], default="table", dest="output_format")
    parser.add_argument("--limit-test-batches", type=parse_limit, default=None, metavar="N|FRACTION")
    add_data_arguments(parser)
    add_hardware_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_trainer_info()
    metrics = evaluate(
        args.ckpt,
        args.task,
        hardware=HardwareSettings.from_flags(vars(args)),
        data={name: getattr(args, name) for name in ("data_dir", "cache_dir", "batch_size", "num_workers")},
        limit_test_batches=args.limit_test_batches,
    )
    if args.output_format == "json":
        print(json.dumps(metrics, indent=2, sort_keys=True))
    else:
        print(metrics_table(metrics, TASKS[args.task].module.baseline_name))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
