"""Run settings in one place: what they hold, where they come from, how they are checked and resolved.

* :class:`FitConfig`: a training run's settings, exactly what its ``config.yaml`` stores; ``None`` means "the
  task variant's default" until :func:`resolve_config` fills it in from the registry.
* :class:`HardwareSettings`: where a Trainer runs (the flags ``fit``, ``test``, ``predict`` and ``tune`` share);
  :func:`build_trainer` makes the Trainer.
* ``config.yaml``: every run writes its resolved settings (:class:`SaveRunConfig`), the versions it ran with for
  the record; ``python -m lightning_app.fit --config FILE`` starts from them, the flags given override them
  (:func:`load_config_file`, :func:`parse_fit_settings`).

Objects (callbacks, Trainer extras), whether to test, and the run folder are arguments of
:func:`lightning_app.training.fit`, not settings: a config file never holds them.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import inspect
import platform
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import yaml

from datamodules import TaskDataModule
from datamodules.files import atomic_write_bytes
from lightning_app.errors import UsageError
from lightning_app.registry import Task, Variant, get_task
from lightning_app.tune.params import ARGUMENT_PREFIXES

CONFIG_FILE_NAME = "config.yaml"
#: Written for the record and ignored on reading.
VERSIONS_KEY = "versions"
#: ``field(metadata=...)`` of the settings TensorBoard's HPARAMS table does not show under ``trainer/``: the task and
#: model have columns of their own, the class arguments appear as the module's and DataModule's hyperparameters,
#: and the rest change how a run looks or where its data comes from, not what it learns.
NOT_A_HYPERPARAMETER = types.MappingProxyType({"hyperparameter": False})


@dataclass
class FitConfig:
    """A training run's settings (plain values only: what ``config.yaml`` stores); ``None`` means "the task
    variant's default"."""

    task: str = field(metadata=NOT_A_HYPERPARAMETER)
    model: str | None = field(default=None, metadata=NOT_A_HYPERPARAMETER)
    max_epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    seed: int = 42
    data_dir: str | None = None
    cache_dir: str | None = None
    #: Fetch the task's full-size data (needs internet) into ``data_dir`` (default ``data/full``) and train on it.
    download: bool = field(default=False, metadata=NOT_A_HYPERPARAMETER)
    #: The column a table task predicts, and the columns it drops (``None``: the DataModule's default); only for
    #: DataModules that take them (titanic: any CSV table).
    target_column: str | None = field(default=None, metadata=NOT_A_HYPERPARAMETER)
    id_columns: list[str] | None = field(default=None, metadata=NOT_A_HYPERPARAMETER)
    log_dir: str = "runs"
    num_workers: int = 0
    # The hardware flags: the fields of HardwareSettings (tests/test_fit.py checks they agree).
    precision: str = "32-true"
    accelerator: str = "auto"
    devices: str | int = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    gpus: int | None = None
    tpu_cores: int | None = None
    #: Resume from this checkpoint, or ``"last"``: the task's newest ``last.ckpt`` under ``log_dir``.
    ckpt_path: str | None = None
    fast_dev_run: int = 0
    limit_train_batches: float | int | None = None
    limit_val_batches: float | int | None = None
    limit_test_batches: float | int | None = None
    deterministic: bool = False
    #: Compile the network with ``torch.compile`` (in place: checkpoints keep their parameter names).
    compile: bool = False
    enable_progress_bar: bool = field(default=True, metadata=NOT_A_HYPERPARAMETER)
    #: Arguments of the task's LightningModule on top of the variant's (e.g. ``{"dropout": 0.1}``); ``lr`` is a flag.
    module_kwargs: dict[str, Any] = field(default_factory=dict, metadata=NOT_A_HYPERPARAMETER)
    #: Arguments of the task's DataModule on top of the variant's; ``batch_size``, ``seed``, ... are flags.
    datamodule_kwargs: dict[str, Any] = field(default_factory=dict, metadata=NOT_A_HYPERPARAMETER)

    @classmethod
    def from_flags(cls, values: Mapping[str, Any], **overrides: Any) -> FitConfig:
        """The settings among ``values`` (parsed flags, say; other keys left out), ``overrides`` on top."""
        keys = file_keys()
        return cls(**{**{key: value for key, value in values.items() if key in keys}, **overrides})

    @property
    def hardware(self) -> HardwareSettings:
        return HardwareSettings.from_flags(vars(self))

    def trainer_kwargs(self) -> dict[str, Any]:
        """The Trainer arguments these settings give besides the hardware (limits left unset stay Lightning's)."""
        limits = {
            name: value
            for name in ("limit_train_batches", "limit_val_batches", "limit_test_batches")
            if (value := getattr(self, name)) is not None
        }
        return {
            "max_epochs": self.max_epochs,
            "fast_dev_run": self.fast_dev_run,
            "deterministic": self.deterministic,
            "enable_progress_bar": self.enable_progress_bar,
            **limits,
        }

    def hyperparameters(self) -> dict[str, Any]:
        """The settings TensorBoard's HPARAMS table shows as ``trainer/<name>``."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata.get("hyperparameter", True)}


def file_keys() -> list[str]:
    """The keys a config file may hold (besides ``versions``): every :class:`FitConfig` field."""
    return [f.name for f in fields(FitConfig)]


@dataclass(frozen=True)
class HardwareSettings:
    """Where a Trainer runs: the hardware flags of every command line (``cli.add_hardware_arguments``); ``gpus``
    and ``tpu_cores``, the tutorial's switches, are mapped onto ``accelerator`` and ``devices``."""

    precision: str = "32-true"
    accelerator: str = "auto"
    devices: str | int = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    gpus: int | None = None
    tpu_cores: int | None = None

    @classmethod
    def from_flags(cls, values: Mapping[str, Any]) -> HardwareSettings:
        """The hardware flags among ``values``; those missing keep their defaults."""
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


