"""``python -m lightning_app.fit --task NAME``: train, test the best checkpoint, print a summary.

``--config runs/<task>/version_N/config.yaml`` starts from a run's saved settings (flags override them);
``--print-config`` prints the resolved settings as such a file and exits.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lightning_app.cli import (
    add_data_arguments,
    add_hardware_arguments,
    add_table_arguments,
    parse_limit,
    run_cli,
    task_help,
)
from lightning_app.config import FitConfig, dump_config, parse_fit_settings, resolve_config, settings_given
from lightning_app.registry import TASKS
from lightning_app.training import fit, format_summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_app.fit",
        description="Train one of the tutorial tasks with a Lightning Trainer, then test its best checkpoint.",
        epilog=task_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--task", choices=sorted(TASKS), help="which task to train (required unless in --config)")
    parser.add_argument("--model", default=None, help="model variant of the task (see below; default: 'default')")
    training = parser.add_argument_group("training")
    training.add_argument("--max-epochs", type=int, default=None, help="default: the model variant's")
    training.add_argument("--lr", "--learning-rate", dest="lr", type=float, default=None, help="default: the variant's")
    training.add_argument("--seed", type=int, default=42, help="seed for splits, initialisation and shuffling")
    training.add_argument("--deterministic", action="store_true", help="use deterministic algorithms only")
    training.add_argument(
        "--compile", action="store_true", help="compile the network with torch.compile (see benchmarks/RESULTS.md)"
    )
    training.add_argument(
        "--ckpt-path", default=None, help="resume from this checkpoint, or 'last' for the task's newest last.ckpt"
    )
    add_data_arguments(parser)
    add_table_arguments(parser)
    parser.add_argument(
        "--download",
        action="store_true",
        help="imdb, cifar2: fetch the full-size data (needs internet) into --data-dir (default data/full), then train",
    )
    add_hardware_arguments(parser)
    quick = parser.add_argument_group("quick runs")
    quick.add_argument(
        "--fast-dev-run", type=int, nargs="?", const=1, default=0, metavar="N",
        help="run N (default 1) batches of train/val/test, no checkpoints or logs",
    )  # fmt: skip
    quick.add_argument("--limit-train-batches", type=parse_limit, default=None, metavar="N|FRACTION")
    quick.add_argument("--limit-val-batches", type=parse_limit, default=None, metavar="N|FRACTION")
    quick.add_argument("--limit-test-batches", type=parse_limit, default=None, metavar="N|FRACTION")
    output = parser.add_argument_group("output")
    output.add_argument("--log-dir", default="runs", help="TensorBoard logs and checkpoints go here (default: runs)")
    output.add_argument("--no-progress-bar", dest="enable_progress_bar", action="store_false")
    settings = parser.add_argument_group("settings files")
    settings.add_argument("--config", default=None, help="start from a run's config.yaml; flags given override it")
    settings.add_argument("--print-config", action="store_true", help="print the resolved settings as YAML and exit")
    return parser


def parse_config(argv: Sequence[str] | None = None) -> tuple[FitConfig, bool]:
    """The run's settings from ``--config`` (if any) with the command line's flags on top; and ``--print-config``."""
    config, args = parse_fit_settings(build_parser(), argv)
    return config, args.print_config


def main(argv: Sequence[str] | None = None) -> int:
    config, print_only = parse_config(argv)
    if print_only:
        _, variant, resolved = resolve_config(config)
        print(dump_config(resolved), end="")
        from_data = [rule.setting for rule in variant.data_rules if rule.setting not in settings_given(config)]
        if from_data:
            print(f"# not final: set from the training data when the run starts (unless given): {', '.join(from_data)}")
        return 0
    result = fit(config)
    if result.is_global_zero:
        print(format_summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
