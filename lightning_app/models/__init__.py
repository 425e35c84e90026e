"""LightningModules for the four example tasks; all derive from :class:`TaskModule`."""

from lightning_app.models.base import TaskModule
from lightning_app.models.cifar2 import Cifar2Module
from lightning_app.models.classifier import ClassifierModule
from lightning_app.models.covid import Covid19Module
from lightning_app.models.imdb import IMDBModule
from lightning_app.models.titanic import TitanicModule

__all__ = ["Cifar2Module", "ClassifierModule", "Covid19Module", "IMDBModule", "TaskModule", "TitanicModule"]