def resolve_accelerator(hardware: HardwareSettings) -> tuple[str, str | int]:
    """Map the tutorial's ``--gpus N`` / ``--tpu-cores N`` onto Lightning 2's accelerator and devices."""
    gpus, tpu_cores = hardware.gpus, hardware.tpu_cores
    if gpus is not None and tpu_cores is not None:
        raise UsageError("--gpus and --tpu-cores are mutually exclusive")
    if gpus is not None:
        if hardware.accelerator not in ("auto", "gpu", "cuda"):
            raise UsageError(f"--gpus {gpus} conflicts with --accelerator {hardware.accelerator}")
        if gpus == 0:
            return "cpu", "auto"
        available = torch.cuda.device_count()
        if available == 0:
            raise UsageError(f"--gpus {gpus}: no CUDA GPU is visible on this machine; drop --gpus to use the CPU")
        if gpus > available:
            raise UsageError(f"--gpus {gpus}: only {available} CUDA GPU(s) are visible")
        return "gpu", gpus
    if tpu_cores is not None:
        if importlib.util.find_spec("torch_xla") is None:
            raise UsageError(f"--tpu-cores {tpu_cores}: torch_xla is not installed, so no TPU can be used here")
        return "tpu", tpu_cores
    return hardware.accelerator, hardware.devices


def build_trainer(
    hardware: HardwareSettings,
    *,
    logger: pl.loggers.Logger | bool = False,
    callbacks: Sequence[pl.Callback] = (),
    enable_progress_bar: bool = False,
    **trainer_kwargs: Any,
) -> pl.Trainer:
    """A Trainer on ``hardware``; ``trainer_kwargs`` are further ``pl.Trainer`` arguments."""
    accelerator, devices = resolve_accelerator(hardware)
    return pl.Trainer(
        accelerator=accelerator,
        devices=devices,
        strategy=hardware.strategy,
        num_nodes=hardware.num_nodes,
        precision=hardware.precision,
        logger=logger,
        callbacks=list(callbacks),
        enable_progress_bar=enable_progress_bar,
        **trainer_kwargs,
    )


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
    """``config`` as YAML, with the versions in use."""
    settings = {key: _plain(value) for key, value in asdict(config).items()}
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


