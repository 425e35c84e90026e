"""The command line of ``python -m lightning_app.tune``: its flags, the :class:`~lightning_app.tune.study.Search`
they describe (checked before anything is written), and :func:`main`, which opens the study, runs this process's
trials and prints the summary.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from lightning_app.cli import add_data_arguments, add_table_arguments, parse_devices, parse_limit
from lightning_app.config import FitConfig, resolve_config
from lightning_app.errors import UsageError
from lightning_app.registry import TASKS
from lightning_app.tune.params import SYNTAX, TUNABLE_FLAGS, describe
from lightning_app.tune.report import summarize
from lightning_app.tune.space import build_space, space_help
from lightning_app.tune.study import PRUNERS, Search, import_optuna, open_study
from lightning_app.tune.trials import run_trials

STUDY_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``python -m lightning_app.tune``; ``--help`` ends with every task's search space."""
    parser = argparse.ArgumentParser(
        prog="python -m lightning_app.tune",
        description=(
            "Search a task's hyperparameters with Optuna: each trial is a fit run scored on the validation metric; "
            "the study lives in a database, so it resumes after a kill and several processes can share it."
        ),
        epilog=space_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--task", required=True, choices=sorted(TASKS))
    parser.add_argument("--model", default=None, help="model variant of the task (default: 'default')")
    parser.add_argument("--trials", type=int, required=True, help="trials to finish in the study, all processes")
    parser.add_argument(
        "--search-space", action="append", default=[], metavar="NAME=SPEC",
        help=f"add or replace one parameter of the task's space; SPEC: {SYNTAX} (repeat the flag)",
    )  # fmt: skip
    parser.add_argument("--study-name", default=None, help="default: <task>-<model>")
    parser.add_argument(
        "--storage", default=None, metavar="URL",
        help="database URL (default: sqlite:///<log-dir>/<task>/tune-<study>/study.db); several machines: "
        "postgresql://... or mysql://...",
    )  # fmt: skip
    parser.add_argument("--resume", action="store_true", help="continue or join the study if it exists")
    parser.add_argument("--pruner", choices=sorted(PRUNERS), default="median", help="default: median")
    parser.add_argument("--sampler-seed", type=int, default=None, help="seed of the TPE sampler (one process)")
    fixed = parser.add_argument_group("every trial (a flag given fixes that parameter: it is not searched)")
    fixed.add_argument("--max-epochs", type=int, default=None, help="default: the model variant's, or searched")
    fixed.add_argument("--lr", "--learning-rate", dest="lr", type=float, default=None)
    fixed.add_argument("--seed", type=int, default=42, help="seed of every trial's split, initialisation, shuffling")
    fixed.add_argument("--deterministic", action="store_true")
    fixed.add_argument("--limit-train-batches", type=parse_limit, default=None, metavar="N|FRACTION")
    fixed.add_argument("--limit-val-batches", type=parse_limit, default=None, metavar="N|FRACTION")
    add_data_arguments(parser)
    add_table_arguments(parser)
    hardware = parser.add_argument_group("hardware (one device per trial; run one process per device)")
    hardware.add_argument("--accelerator", default="auto", help="cpu, gpu, mps or auto (default: auto)")
    hardware.add_argument("--devices", type=parse_devices, default=1, help="one device: 1 or its index list")
    hardware.add_argument("--precision", default="32-true")
    parser.add_argument("--log-dir", default="runs", help="trials go to <log-dir>/<task>/tune-<study> (default: runs)")
    return parser


def search_from_args(args: argparse.Namespace) -> tuple[Search, dict[str, Any]]:
    """The search the flags describe, checked before anything is written; and the study options."""
    if args.trials < 1:
        raise UsageError(f"--trials {args.trials}: give the number of trials to finish, at least 1")
    if isinstance(args.devices, int) and args.devices > 1:
        raise UsageError(f"--devices {args.devices}: a trial runs on one device; start one tune process per device")
    task = TASKS[args.task]
    try:
        task.variant(args.model)
    except KeyError as err:
        raise UsageError(err.args[0]) from None
    fixed = [flag for flag in TUNABLE_FLAGS if getattr(args, flag) is not None]
    space = build_space(task, args.model, args.search_space, fixed)
    base = FitConfig.from_flags(vars(args), enable_progress_bar=False)  # the flags that are fit settings
    _, _, base = resolve_config(base)
    study_name = args.study_name or f"{task.name}-{base.model}"
    if not STUDY_NAME_PATTERN.fullmatch(study_name):
        raise UsageError(f"--study-name {study_name!r}: use letters, digits, '.', '_' and '-' (it names a folder)")
    study_dir = Path(base.log_dir, task.name, f"tune-{study_name}")
    storage = args.storage or f"sqlite:///{study_dir / 'study.db'}"
    search = Search(task, base, space, args.trials, study_name, storage, study_dir)
    return search, {"resume": args.resume, "pruner": args.pruner, "sampler_seed": args.sampler_seed}


@contextlib.contextmanager
def quiet_libraries(optuna: ModuleType) -> Iterator[None]:
    """Lightning's per-run banners and Optuna's own trial log off (``tune`` prints one line per trial)."""
    lightning = logging.getLogger("pytorch_lightning")
    level, verbosity = lightning.level, optuna.logging.get_verbosity()
    lightning.setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        lightning.setLevel(level)
        optuna.logging.set_verbosity(verbosity)


def main(argv: Sequence[str] | None = None) -> int:
    """Open (or resume, or join) the study the flags describe, run trials until it holds ``--trials`` finished
    ones, and print the summary; 0 on success (usage errors raise :class:`UsageError`)."""
    args = build_parser().parse_args(argv)
    optuna = import_optuna()
    search, options = search_from_args(args)
    search.study_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with quiet_libraries(optuna):
        study = open_study(search, **options)
        finished = sum(t.state.is_finished() and t.state.name != "FAIL" for t in study.get_trials(deepcopy=False))
        print(
            f"study {search.study_name}: {finished} of {search.trials} trials finished; searching "
            f"{describe(search.space)}; trials in {search.study_dir}",
            flush=True,
        )
        ran = run_trials(search, study)
        print(summarize(search, study, ran, time.perf_counter() - started))
    return 0
