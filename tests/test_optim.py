"""The model-logic seams: optimizers from specs, the training-data hook, the roll-out source, reports, raw batches."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from datamodules import Covid19DataModule, TitanicDataModule
from datamodules.titanic import read_passengers
from lightning_app.batches import RawBatch
from lightning_app.models import Cifar2Module, Covid19Module, IMDBModule, TaskModule, TitanicModule
from lightning_app.models.covid import RolloutSource
from lightning_app.optim import OPTIMIZERS, Adagrad, OptimizerSpec, configure_optimization
from lightning_app.raw_inputs import RawChunk
from lightning_app.reporting import summary_sections


def _groups(optimizer: torch.optim.Optimizer) -> list[dict]:
    """Every param group's settings and parameter ids: what must match the previous per-module construction."""
    return [
        {**{k: v for k, v in group.items() if k != "params"}, "params": [id(p) for p in group["params"]]}
        for group in optimizer.param_groups
    ]


def _same_optimizer(built: torch.optim.Optimizer, expected: torch.optim.Optimizer) -> None:
    assert type(built) is type(expected)
    assert _groups(built) == _groups(expected)


def test_each_task_builds_the_optimizer_its_hyperparameters_name():
    """The spec reproduces what each module constructed by hand before (class, groups, defaults, values)."""
    module = TitanicModule()
    _same_optimizer(module.configure_optimizers(), torch.optim.AdamW(module.parameters(), lr=3e-3, weight_decay=1e-2))
    module = TitanicModule(net="tutorial", optimizer="adam", lr=1e-2)
    _same_optimizer(module.configure_optimizers(), torch.optim.Adam(module.parameters(), lr=1e-2))
    module = Covid19Module()
    _same_optimizer(module.configure_optimizers(), torch.optim.AdamW(module.parameters(), lr=3e-3, weight_decay=1e-4))
    module = Covid19Module(net="log_trend", optimizer="adam", lr=0.01, weight_decay=0.0)
    _same_optimizer(module.configure_optimizers(), torch.optim.Adam(module.parameters(), lr=0.01, weight_decay=0.0))
    module = Covid19Module(net="tutorial", optimizer="adagrad", lr=0.1, weight_decay=1e-4)
    _same_optimizer(module.configure_optimizers(), Adagrad(module.parameters(), lr=0.1, weight_decay=1e-4))
    module = IMDBModule(vocab_size=100, max_len=20, nb_buckets=64)
    _same_optimizer(module.configure_optimizers(), Adagrad(module.parameters(), lr=0.1))
    module = Cifar2Module(net="tutorial")
    decay = [p for p in module.parameters() if p.ndim > 1]
    no_decay = [p for p in module.parameters() if p.ndim <= 1]
    expected = torch.optim.SGD(
        [{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}],
        lr=0.2,
        momentum=0.9,
        nesterov=True,
    )
    _same_optimizer(module.configure_optimizers(), expected)  # outside a Trainer: no schedule to size


def test_one_cycle_is_stepped_per_batch_and_skipped_for_tiny_runs():
    spec = Cifar2Module(net="tutorial").optimizer_spec()
    assert spec.schedule == "one_cycle"
    params = [torch.nn.Parameter(torch.zeros(2, 2)), torch.nn.Parameter(torch.zeros(2))]
    built = configure_optimization(spec, params, total_steps=lambda: 40.0)
    scheduler = built["lr_scheduler"]
    assert isinstance(scheduler["scheduler"], torch.optim.lr_scheduler.OneCycleLR) and scheduler["interval"] == "step"
    assert scheduler["scheduler"].total_steps == 40
    assert isinstance(configure_optimization(spec, params, total_steps=lambda: 3.0), torch.optim.SGD)
    assert isinstance(configure_optimization(spec, params, total_steps=lambda: float("inf")), torch.optim.SGD)
    constant = OptimizerSpec("sgd", lr=0.1, schedule="constant")
    assert isinstance(configure_optimization(constant, params, total_steps=lambda: 1 / 0), torch.optim.SGD)


def _embedding_steps(optimizer_class: type[torch.optim.Optimizer], steps: int = 6, **options) -> tuple:
    """A few steps on sparse (an EmbeddingBag, a one-column Embedding) and dense gradients, from fixed seeds:
    the parameters and the optimizer's state dict after them."""
    torch.manual_seed(0)
    bag = torch.nn.EmbeddingBag(300, 4, mode="mean", sparse=True)
    table = torch.nn.Embedding(500, 1, sparse=True)
    head = torch.nn.Linear(4, 1)
    optimizer = optimizer_class([*bag.parameters(), *table.parameters(), *head.parameters()], lr=0.1, **options)
    batches = torch.Generator().manual_seed(1)
    for _ in range(steps):
        optimizer.zero_grad()
        words = torch.randint(0, 300, (16, 12), generator=batches)  # repeats within and across rows
        ngrams = torch.randint(0, 500, (16, 30), generator=batches)
        logits = head(bag(words)).squeeze(1) + table(ngrams).sum((1, 2))
        torch.nn.functional.softplus(logits).sum().backward()
        optimizer.step()
    return [p.detach().clone() for p in (bag.weight, table.weight, head.weight, head.bias)], optimizer.state_dict()


