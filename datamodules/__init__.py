"""LightningDataModules for the four example tasks of "eat_pytorch_in_20_days"."""

from datamodules.base import PACKAGED_DATA_DIR, TaskDataModule
from datamodules.cifar2 import Cifar2DataModule
from datamodules.covid import Covid19DataModule
from datamodules.errors import DataError
from datamodules.imdb import IMDBDataModule
from datamodules.titanic import TitanicDataModule

__all__ = [
    "PACKAGED_DATA_DIR",
    "Cifar2DataModule",
    "Covid19DataModule",
    "DataError",
    "IMDBDataModule",
    "TaskDataModule",
    "TitanicDataModule",
]
