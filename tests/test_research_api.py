"""The research API: one source of defaults, networks passed in, the README's examples, run config files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml
from torch import nn

from datamodules import TitanicDataModule
from lightning_app.config import CONFIG_FILE_NAME, load_config_file
from lightning_app.errors import UsageError
from lightning_app.fit import main as fit_main
from lightning_app.fit import parse_config
from lightning_app.models import TitanicModule
from lightning_app.registry import TASKS, class_defaults
from lightning_app.training import FitConfig, accepts_argument, build_datamodule_and_module, resolve_config

README = Path(__file__).resolve().parents[1] / "README.md"
#: Arguments that say where data lives rather than what is trained.
LOCATION_ARGUMENTS = ("data_dir", "cache_dir")


def readme_python_blocks(section: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, flags=re.DOTALL)


@pytest.mark.parametrize("task_name", sorted(TASKS))
def test_classes_built_without_arguments_are_what_fit_trains_by_default(task_name: str) -> None:
    task = TASKS[task_name]
    _, _, config = resolve_config(FitConfig(task=task_name))
    assert task.variants["default"].module_kwargs == {} and task.variants["default"].datamodule_kwargs == {}
    seed = {"seed": config.seed} if accepts_argument(task.datamodule, "seed") else {}  # as fit passes it
    fit_datamodule = task.datamodule(
        batch_size=config.batch_size, num_workers=config.num_workers, **seed, **config.datamodule_kwargs
    )
    assert dict(fit_datamodule.hparams) == dict(task.datamodule().hparams)
    sizes = {name: class_defaults(task.module)[name] for name in task.module.sizes_from_data}
    fit_module = task.module(**config.module_kwargs, **sizes, lr=config.lr)
    assert dict(fit_module.hparams) == dict(task.module().hparams)
    assert config.lr == task.module().hparams.lr and config.batch_size == task.datamodule().hparams.batch_size


@pytest.mark.parametrize("task_name", ["titanic", "covid19"])
def test_default_sizes_are_those_of_the_bundled_data(task_name: str) -> None:
    task = TASKS[task_name]
    datamodule, module = build_datamodule_and_module(FitConfig(task=task_name))
    assert set(datamodule.model_kwargs()) == set(task.module.sizes_from_data)
    assert dict(module.hparams) == dict(task.module().hparams)


@pytest.mark.parametrize("task_name", sorted(TASKS))
def test_every_variant_names_only_arguments_its_classes_take(task_name: str) -> None:
    task = TASKS[task_name]
    for variant_name, variant in task.variants.items():
        assert set(variant.module_kwargs) <= set(class_defaults(task.module)), variant_name
        assert set(variant.datamodule_kwargs) <= set(class_defaults(task.datamodule)), variant_name
        _, _, config = resolve_config(FitConfig(task=task_name, model=variant_name))
        assert config.lr == task.module_settings(variant_name)["lr"]


class FewBatchesTrainer(pl.Trainer):
    """``pl.Trainer`` with two training batches and one validation batch per epoch (logged every step), no
    progress bar."""

    def __init__(self, *args, **kwargs) -> None:
        few = {"limit_train_batches": 2, "limit_val_batches": 1, "log_every_n_steps": 1, "enable_progress_bar": False}
        super().__init__(*args, **{**kwargs, **few})


@pytest.mark.parametrize(
    "few_batches", [pytest.param(True, id="few-batches"), pytest.param(False, id="as-written", marks=pytest.mark.slow)]
)
def test_the_readme_example_trains_the_model_fit_trains(tmp_path, monkeypatch, capsys, few_batches) -> None:
    """The example as written in the slow stage; the fast suite runs it with its Trainer limited to a few batches
    per epoch (still its 30 epochs, test, reload and predictions)."""
    monkeypatch.chdir(tmp_path)  # the example's Trainer logs to ./lightning_logs
    if few_batches:
        monkeypatch.setattr(pl, "Trainer", FewBatchesTrainer)
    example = readme_python_blocks("Use the modules in your own code")[0]
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)
    _, fit_module = build_datamodule_and_module(FitConfig(task="titanic"))
    assert dict(namespace["model"].hparams) == dict(fit_module.hparams)
    assert namespace["trainer"].current_epoch == 30
    assert "label" in capsys.readouterr().out


class Logistic(nn.Module):
    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(num_features, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features).squeeze(-1)


def test_readme_custom_network_example_builds() -> None:
    namespace: dict = {}
    exec(compile(readme_python_blocks("Use the modules in your own code")[1], "README.md", "exec"), namespace)
    model = namespace["model"]
    assert model.hparams.net == "custom:Logistic" and isinstance(model.net, nn.Module)


def test_a_custom_network_trains_saves_and_loads_with_the_network_passed_again(tmp_path) -> None:
    datamodule = TitanicDataModule()
    datamodule.setup("fit")
    width = datamodule.model_kwargs()["num_features"]
    model = TitanicModule(net=Logistic(width), lr=0.05, preprocessing=datamodule.preprocessing_state())
    trainer = pl.Trainer(
        max_epochs=3, accelerator="cpu", logger=False, default_root_dir=tmp_path, enable_progress_bar=False
    )
    trainer.fit(model, datamodule=datamodule)
    path = tmp_path / "custom.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)  # plain types only
    assert checkpoint["hyper_parameters"]["net"] == "custom:Logistic"

    reloaded = TitanicModule.load_from_checkpoint(path, net=Logistic(width), weights_only=True)
    features = datamodule.val_set.tensors[0]
    assert torch.equal(reloaded.predict_encoded(features), model.predict_encoded(features))
    with pytest.raises(ValueError, match=r"custom network \(Logistic\).*net=Logistic"):
        TitanicModule.load_from_checkpoint(path, weights_only=True)


def test_unknown_net_name_lists_the_choices() -> None:
    with pytest.raises(
        ValueError, match=r"unknown TitanicModule net 'mlp'; choose from \['residual_mlp', 'tutorial'\]"
    ):
        TitanicModule(net="mlp")


def test_steps_return_the_shared_step_outputs_for_callbacks() -> None:
    model = TitanicModule(num_features=4)
    features, target = torch.randn(5, 4), torch.tensor([0, 1, 1, 0, 1])
    out = model.validation_step((features, target), 0)
    assert set(out) == {"loss", "preds", "target"} and out["preds"].shape == (5,)
    assert out["loss"].requires_grad and not out["preds"].requires_grad


def test_fit_writes_a_config_that_reproduces_the_run(tiny_fit, tmp_path, capsys) -> None:
    first = tiny_fit("titanic", seed=3)
    config_path = Path(first.log_dir) / CONFIG_FILE_NAME
    saved = yaml.safe_load(config_path.read_text())
    assert saved["task"] == "titanic" and saved["seed"] == 3 and saved["max_epochs"] == 2
    assert saved["module_kwargs"]["net"] == "residual_mlp" and "torch" in saved["versions"]
    hparams = yaml.safe_load((Path(first.log_dir) / "hparams.yaml").read_text())
    assert hparams["model/lr"] == pytest.approx(3e-3) and hparams["data/batch_size"] == 128

    assert fit_main(["--config", str(config_path), "--no-progress-bar"]) == 0
    again = sorted(Path(first.log_dir).parent.glob("version_*"))[-1]
    assert again != Path(first.log_dir)
    summary = capsys.readouterr().out
    for key in ("test/acc", "test/loss"):
        assert key in first.metrics
        printed = re.search(rf"^{re.escape(key)}\s+(\S+)", summary, flags=re.MULTILINE)
        assert printed is not None and float(printed.group(1)) == pytest.approx(first.metrics[key], abs=1e-4)


def test_flags_override_the_config_file_and_print_config_shows_the_result(tmp_path, capsys) -> None:
    config_path = tmp_path / "run.yaml"
    config_path.write_text("task: titanic\nmodel: tutorial\nmax_epochs: 4\nmodule_kwargs:\n  hidden: 8\n")
    config, print_only = parse_config(["--config", str(config_path), "--max-epochs", "7", "--print-config"])
    assert print_only and config.max_epochs == 7 and config.model == "tutorial"
    assert config.module_kwargs == {"hidden": 8}
    assert fit_main(["--config", str(config_path), "--max-epochs", "7", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["max_epochs"] == 7 and printed["batch_size"] == 8 and printed["lr"] == pytest.approx(1e-2)
    assert printed["module_kwargs"]["net"] == "tutorial" and printed["module_kwargs"]["hidden"] == 8
    assert printed["module_kwargs"]["optimizer"] == "adam"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("task: titanic\nlearning_rate: 0.1\n", "unknown key 'learning_rate'"),
        ("task: titanic\nmax_epochs: five\n", "'max_epochs' must be int"),
        ("task: titanic\nlr: true\n", "'lr' must be"),
        ("- a list\n", "expected a mapping"),
        ("task: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_config_files_are_one_line_errors_naming_the_key(tmp_path, content: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(UsageError, match=re.escape(message)):
        load_config_file(path)


@pytest.mark.parametrize(
    ("module_kwargs", "message"),
    [
        ({"hiden": 8}, "unknown model argument 'hiden' for TitanicModule"),
        ({"hidden": "wide"}, "'hidden' must be int"),
        ({"lr": 0.1}, "'lr' of TitanicModule is set by a flag"),
        ({"num_features": 3}, "'num_features' of TitanicModule is set by a flag or by the data"),
    ],
)
def test_bad_module_arguments_are_one_line_errors(module_kwargs: dict, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        resolve_config(FitConfig(task="titanic", module_kwargs=module_kwargs))


def test_config_cli_errors_exit_2_with_one_line(tmp_path, capsys) -> None:
    from lightning_app.cli import run_cli

    path = tmp_path / "bad.yaml"
    path.write_text("task: titanic\nepochs: 3\n")
    assert run_cli(fit_main, ["--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown key 'epochs'" in err
    assert run_cli(fit_main, ["--max-epochs", "1"]) == 2
    assert "--task is required" in capsys.readouterr().err
    other = tmp_path / "titanic.yaml"
    other.write_text("task: titanic\nmodel: default\n")
    assert run_cli(fit_main, ["--config", str(other), "--model", "tutorial"]) == 2
    assert "conflicts with model 'default'" in capsys.readouterr().err


def test_checkpoints_from_before_the_optimisation_hyperparameters_keep_their_training_settings(tmp_path) -> None:
    from lightning_app.models import Cifar2Module

    written = Cifar2Module(net="tutorial")  # then the tutorial net ignored the saved label smoothing and momentum
    old_hparams = {
        key: value for key, value in written.hparams.items() if key not in ("nesterov", "schedule", "flip_average")
    }
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": written.state_dict(), "hyper_parameters": old_hparams,
                "pytorch-lightning_version": pl.__version__}, path)  # fmt: skip
    loaded = Cifar2Module.load_from_checkpoint(path, weights_only=True)
    assert loaded.hparams.label_smoothing == 0.0 and loaded.hparams.momentum == 0.0
    assert loaded.hparams.schedule == "constant" and loaded.hparams.flip_average is False

    torch.save({"state_dict": written.state_dict(), "hyper_parameters": dict(written.hparams),
                "pytorch-lightning_version": pl.__version__}, path)  # fmt: skip
    assert Cifar2Module.load_from_checkpoint(path, weights_only=True).hparams.label_smoothing == 0.1


def test_review_callbacks_work_on_a_research_users_own_trainer(tmp_path) -> None:
    from pytorch_lightning.loggers import TensorBoardLogger

    from lightning_app.review import ConfusionMatrixFigure, PRCurve

    datamodule = TitanicDataModule()
    datamodule.setup("fit")
    model = TitanicModule(**datamodule.model_kwargs(), preprocessing=datamodule.preprocessing_state())
    logger = TensorBoardLogger(tmp_path, name="mine", default_hp_metric=False)
    trainer = pl.Trainer(
        max_epochs=2, accelerator="cpu", logger=logger, callbacks=[ConfusionMatrixFigure(), PRCurve()],
        enable_progress_bar=False, enable_checkpointing=False, log_every_n_steps=1,
    )  # fmt: skip
    trainer.fit(model, datamodule=datamodule)
    events = b"".join(path.read_bytes() for path in Path(logger.log_dir).glob("events.out.tfevents.*"))
    assert b"val/confusion_matrix" in events and b"val/pr_curve" in events