@pytest.mark.parametrize(
    "options",
    [{}, {"lr_decay": 0.05, "eps": 1e-3, "initial_accumulator_value": 0.2}, {"maximize": True}],
    ids=["default", "decay-eps-initial", "maximize"],
)
def test_adagrad_steps_bit_for_bit_as_torch_on_sparse_and_dense_gradients(options):
    ours, our_state = _embedding_steps(Adagrad, **options)
    theirs, their_state = _embedding_steps(torch.optim.Adagrad, **options)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    for key, state in their_state["state"].items():
        assert torch.equal(our_state["state"][key]["sum"], state["sum"])
        assert torch.equal(our_state["state"][key]["step"], state["step"])
    assert not torch.equal(ours[0], _embedding_steps(Adagrad, steps=0)[0][0])  # the embedding did move


def test_adagrad_takes_coalesced_sparse_gradients_as_torch_does():
    """A gradient that arrives coalesced (each row once) skips the row summing and steps as torch's Adagrad."""
    torch.manual_seed(0)
    start = torch.randn(12, 3)
    rows = torch.tensor([[1, 4, 9]])
    gradient = torch.sparse_coo_tensor(rows, torch.randn(3, 3), (12, 3)).coalesce()
    ours, theirs = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    for parameter, optimizer_class in ((ours, Adagrad), (theirs, torch.optim.Adagrad)):
        optimizer = optimizer_class([parameter], lr=0.3)
        for _ in range(2):
            parameter.grad = gradient.clone()
            optimizer.step()
    assert torch.equal(ours, theirs) and not torch.equal(ours, start)


def test_adagrad_resumes_from_torch_state_and_keeps_torch_errors():
    """A checkpoint's optimizer state written with torch's Adagrad continues the same steps in ours."""
    ids = torch.tensor([[1, 2, 2, 7]])

    def sparse_step(table: torch.nn.Embedding, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad()
        table(ids).square().sum().backward()
        optimizer.step()

    torch.manual_seed(0)
    resumed, reference = torch.nn.Embedding(10, 2, sparse=True), torch.nn.Embedding(10, 2, sparse=True)
    reference.load_state_dict(resumed.state_dict())
    first, torch_throughout = (
        torch.optim.Adagrad(resumed.parameters(), lr=0.5),
        torch.optim.Adagrad(reference.parameters(), lr=0.5),
    )
    sparse_step(resumed, first)
    sparse_step(reference, torch_throughout)
    ours = Adagrad(resumed.parameters(), lr=0.5)
    ours.load_state_dict(first.state_dict())
    sparse_step(resumed, ours)
    sparse_step(reference, torch_throughout)
    assert torch.equal(resumed.weight, reference.weight)
    assert float(ours.state_dict()["state"][0]["step"]) == 2
    decayed = Adagrad(resumed.parameters(), lr=0.5, weight_decay=0.1)  # torch refuses weight decay on sparse gradients
    with pytest.raises(RuntimeError, match="weight_decay option is not compatible with sparse gradients"):
        sparse_step(resumed, decayed)


def test_unknown_optimizer_or_schedule_names_the_choices():
    with pytest.raises(ValueError, match="'adam', 'adamw', 'adagrad', 'sgd'"):
        OptimizerSpec("lbfgs", lr=0.1)
    with pytest.raises(ValueError, match="unknown schedule 'cosine'"):
        OptimizerSpec("sgd", lr=0.1, schedule="cosine")
    with pytest.raises(ValueError, match="unknown Titanic optimizer 'sgd'; choose from 'adamw', 'adam'"):
        TitanicModule(optimizer="sgd")
    with pytest.raises(ValueError, match="unknown COVID-19 optimizer"):
        Covid19Module(optimizer="sgd")
    assert set(OPTIMIZERS) == {"adam", "adamw", "adagrad", "sgd"}


def _checkpoint_without(module: pl.LightningModule, path, *hparams: str) -> None:
    """Save ``module`` as a checkpoint written before ``hparams`` existed (they are left out of it)."""
    saved = {key: value for key, value in module.hparams.items() if key not in hparams}
    checkpoint = {
        "state_dict": module.state_dict(),
        "hyper_parameters": saved,
        "pytorch-lightning_version": pl.__version__,
    }
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)


