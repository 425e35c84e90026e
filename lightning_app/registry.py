"""The task registry: one entry per task, mapping its name to its classes and defaults.

The CLIs read this table and hold no task-specific code. To add a task, write a
``TaskDataModule`` and a ``TaskModule`` and register them here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytorch_lightning as pl

from datamodules import Cifar2DataModule, Covid19DataModule, IMDBDataModule, TaskDataModule, TitanicDataModule
from lightning_app.data_rules import (
    DataRule,
    image_max_epochs,
    table_batch_size,
    table_lr,
    table_max_epochs,
    text_max_epochs,
    text_nb_buckets,
)
from lightning_app.models import Cifar2Module, Covid19Module, IMDBModule, TaskModule, TitanicModule
from lightning_app.predictors import (
    Prediction,
    PredictRequest,
    predict_cifar2,
    predict_covid19,
    predict_imdb,
    predict_titanic,
)
from lightning_app.raw_inputs import StreamedInputs
from lightning_app.review import ConfusionMatrixFigure, ImagePredictionGrid, PRCurve, ValidationTextTable
from lightning_app.tune.params import Choice, FloatRange, IntRange, Param


def class_defaults(cls: type) -> dict[str, Any]:
    """The keyword arguments of ``cls.__init__`` that have defaults, with those defaults."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


@dataclass(frozen=True)
class Variant:
    """One model configuration of a task: how it differs from the task classes' defaults.

    The ``"default"`` variant of every task overrides nothing: ``TitanicModule()``
    and ``TitanicDataModule()`` built with no arguments are the model and data
    ``fit`` trains. Other variants (the tutorial's recipe) list what they change.
    """

    description: str
    max_epochs: int
    #: Arguments of the task's LightningModule that differ from its defaults (``lr`` among them).
    module_kwargs: dict[str, Any] = field(default_factory=dict)
    #: Arguments of the task's DataModule that differ from its defaults (``batch_size`` among them).
    datamodule_kwargs: dict[str, Any] = field(default_factory=dict)
    #: What ``python -m lightning_app.tune`` searches: ``fit`` flags (``lr``, ``batch_size``, ``max_epochs``) or
    #: ``module_kwargs.<name>`` / ``datamodule_kwargs.<name>``; the variant's own values lie inside (trial 0).
    search_space: dict[str, Param] = field(default_factory=dict)
    #: Settings computed from the training data's profile where the user set nothing (:mod:`lightning_app.data_rules`).
    data_rules: tuple[DataRule, ...] = ()


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    datamodule: type[TaskDataModule]
    module: type[TaskModule]
    variants: dict[str, Variant]
    #: Reads the raw inputs of ``python -m lightning_app.predict`` for a trained module: a whole
    #: :class:`Prediction`, or :class:`StreamedInputs` that ``lightning_app.streaming`` scores chunk by chunk.
    predictor: Callable[[TaskModule, PredictRequest], Prediction | StreamedInputs]
    #: Builds the review callbacks (TensorBoard figures, tables) ``fit`` attaches to the Trainer.
    review_callbacks: Callable[[], list[pl.Callback]] = list
    default_variant: str = "default"

    def variant(self, name: str | None) -> Variant:
        name = name or self.default_variant
        if name not in self.variants:
            raise KeyError(f"task '{self.name}' has no model '{name}'; choose from {sorted(self.variants)}")
        return self.variants[name]

    def module_settings(self, variant: str | None = None) -> dict[str, Any]:
        """The LightningModule's arguments for ``variant``: the class defaults, the variant's changes on top."""
        return {**class_defaults(self.module), **self.variant(variant).module_kwargs}

    def datamodule_settings(self, variant: str | None = None) -> dict[str, Any]:
        """The DataModule's arguments for ``variant``: the class defaults, the variant's changes on top."""
        return {**class_defaults(self.datamodule), **self.variant(variant).datamodule_kwargs}


#: What ``tune`` searches for the cifar2 networks (``default`` and ``resnet``).
CIFAR2_SEARCH_SPACE: dict[str, Param] = {
    "lr": FloatRange(0.05, 0.5, log=True),
    "batch_size": Choice((128, 256, 512)),
    "module_kwargs.weight_decay": FloatRange(1e-5, 1e-3, log=True),
    "module_kwargs.width": Choice((16, 32, 48)),
    "module_kwargs.dropout": FloatRange(0.0, 0.3),
    "module_kwargs.label_smoothing": FloatRange(0.0, 0.2),
    # The one-cycle schedule spans the whole run, so the epoch count changes its shape.
    "max_epochs": IntRange(10, 30, step=5),
}


