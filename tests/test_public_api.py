"""The public API research code imports: documented classes, and subclasses that change one piece."""

from __future__ import annotations

import inspect

import pytorch_lightning as pl
import torch

import datamodules
from datamodules import TaskDataModule, TitanicDataModule
from lightning_app import models
from lightning_app.models import TaskModule, TitanicModule


def test_every_public_class_is_exported_and_documented():
    exported = [getattr(datamodules, name) for name in datamodules.__all__] + [
        getattr(models, name) for name in models.__all__
    ]
    classes = [obj for obj in exported if inspect.isclass(obj)]
    assert {cls.__name__ for cls in classes} >= {
        "TitanicDataModule", "Covid19DataModule", "Cifar2DataModule", "IMDBDataModule",
        "TitanicModule", "Covid19Module", "Cifar2Module", "IMDBModule", "TaskModule", "TaskDataModule",
    }  # fmt: skip
    for cls in classes:
        assert cls.__doc__ and len(cls.__doc__.strip()) > 40, f"{cls.__name__} needs a docstring"
        if issubclass(cls, (TaskModule, TaskDataModule)) and cls not in (TaskModule, TaskDataModule):
            assert "batch" in cls.__doc__.lower(), f"{cls.__name__}'s docstring should say what a batch holds"


class SGDTitanic(TitanicModule):
    """The README's example: another optimizer and an L2 term, everything else inherited."""

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)

    def shared_step(self, batch):
        out = super().shared_step(batch)
        out["loss"] = out["loss"] + 1e-4 * sum(p.square().sum() for p in self.net.parameters())
        return out


def test_subclass_overriding_shared_step_and_optimizer_trains_with_the_inherited_metrics(tmp_path):
    datamodule = TitanicDataModule(batch_size=64)
    datamodule.setup("fit")
    model = SGDTitanic(**datamodule.model_kwargs(), lr=0.05, preprocessing=datamodule.preprocessing_state())
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(model, datamodule=datamodule)
    assert isinstance(trainer.optimizers[0], torch.optim.SGD)
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "val/loss_best"} <= set(trainer.callback_metrics)
    results = trainer.test(model, datamodule=datamodule, verbose=False)[0]
    test_labels = torch.cat([target for _, target in datamodule.test_dataloader()])
    majority_rate = max(test_labels.float().mean().item(), 1 - test_labels.float().mean().item())  # "all died"
    assert majority_rate < results["test/acc"] <= 1.0, (results["test/acc"], majority_rate)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    reloaded = SGDTitanic.load_from_checkpoint(path, weights_only=True)
    assert reloaded.preprocessing == model.preprocessing