#: Config-file keys with no flag of their own: the module's and DataModule's further arguments.
ARGUMENT_KEYS = ("module_kwargs", "datamodule_kwargs")


def parse_fit_settings(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> tuple[FitConfig, argparse.Namespace]:
    """The run's settings from ``--config`` (if any) with the command line's flags on top; and all the flags.

    ``parser`` declares one flag per :class:`FitConfig` field except :data:`ARGUMENT_KEYS` (``dest`` = the field),
    plus ``--config``; flags that are not settings (``--print-config``) come back in the namespace only.
    """
    args = parser.parse_args(argv)
    from_file: dict[str, Any] = {}
    if args.config is not None:
        from_file = load_config_file(args.config)
        if args.model is not None and from_file.get("model") not in (None, args.model):
            raise UsageError(
                f"--model {args.model} conflicts with model '{from_file['model']}' in {args.config}, whose "
                "module_kwargs and datamodule_kwargs belong to that model; drop --model or edit the file"
            )
        # The file's values become the parser's defaults, so only the flags actually given override them.
        parser.set_defaults(**{key: value for key, value in from_file.items() if key not in ARGUMENT_KEYS})
        args = parser.parse_args(argv)
    if args.task is None:
        raise UsageError("--task is required (or a --config file that names one)")
    arguments = {key: from_file[key] for key in ARGUMENT_KEYS if key in from_file}
    return FitConfig.from_flags(vars(args), **arguments), args


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


# --- resolution: defaults from the registry, class arguments checked, the run to resume --------------------------

#: DataModule arguments set by ``FitConfig`` flags rather than ``datamodule_kwargs``.
DATAMODULE_FLAGS = ("data_dir", "cache_dir", "batch_size", "num_workers", "seed", "target_column", "id_columns")
#: ``FitConfig`` flags only some DataModules take: an error for the others (the DataModule's default fills them in).
TABLE_FLAGS = ("target_column", "id_columns")
#: LightningModule arguments set by ``FitConfig`` flags, or by the data, rather than ``module_kwargs``.
MODULE_FLAGS = ("lr", "preprocessing")


def accepts_argument(cls: type, name: str) -> bool:
    """Whether ``cls(...)`` takes a keyword argument ``name``."""
    return name in inspect.signature(cls.__init__).parameters


def _check_overrides(what: str, cls: type, overrides: dict[str, Any], reserved: tuple[str, ...]) -> None:
    """One-line errors for arguments ``cls`` does not take, takes from a flag or the data, or of the wrong type."""
    known = set(inspect.signature(cls.__init__).parameters) - {"self"}
    for key in overrides:
        if key in reserved:
            raise UsageError(f"{what} '{key}' of {cls.__name__} is set by a flag or by the data, not here")
        if key not in known:
            raise UsageError(f"unknown {what} '{key}' for {cls.__name__}; it takes {sorted(known - set(reserved))}")
    check_arguments(f"{what}s of {cls.__name__}", init_type_hints(cls), overrides)


def resolve_config(config: FitConfig) -> tuple[Task, Variant, FitConfig]:
    """The task, its variant and ``config`` with every default filled in from the variant and the task's classes.

    ``module_kwargs`` and ``datamodule_kwargs`` come back complete (every argument the classes take, except
    the flags and what the data sets, such as the vocabulary size); calling this again changes nothing.
    """
    try:
        task: Task = get_task(config.task)
        variant = task.variant(config.model)
    except KeyError as err:
        raise UsageError(err.args[0]) from None
    _check_overrides("model argument", task.module, config.module_kwargs, MODULE_FLAGS + task.module.sizes_from_data)
    _check_overrides("data argument", task.datamodule, config.datamodule_kwargs, DATAMODULE_FLAGS)
    for name in TABLE_FLAGS:
        if getattr(config, name) is not None and not accepts_argument(task.datamodule, name):
            raise UsageError(f"--{name.replace('_', '-')}: task '{task.name}' does not read a table; drop the flag")
    module_settings = {**task.module_settings(config.model), **config.module_kwargs}
    datamodule_settings = {**task.datamodule_settings(config.model), **config.datamodule_kwargs}
    config = replace(
        config,
        model=config.model or task.default_variant,
        max_epochs=config.max_epochs if config.max_epochs is not None else variant.max_epochs,
        batch_size=config.batch_size or datamodule_settings["batch_size"],
        lr=config.lr if config.lr is not None else module_settings["lr"],
        **{
            name: getattr(config, name) if getattr(config, name) is not None else datamodule_settings.get(name)
            for name in TABLE_FLAGS
        },
        module_kwargs={
            key: value
            for key, value in module_settings.items()
            if key not in MODULE_FLAGS + task.module.sizes_from_data
        },
        datamodule_kwargs={key: value for key, value in datamodule_settings.items() if key not in DATAMODULE_FLAGS},
    )
    return task, variant, config


def apply_params(config: FitConfig, params: Mapping[str, Any]) -> FitConfig:
    """``config`` with ``params`` set, keyed as search spaces and data rules key them: ``fit`` flags directly
    (``lr``), class arguments in their dicts (``module_kwargs.hidden``)."""
    changes: dict[str, Any] = {name: value for name, value in params.items() if "." not in name}
    for prefix in ARGUMENT_PREFIXES:
        arguments = {name.partition(".")[2]: value for name, value in params.items() if name.startswith(f"{prefix}.")}
        if arguments:
            changes[prefix] = {**getattr(config, prefix), **arguments}
    return replace(config, **changes)


def settings_given(config: FitConfig) -> set[str]:
    """The settings ``config`` sets, keyed as data rules and search spaces key them: flags that are not ``None``
    and ``<module_kwargs|datamodule_kwargs>.<name>`` for the arguments in those dicts."""
    flags = {f.name for f in fields(config) if f.name not in ARGUMENT_PREFIXES and getattr(config, f.name) is not None}
    return flags | {f"{prefix}.{name}" for prefix in ARGUMENT_PREFIXES for name in getattr(config, prefix)}


def settings_from_data(config: FitConfig, datamodule: TaskDataModule) -> dict[str, Any]:
    """What the variant's data rules give for ``datamodule`` (set up for fitting), for the settings ``config``
    leaves unset (``None`` flags, arguments absent from ``module_kwargs``): an unresolved config, as the user gave
    it. A config already through :func:`resolve_config` sets everything, so it gets nothing."""
    try:
        variant = get_task(config.task).variant(config.model)
    except KeyError as err:
        raise UsageError(err.args[0]) from None
    given = settings_given(config)
    unset = [rule for rule in variant.data_rules if rule.setting not in given]
    if not unset:
        return {}
    profile = datamodule.data_profile()
    return {rule.setting: rule(profile) for rule in unset}


def find_last_checkpoint(log_dir: str | Path, task: str) -> Path | None:
    """The newest ``last.ckpt`` under ``<log_dir>/<task>/version_*/checkpoints/``."""
    candidates = list(Path(log_dir, task).glob("version_*/checkpoints/last.ckpt"))
    return max(candidates, key=lambda path: path.stat().st_mtime) if candidates else None


def resolve_resume(config: FitConfig) -> tuple[str | None, int | None]:
    """The checkpoint ``config.ckpt_path`` names (``"last"`` resolved) and the logger version to continue, if any."""
    if config.ckpt_path is None:
        return None, None
    if config.ckpt_path == "last":
        last = find_last_checkpoint(config.log_dir, config.task)
        if last is None:
            raise UsageError(
                f"--ckpt-path last: no last.ckpt under {Path(config.log_dir, config.task)}/version_*/checkpoints; "
                "train once without --ckpt-path first"
            )
        return str(last), int(last.parent.parent.name.removeprefix("version_"))
    return config.ckpt_path, None
