"""The task registry: one entry per task, mapping its name to its classes and defaults.

The CLIs read this table and hold no task-specific code. To add a task, write a
``TaskDataModule`` and a ``TaskModule`` and register them here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from datamodules import Cifar2DataModule, Covid19DataModule, IMDBDataModule, TaskDataModule, TitanicDataModule
from lightning_app.models import Cifar2Module, Covid19Module, IMDBModule, TaskModule, TitanicModule
from lightning_app.predictors import (
    Prediction,
    PredictRequest,
    predict_cifar2,
    predict_covid19,
    predict_imdb,
    predict_titanic,
)


@dataclass(frozen=True)
class Variant:
    """One model configuration of a task, with the training defaults it was tuned with."""

    description: str
    max_epochs: int
    batch_size: int
    lr: float
    module_kwargs: dict[str, Any] = field(default_factory=dict)
    datamodule_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    datamodule: type[TaskDataModule]
    module: type[TaskModule]
    variants: dict[str, Variant]
    #: Scores raw inputs with a trained module for ``python -m lightning_app.predict``.
    predictor: Callable[[TaskModule, PredictRequest], Prediction]
    default_variant: str = "default"

    def variant(self, name: str | None) -> Variant:
        name = name or self.default_variant
        if name not in self.variants:
            raise KeyError(f"task '{self.name}' has no model '{name}'; choose from {sorted(self.variants)}")
        return self.variants[name]


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task(
            name="titanic",
            description="Titanic survival from passenger details (tabular, binary)",
            datamodule=TitanicDataModule,
            module=TitanicModule,
            predictor=predict_titanic,
            variants={
                "default": Variant(
                    "residual MLP on standardised features with title and family size",
                    max_epochs=30,
                    batch_size=128,
                    lr=3e-3,
                    module_kwargs={"net": "residual_mlp"},
                    datamodule_kwargs={"feature_set": "extended"},
                ),
                "tutorial": Variant(
                    "the tutorial's 15-20-15-1 MLP on its 15 raw features, Adam, batch 8",
                    max_epochs=10,
                    batch_size=8,
                    lr=1e-2,
                    module_kwargs={"net": "tutorial"},
                    datamodule_kwargs={"feature_set": "tutorial"},
                ),
            },
        ),
        Task(
            name="covid19",
            description="COVID-19 next-day increments in China (time series, regression)",
            datamodule=Covid19DataModule,
            module=Covid19Module,
            predictor=predict_covid19,
            variants={
                "default": Variant(
                    "1-layer LSTM on log counts that corrects the persistence forecast, MSPE loss, Adagrad",
                    max_epochs=100,
                    batch_size=38,
                    lr=0.05,
                    module_kwargs={"net": "residual_lstm", "num_layers": 1},
                ),
                "tutorial": Variant(
                    "the tutorial's 5-layer LSTM with the multiplicative block, MSPE loss, Adagrad",
                    max_epochs=100,
                    batch_size=38,
                    lr=0.1,
                    module_kwargs={"net": "tutorial", "num_layers": 5},
                ),
            },
        ),
        Task(
            name="imdb",
            description="IMDB movie-review sentiment from raw text (aclImdb, binary; any labels with --data-dir)",
            datamodule=IMDBDataModule,
            module=IMDBModule,
            predictor=predict_imdb,
            variants={
                "default": Variant(
                    "fastText-style mean of word + hashed-bigram embeddings, linear head, Adagrad",
                    max_epochs=3,
                    batch_size=128,
                    lr=0.1,
                    module_kwargs={"net": "bigram_bag", "embed_dim": 16, "bigram_buckets": 1 << 18},
                    datamodule_kwargs={"tokenizer": "words", "vocab_size": 50_000, "max_len": 1000},
                ),
                "tutorial": Variant(
                    "the tutorial's Conv1d CNN on its tokenizer, 10,000 words, last 200 tokens left-padded, Adagrad",
                    max_epochs=20,
                    batch_size=20,
                    lr=0.02,
                    module_kwargs={"net": "tutorial_cnn"},
                    datamodule_kwargs={
                        "tokenizer": "tutorial",
                        "vocab_size": 10_000,
                        "max_len": 200,
                        "truncate": "left",
                        "pad": "left",
                    },
                ),
            },
        ),
        Task(
            name="cifar2",
            description="CIFAR-2 airplane vs automobile, or any ImageFolder tree via --data-dir (images)",
            datamodule=Cifar2DataModule,
            module=Cifar2Module,
            predictor=predict_cifar2,
            variants={
                "default": Variant(
                    "small ResNet with batch norm (stride-2 stem, channels-last), SGD+Nesterov with OneCycle, "
                    "label smoothing 0.1, crop+flip augmentation",
                    max_epochs=25,
                    batch_size=256,
                    lr=0.2,
                    module_kwargs={"net": "resnet", "label_smoothing": 0.1},
                    datamodule_kwargs={"augment": True},
                ),
                "tutorial": Variant(
                    "the tutorial's 2-conv Net, plain SGD, no augmentation, batch 50",
                    max_epochs=20,
                    batch_size=50,
                    lr=0.01,
                    module_kwargs={"net": "tutorial"},
                    datamodule_kwargs={"augment": False},
                ),
            },
        ),
    )
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise KeyError(f"unknown task '{name}'; choose from {sorted(TASKS)}")
    return TASKS[name]