@pytest.mark.parametrize(
    ("module", "removed", "expected"),
    [
        (TitanicModule(net="tutorial"), ("optimizer",), torch.optim.Adam),
        (Covid19Module(net="tutorial"), ("optimizer", "loss"), Adagrad),
        (Cifar2Module(net="tutorial"), ("schedule", "momentum", "nesterov", "flip_average"), torch.optim.SGD),
        (
            IMDBModule(vocab_size=8, nb_buckets=16, bigram_buckets=4, embed_dim=2),
            ("nb_c", "nb_frozen"),
            Adagrad,
        ),
    ],
    ids=["titanic", "covid19", "cifar2", "imdb"],
)
def test_old_style_hparams_checkpoints_load_safely_and_get_their_optimizer(tmp_path, module, removed, expected):
    path = tmp_path / "old.ckpt"
    _checkpoint_without(module, path, *removed)
    loaded = type(module).load_from_checkpoint(path, weights_only=True)
    optimizer = loaded.configure_optimizers()
    assert type(optimizer) is expected
    if isinstance(loaded, Cifar2Module):  # the tutorial's plain SGD at a constant rate
        assert loaded.optimizer_spec().schedule == "constant"
        assert {group["momentum"] for group in optimizer.param_groups} == {0.0}
        assert {group["weight_decay"] for group in optimizer.param_groups} == {0.0}
    if isinstance(loaded, Covid19Module):
        assert loaded.hparams.loss == "mspe"
    if isinstance(loaded, IMDBModule):  # the NBSVM view from the naive-Bayes interpolation, trained by Adagrad
        assert loaded.hparams.nb_c is None
        assert any(parameter is loaded.net.nb_weight.weight for parameter in optimizer.param_groups[0]["params"])


class _CountingModule(TitanicModule):
    def fit_before_training(self, batches):
        self.seen = sum(len(labels) for _, labels in batches)


def test_fit_before_training_gets_the_runs_training_batches_once():
    datamodule = TitanicDataModule(batch_size=50)
    datamodule.setup("fit")
    module = _CountingModule(**datamodule.model_kwargs(), preprocessing=datamodule.preprocessing_state())
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=1, accelerator="cpu", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(module, datamodule=datamodule)
    assert module.seen == 150  # the three batches this run trains on, not the whole split


class _ValidationCountingModule(TitanicModule):
    def fit_before_training(self, batches):
        self.seen = sum(len(labels) for _, labels in self.validation_batches())


@pytest.mark.parametrize("sanity_steps", [0, 2])
def test_fit_before_training_can_read_the_runs_validation_batches(sanity_steps: int):
    datamodule = TitanicDataModule(batch_size=20)
    datamodule.setup("fit")
    module = _ValidationCountingModule(**datamodule.model_kwargs(), preprocessing=datamodule.preprocessing_state())
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=2, num_sanity_val_steps=sanity_steps,
                         accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)  # fmt: skip
    trainer.fit(module, datamodule=datamodule)
    assert module.seen == 40  # the two batches this run validates on, whether or not the sanity check set them up


def _tester() -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)


def test_the_roll_out_is_scored_only_with_a_rollout_source():
    datamodule = Covid19DataModule()
    assert isinstance(datamodule, RolloutSource)
    datamodule.setup("fit")
    module = Covid19Module(**datamodule.model_kwargs(), preprocessing=datamodule.preprocessing_state())
    results = _tester().test(module, datamodule=datamodule, verbose=False)[0]
    assert {"test/rollout_mae", "test/persistence_rollout_mae"} <= set(results)
    results = _tester().test(module, dataloaders=datamodule.test_dataloader(), verbose=False)[0]
    assert "test/mae" in results and "test/rollout_mae" not in results


def test_reports_format_the_numbers_the_forecaster_logs():
    module = Covid19Module(num_series=2, preprocessing={"columns": ["a", "b"]})
    metrics = {f"test/{name}_{column}": 1.5 for name in ("mae", "persistence_mae", "mase", "trend_mae", "trend_mase")
               for column in ("a", "b")}  # fmt: skip
    metrics |= {"test/rollout_mae": 2.0, "test/persistence_rollout_mae": 3.0, "test/mae": 1.5}
    sections, shown = summary_sections(module, metrics)
    assert sections[0].splitlines()[0].split() == ["test", "series", "model", "MAE", "persistence", "MAE", "MASE",
                                                   "trend", "MAE", "trend", "MASE"]  # fmt: skip
    assert sections[1].startswith("7-day roll-out") and "model 2, persistence held flat 3" in sections[1]
    assert shown == set(metrics) - {"test/mae"}
    assert summary_sections(TitanicModule(), {"test/acc": 0.8}) == ([], set())
    assert not hasattr(TaskModule, "summary_sections")


def test_predict_step_scores_any_raw_batch_and_the_cli_chunk_is_one():
    datamodule = TitanicDataModule()
    datamodule.setup("fit")
    module = TitanicModule(**datamodule.model_kwargs(), preprocessing=datamodule.preprocessing_state())
    passengers = read_passengers(datamodule.data_dir / "test.csv", with_label=False)[:3]
    records = module.predict_step(RawBatch(passengers), 0)
    assert len(records) == 3 and {"label", "probability"} <= set(records[0])
    assert module.predict_step(RawBatch([]), 0) == []
    chunk = RawChunk(0, passengers, fields=[{}] * 3)
    assert isinstance(chunk, RawBatch) and module.predict_step(chunk, 0) == records
    assert module.predict_step(RawChunk(1, error=None), 0) == []
