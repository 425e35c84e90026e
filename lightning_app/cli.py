"""Pieces shared by the command-line entry points: flags spelled as Lightning spells them, error handling."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

import torch.distributed

from datamodules.archives import DownloadError
from datamodules.errors import DataError
from lightning_app.callbacks import NonFiniteLossError
from lightning_app.errors import UsageError
from lightning_app.registry import TASKS
from lightning_app.warning_filters import silence_harmless_warnings


def task_help() -> str:
    lines = ["tasks and their models (--task NAME --model VARIANT):"]
    for task in TASKS.values():
        lines.append(f"  {task.name}: {task.description}")
        for name, variant in task.variants.items():
            default = " [default]" if name == task.default_variant else ""
            batch_size, lr = task.datamodule_settings(name)["batch_size"], task.module_settings(name)["lr"]
            lines.append(
                f"    {name}{default}: {variant.description} "
                f"(max_epochs={variant.max_epochs}, batch_size={batch_size}, lr={lr})"
            )
    return "\n".join(lines)


def parse_limit(value: str) -> float | int:
    """Lightning's limit_*_batches: an int is a number of batches, a float a fraction."""
    number = float(value)
    return int(number) if number.is_integer() and "." not in value else number


def parse_devices(value: str) -> str | int:
    return int(value) if value.isdigit() else value


def add_hardware_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``config.HardwareSettings`` (``HardwareSettings.from_flags(vars(args))`` reads them back)."""
    group = parser.add_argument_group("hardware (Lightning Trainer flags)")
    group.add_argument("--gpus", type=int, metavar="N", help="train on N CUDA GPUs (the tutorial's switch)")
    group.add_argument("--tpu-cores", type=int, metavar="N", help="train on N TPU cores (needs torch_xla)")
    group.add_argument("--accelerator", default="auto", help="cpu, gpu, tpu, mps or auto (default: auto)")
    group.add_argument("--devices", type=parse_devices, default="auto", help="number of devices, a list or auto")
    group.add_argument("--strategy", default="auto", help="auto, ddp, ddp_spawn, fsdp, ... (default: auto)")
    group.add_argument("--num-nodes", type=int, default=1, help="machines for multi-node DDP (default: 1)")
    group.add_argument("--precision", default="32-true", help="32-true, 16-mixed, bf16-mixed, ... (default: 32-true)")


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--data-dir", default=None, help="folder with the task's data files (default: bundled data)")
    group.add_argument(
        "--cache-dir",
        default=None,
        help="where decoded/preprocessed data is cached (default: $LIGHTNING_APP_CACHE or ~/.cache/lightning_app)",
    )
    group.add_argument("--batch-size", type=int, default=None, help="default: the model variant's")
    group.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes (default: 0)")


def parse_column_list(value: str) -> list[str]:
    """``--id-columns A,B``: column names separated by commas (``""``: none)."""
    return [name.strip() for name in value.split(",") if name.strip()]


def add_table_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of tasks that read a CSV table (``fit`` and ``tune``; a checkpoint keeps its own)."""
    group = parser.add_argument_group("tables (tasks that read a CSV table: titanic)")
    group.add_argument(
        "--target-column", default=None, metavar="NAME", help="the column to predict (default: Survived)"
    )
    group.add_argument(
        "--id-columns",
        type=parse_column_list,
        default=None,
        metavar="A,B",
        help="columns to drop, such as row ids (default: PassengerId when the file has it; '' for none)",
    )


#: Errors the command lines report in one line, without a traceback: (type, message prefix, exit code).
ONE_LINE_ERRORS: tuple[tuple[type[Exception], str, int], ...] = (
    (UsageError, "error", 2),
    (DataError, "data error", 1),
    (DownloadError, "download failed", 1),
    (NonFiniteLossError, "training stopped", 1),
)


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run ``main``; a bad flag or bad data ends with a one-line error and exit code 2 or 1."""
    prog = "lightning_app"
    silence_harmless_warnings()
    try:
        return main(argv)
    except tuple(error for error, _, _ in ONE_LINE_ERRORS) as err:
        prefix, code = next((prefix, code) for error, prefix, code in ONE_LINE_ERRORS if isinstance(err, error))
        print(f"{prog}: {prefix}: {err}", file=sys.stderr)
        return code
    except KeyboardInterrupt as err:
        # TrainingInterrupted says where fit stopped and how to resume; a bare Ctrl-C elsewhere has no message.
        print(f"{prog}: {err}" if str(err) else f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (``predict ... | head``): stop quietly, as other command-line tools do.
        # Python would report the failed flush of stdout at exit; point stdout at /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    finally:
        release_process_group()


def release_process_group() -> None:
    """Destroy the process group a multi-process run (``--devices 2 --strategy ddp``) leaves behind, while the
    interpreter is whole: left to interpreter exit, gloo's worker threads can abort a process that has done its
    work ("terminate called without an active exception", exit code -6 instead of 0 or 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
