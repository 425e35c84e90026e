"""Run settings: :class:`FitConfig`, the ``config.yaml`` every run writes and ``fit --config`` reads back.

A run's ``config.yaml`` holds its fully resolved settings: the task, the model
variant, every flag (defaults filled in), the complete LightningModule and
DataModule arguments (``module_kwargs``, ``datamodule_kwargs``) and, for the
record, the versions it ran with. ``python -m lightning_app.fit --config FILE``
starts from those settings; flags on the command line override them.
"""

from __future__ import annotations

import importlib.metadata
import platform
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import yaml

from datamodules.files import atomic_write_bytes
from lightning_app.errors import UsageError

CONFIG_FILE_NAME = "config.yaml"
#: ``FitConfig`` fields never in a config file: objects rather than settings, and where and how ``tune`` places a
#: trial (a rerun from the file gets its own ``version_N`` folder and tests its best checkpoint).
NOT_IN_FILE = ("extra_trainer_kwargs", "extra_callbacks", "test", "run_version")
#: Written for the record and ignored on reading.
VERSIONS_KEY = "versions"


@dataclass
class FitConfig:
    """Everything a training run needs; ``None`` means "the task variant's default"."""

    task: str
    model: str | None = None
    max_epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    seed: int = 42
    data_dir: str | None = None
    cache_dir: str | None = None
    #: Fetch the task's full-size data (needs internet) into ``data_dir`` (default ``data/full``) and train on it.
    download: bool = False
    log_dir: str = "runs"
    num_workers: int = 0
    precision: str = "32-true"
    accelerator: str = "auto"
    devices: str | int = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    gpus: int | None = None
    tpu_cores: int | None = None
    ckpt_path: str | None = None
    fast_dev_run: int = 0
    limit_train_batches: float | int | None = None
    limit_val_batches: float | int | None = None
    limit_test_batches: float | int | None = None
    deterministic: bool = False
    #: Compile the network with ``torch.compile`` (in place: checkpoints keep their parameter names).
    compile: bool = False
    enable_progress_bar: bool = True
    #: Test the best checkpoint after training; ``python -m lightning_app.tune`` sets False for its trials.
    test: bool = True
    #: The run's folder under ``<log_dir>/<task>/`` (e.g. ``tune-<study>/trial-3``); default: the next ``version_N``.
    run_version: str | None = None
    #: Arguments of the task's LightningModule on top of the variant's (e.g. ``{"dropout": 0.1}``); ``lr`` is a flag.
    module_kwargs: dict[str, Any] = field(default_factory=dict)
    #: Arguments of the task's DataModule on top of the variant's; ``batch_size``, ``seed``, ... are flags.
    datamodule_kwargs: dict[str, Any] = field(default_factory=dict)
    extra_trainer_kwargs: dict[str, Any] = field(default_factory=dict)
    extra_callbacks: list[pl.Callback] = field(default_factory=list)


def file_keys() -> list[str]:
    """The keys a config file may hold (besides ``versions``)."""
    return [f.name for f in fields(FitConfig) if f.name not in NOT_IN_FILE]


def versions() -> dict[str, str]:
    """Python and the main packages' versions, recorded in every run's config."""
    found = {"python": platform.python_version()}
    for package in ("eat-pytorch-lightning", "torch", "pytorch-lightning", "torchmetrics"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively: what YAML's safe dumper writes."""
    if isinstance(value, (tuple, list)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def dump_config(config: FitConfig) -> str:
    """``config`` as YAML (the objects in ``extra_*`` left out), with the versions in use."""
    settings = {key: _plain(value) for key, value in asdict(config).items() if key not in NOT_IN_FILE}
    return yaml.safe_dump({**settings, VERSIONS_KEY: versions()}, sort_keys=False)


def matches_type(value: Any, hint: Any) -> bool:
    """Whether ``value`` (read from YAML) fits the type ``hint``: unions, ``None``, ``Literal``, plain types."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(matches_type(value, option) for option in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(value, origin or hint)


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "") if typing.get_origin(hint) else getattr(hint, "__name__", str(hint))


def check_arguments(where: str, hints: dict[str, Any], values: dict[str, Any]) -> None:
    """Raise a one-line :class:`UsageError` naming ``where`` and the key for a value of the wrong type."""
    for key, value in values.items():
        hint = hints.get(key)
        if hint is not None and not matches_type(value, hint):
            raise UsageError(f"{where}: '{key}' must be {_type_name(hint)}, got {value!r}")


def init_type_hints(cls: type) -> dict[str, Any]:
    """The type hints of ``cls.__init__``'s arguments (empty where they cannot be resolved)."""
    try:
        return typing.get_type_hints(cls.__init__)
    except (NameError, TypeError):
        return {}


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a config file into ``FitConfig`` keyword arguments, checking every key and type.

    Raises :class:`UsageError` naming the file and the key for anything that is not a setting of
    ``fit`` or has the wrong type; ``versions`` is ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--config {path}: no such file")
    try:
        settings = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise UsageError(f"--config {path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if settings is None:
        settings = {}
    if not isinstance(settings, dict):
        raise UsageError(f"--config {path}: expected a mapping of settings, got {type(settings).__name__}")
    settings.pop(VERSIONS_KEY, None)
    allowed = file_keys()
    unknown = [key for key in settings if key not in allowed]
    if unknown:
        raise UsageError(f"--config {path}: unknown key '{unknown[0]}'; the keys are {', '.join(allowed)}")
    check_arguments(f"--config {path}", typing.get_type_hints(FitConfig), settings)
    return settings


class SaveRunConfig(pl.Callback):
    """Write the run's resolved settings to ``config.yaml`` in its log folder when fitting starts (rank zero)."""

    def __init__(self, config: FitConfig) -> None:
        self.text = dump_config(config)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        log_dir = trainer.log_dir  # a collective call under DDP: every rank must make it
        if trainer.is_global_zero and log_dir:
            atomic_write_bytes(Path(log_dir) / CONFIG_FILE_NAME, self.text.encode())