#: The COVID-19 DataModule as the tutorial had it: China's file alone, 8-day windows, batches of 38.
CHINA_ONLY: dict[str, Any] = {"window": 8, "batch_size": 38, "extra_series": None}

TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task(
            name="titanic",
            description="Titanic survival from passenger details, or any CSV table via --data-dir (tabular)",
            datamodule=TitanicDataModule,
            module=TitanicModule,
            predictor=predict_titanic,
            variants={
                "default": Variant(
                    "residual MLP on standardised features with title and family size",
                    max_epochs=30,
                    data_rules=(
                        DataRule(
                            "max_epochs",
                            table_max_epochs,
                            "30 at 605 rows, x sqrt(rows / 605), 30-100, at most 1M rows seen",
                        ),
                        DataRule("batch_size", table_batch_size, "power of two near rows / 50, 128-512"),
                        DataRule("lr", table_lr, "3e-3 under 10,000 rows, 1e-3 from there"),
                    ),
                    # No max_epochs: the best checkpoint is kept and no schedule depends on the epoch count.
                    search_space={
                        "lr": FloatRange(3e-4, 3e-2, log=True),
                        "batch_size": Choice((32, 64, 128, 256)),
                        "module_kwargs.hidden": Choice((32, 64, 128)),
                        "module_kwargs.dropout": FloatRange(0.0, 0.5),
                        "module_kwargs.weight_decay": FloatRange(1e-4, 1e-1, log=True),
                    },
                ),
                "tutorial": Variant(
                    "the tutorial's 15-20-15-1 MLP on its 15 raw features, Adam, batch 8",
                    max_epochs=10,
                    module_kwargs={"net": "tutorial", "optimizer": "adam", "lr": 1e-2},
                    datamodule_kwargs={"feature_set": "tutorial", "batch_size": 8},
                    search_space={"lr": FloatRange(1e-3, 3e-2, log=True), "batch_size": Choice((8, 16, 32, 64))},
                ),
            },
        ),
        Task(
            name="covid19",
            description="COVID-19 daily counts in China forecast 1-7 days ahead with quantiles, or any daily "
            "count series or panel of series via --data-dir (time series)",
            datamodule=Covid19DataModule,
            module=Covid19Module,
            predictor=predict_covid19,
            variants={
                "default": Variant(
                    "five MLPs across China and 34 other national series (windows scaled by their log1p level, "
                    "dropout 0.2) correcting the hubs' baseline quantiles of each window 1-7 days ahead, pinball "
                    "loss, AdamW, selected on validation relative WIS",
                    max_epochs=40,
                    search_space={
                        "lr": FloatRange(3e-4, 3e-2, log=True),
                        "batch_size": Choice((32, 64, 128)),
                        "module_kwargs.weight_decay": Choice((0.0, 1e-4, 1e-3)),
                        "module_kwargs.hidden_size": Choice((32, 64, 128)),
                        "datamodule_kwargs.window": Choice((14, 21, 28)),
                    },
                ),
                "log_trend": Variant(
                    "persistence on log counts plus learned level and damped-trend coefficients per column "
                    "(starting at zero: persistence), China only, log1p L1 loss, Adam (the default until 0.1)",
                    max_epochs=100,
                    module_kwargs={
                        "net": "log_trend",
                        "lr": 0.01,
                        "optimizer": "adam",
                        "weight_decay": 0.0,
                        "hidden_size": 16,
                    },
                    datamodule_kwargs=CHINA_ONLY,
                    search_space={
                        "lr": FloatRange(1e-3, 0.1, log=True),
                        "batch_size": Choice((8, 16, 38)),
                        "module_kwargs.weight_decay": Choice((0.0, 1e-4, 1e-3, 1e-2)),
                        "module_kwargs.heads": IntRange(0, 2),
                        "module_kwargs.hidden_size": Choice((8, 16, 32)),
                    },
                ),
                "tutorial": Variant(
                    "the tutorial's 5-layer LSTM with the multiplicative block on China's 8-day windows, MSPE "
                    "loss, Adagrad",
                    max_epochs=100,
                    module_kwargs={
                        "net": "tutorial",
                        "num_layers": 5,
                        "lr": 0.1,
                        "loss": "mspe",
                        "optimizer": "adagrad",
                        "weight_decay": 0.0,
                    },
                    datamodule_kwargs=CHINA_ONLY,
                    search_space={"lr": FloatRange(0.01, 0.3, log=True)},
                ),
            },
        ),
        Task(
            name="imdb",
            description="IMDB movie-review sentiment from raw text (aclImdb, binary; any labels with --data-dir)",
            datamodule=IMDBDataModule,
            module=IMDBModule,
            predictor=predict_imdb,
            review_callbacks=lambda: [PRCurve(), ValidationTextTable()],
            variants={
                "default": Variant(
                    "NBSVM over distinct words and hashed 2-3-grams plus a fastText bigram bag, Adagrad, one epoch "
                    "over IMDB's reviews (up to 4 over fewer texts)",
                    max_epochs=1,
                    data_rules=(
                        DataRule("max_epochs", text_max_epochs, "22,500 / training texts, 1-4"),
                        DataRule(
                            "module_kwargs.nb_buckets",
                            text_nb_buckets,
                            "3 per training token, 2^16-2^24 over all outputs",
                        ),
                    ),
                    search_space={
                        "lr": FloatRange(0.02, 0.5, log=True),
                        "batch_size": Choice((64, 128, 256)),
                        "module_kwargs.embed_dim": Choice((8, 16, 32)),
                        "module_kwargs.nb_alpha": FloatRange(1.0, 32.0, log=True),
                    },
                ),
                "bigram_bag": Variant(
                    "the previous default: fastText-style mean of word + hashed-bigram embeddings, linear head, "
                    "Adagrad (a 20 MB model instead of 155 MB)",
                    max_epochs=3,
                    module_kwargs={"net": "bigram_bag"},
                    search_space={
                        "lr": FloatRange(0.02, 0.5, log=True),
                        "batch_size": Choice((64, 128, 256)),
                        "module_kwargs.embed_dim": Choice((8, 16, 32)),
                    },
                ),
                "tutorial": Variant(
                    "the tutorial's Conv1d CNN on its tokenizer, 10,000 words, last 200 tokens left-padded, Adagrad",
                    max_epochs=20,
                    module_kwargs={"net": "tutorial_cnn", "lr": 0.02},
                    datamodule_kwargs={
                        "batch_size": 20,
                        "tokenizer": "tutorial",
                        "vocab_size": 10_000,
                        "max_len": 200,
                        "truncate": "left",
                        "pad": "left",
                    },
                    search_space={"lr": FloatRange(0.005, 0.1, log=True), "batch_size": Choice((20, 50, 100))},
                ),
            },
        ),
        Task(
            name="cifar2",
            description="CIFAR-2 airplane vs automobile, or any ImageFolder tree via --data-dir (images)",
            datamodule=Cifar2DataModule,
            module=Cifar2Module,
            predictor=predict_cifar2,
            review_callbacks=lambda: [ImagePredictionGrid(), ConfusionMatrixFigure()],
            variants={
                "default": Variant(
                    "VGG-style conv/max-pool net with batch norm and GELU at full resolution (channels-last), "
                    "SGD+Nesterov with OneCycle, label smoothing 0.1, crop+flip augmentation",
                    max_epochs=25,
                    data_rules=(DataRule("max_epochs", image_max_epochs, "25 x sqrt(9,000 / images), 25-100"),),
                    search_space=CIFAR2_SEARCH_SPACE,
                ),
                "resnet": Variant(
                    "the previous default: small ResNet with batch norm and a stride-2 stem (0.65x the training time)",
                    max_epochs=25,
                    module_kwargs={"net": "resnet"},
                    search_space=CIFAR2_SEARCH_SPACE,
                ),
                "tutorial": Variant(
                    "the tutorial's 2-conv Net, plain SGD, no augmentation, batch 50",
                    max_epochs=20,
                    module_kwargs={
                        "net": "tutorial",
                        "lr": 0.01,
                        "momentum": 0.0,
                        "nesterov": False,
                        "weight_decay": 0.0,
                        "schedule": "constant",
                        "label_smoothing": 0.0,
                    },
                    datamodule_kwargs={"augment": False, "batch_size": 50},
                    search_space={"lr": FloatRange(1e-3, 0.1, log=True), "batch_size": Choice((25, 50, 100))},
                ),
            },
        ),
    )
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise KeyError(f"unknown task '{name}'; choose from {sorted(TASKS)}")
    return TASKS[name]
