"""Settings that follow the data: the registry's data rules, how ``fit`` applies them and what they keep."""

from __future__ import annotations

from pathlib import Path

import pytest
from synthetic_data import make_tree, synthetic_reviews, write_tsv
from test_tabular import table_rows, write_csv

from datamodules import Cifar2DataModule, IMDBDataModule, TitanicDataModule
from lightning_app import fit as fit_cli
from lightning_app.checkpoints import load_checkpoint, read_checkpoint
from lightning_app.cli import run_cli
from lightning_app.config import FitConfig, load_config_file, resolve_config, settings_from_data
from lightning_app.data_rules import DataRule, image_max_epochs, text_max_epochs, text_nb_buckets
from lightning_app.registry import get_task
from lightning_app.training import build_datamodule, build_datamodule_for_data, format_summary

#: The bundled IMDB split's profile: 22,496 training reviews after the carve, two classes, 234 tokens on average (its
#: set-up takes a minute, so it is written out here; the slow test_accuracy_floors checks the rules' values on it).
BUNDLED_IMDB_PROFILE = {"train_size": 22_496, "num_classes": 2, "mean_tokens": 234.3}


def text_corpus(folder: Path, n_train: int, labels: tuple[str, ...] = ("0", "1")) -> Path:
    folder.mkdir()
    write_tsv(folder / "train.tsv", synthetic_reviews(n_train, seed=1, labels=labels))
    write_tsv(folder / "test.tsv", synthetic_reviews(30, seed=2, labels=labels))
    return folder


def set_up(datamodule):
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def test_the_rules_give_the_hand_chosen_settings_on_the_bundled_data():
    titanic = get_task("titanic")
    rules = {rule.setting: rule for rule in titanic.variant("default").data_rules}
    profile = set_up(TitanicDataModule()).data_profile()
    assert profile["train_size"] == 605
    assert rules["max_epochs"](profile) == titanic.variant("default").max_epochs == 30
    assert rules["batch_size"](profile) == titanic.datamodule_settings()["batch_size"] == 128
    assert rules["lr"](profile) == titanic.module_settings()["lr"] == 3e-3
    imdb = BUNDLED_IMDB_PROFILE
    assert text_max_epochs(imdb) == get_task("imdb").variant("default").max_epochs == 1
    assert text_nb_buckets(imdb) == get_task("imdb").module_settings()["nb_buckets"] == 1 << 24


def test_a_small_corpus_gets_more_epochs_and_many_classes_a_smaller_table(tmp_path: Path):
    small = set_up(IMDBDataModule(data_dir=text_corpus(tmp_path / "small", 200), cache_dir=tmp_path / "cache"))
    profile = small.data_profile()
    assert profile["train_size"] == 180 and profile["num_classes"] == 2 and 5 < profile["mean_tokens"] < 50
    assert text_max_epochs(profile) == 4 and text_nb_buckets(profile) == 1 << 16  # under 7,000 tokens: the least
    assert text_max_epochs({"train_size": 7_200}) == 3 and text_max_epochs({"train_size": 40_000}) == 1
    subj = {"train_size": 7_200, "num_classes": 2, "mean_tokens": 21.5}  # 155,000 tokens
    assert text_nb_buckets(subj) == 1 << 19
    assert text_nb_buckets({**subj, "mean_tokens": 215.0}) == 1 << 23  # ten times the tokens, 16 times the table
    four_classes = set_up(
        IMDBDataModule(data_dir=text_corpus(tmp_path / "four", 200, ("0", "1", "a", "b")), cache_dir=tmp_path / "c")
    )
    assert text_nb_buckets(four_classes.data_profile()) == 1 << 16
    # 4 or 6 outputs on IMDB's tokens: the table over all outputs stays no larger than the binary 2^24.
    assert text_nb_buckets({**BUNDLED_IMDB_PROFILE, "num_classes": 4}) == 1 << 22
    assert text_nb_buckets({**BUNDLED_IMDB_PROFILE, "num_classes": 6}) == 1 << 21


def test_fewer_images_get_more_epochs(tmp_path: Path):
    # cifar2's bundled split: 9,000 training images after the carve (test_cifar2 checks the bundled counts).
    assert image_max_epochs({"train_size": 9_000}) == get_task("cifar2").variant("default").max_epochs == 25
    assert image_max_epochs({"train_size": 648}) == 93 and image_max_epochs({"train_size": 90_000}) == 25
    tree = make_tree(tmp_path / "tree", ["bird", "cat"], train_per_class=10, test_per_class=2)
    profile = set_up(Cifar2DataModule(data_dir=tree, cache_dir=tmp_path / "cache")).data_profile()
    assert profile == {"train_size": 18, "num_classes": 2} and image_max_epochs(profile) == 100


@pytest.mark.parametrize(
    ("rows", "epochs", "batch_size", "lr"),
    [
        (605, 30, 128, 3e-3),
        (3_332, 70, 128, 3e-3),
        (9_999, 100, 256, 3e-3),
        (10_000, 100, 256, 1e-3),
        (27_677, 36, 512, 1e-3),
    ],
)
def test_table_rules_train_longer_on_more_rows_within_a_budget(rows: int, epochs: int, batch_size: int, lr: float):
    rules = {rule.setting: rule for rule in get_task("titanic").variant("default").data_rules}
    assert rules["max_epochs"]({"train_size": rows}) == epochs
    assert rules["batch_size"]({"train_size": rows}) == batch_size
    assert rules["lr"]({"train_size": rows}) == lr


def test_a_rule_changing_the_batch_size_builds_the_datamodule_again(tmp_path: Path):
    data = tmp_path / "table"
    data.mkdir()
    write_csv(data / "train.csv", table_rows(11_000, seed=0, colours=("red", "green", "blue")))
    write_csv(data / "test.csv", table_rows(30, seed=1, colours=("red", "green", "blue")))
    config = FitConfig(task="titanic", data_dir=str(data), target_column="species", id_columns=["row_id"])
    datamodule, resolved, from_data = build_datamodule_for_data(config)
    assert from_data["batch_size"] == 256 and datamodule.hparams.batch_size == 256 == resolved.batch_size
    assert from_data["max_epochs"] == resolved.max_epochs == 100  # 30 x sqrt(9,350 / 605) = 118, capped
    assert from_data["lr"] == resolved.lr == 3e-3  # under 10,000 training rows
    explicit = build_datamodule_for_data(FitConfig(**{**vars(config), "batch_size": 64, "max_epochs": 5, "lr": 0.01}))
    assert explicit[0].hparams.batch_size == 64 and explicit[2] == {}


def test_what_the_user_sets_wins_and_a_resolved_config_gets_nothing(tmp_path: Path):
    data = text_corpus(tmp_path / "texts", 200, ("0", "1", "2"))
    config = FitConfig(task="imdb", data_dir=str(data), cache_dir=str(tmp_path / "cache"))
    datamodule = build_datamodule(config)
    assert settings_from_data(config, datamodule) == {"max_epochs": 4, "module_kwargs.nb_buckets": 1 << 16}
    mine = FitConfig(**{**vars(config), "max_epochs": 2, "module_kwargs": {"nb_buckets": 1024}})
    assert settings_from_data(mine, datamodule) == {}
    assert settings_from_data(resolve_config(config)[2], datamodule) == {}
    # The tutorial variant keeps its own settings whatever the data.
    assert settings_from_data(FitConfig(**{**vars(config), "model": "tutorial"}), datamodule) == {}


def test_fit_uses_the_rules_and_stores_what_they_gave(tiny_fit, tmp_path: Path):
    data = text_corpus(tmp_path / "texts", 200, ("0", "1", "2"))
    # A small table set by hand (the rule's 3 x 2^22 rows cost seconds to checkpoint): it is not the rules'.
    mine = {"nb_buckets": 1024}
    result = tiny_fit("imdb", data_dir=str(data), cache_dir=str(tmp_path / "cache"), max_epochs=None,
                      module_kwargs=mine, test=False)  # fmt: skip
    assert result.settings_from_data == {"max_epochs": 4}
    assert "set from the training data (flags override): max_epochs 4" in format_summary(result)
    saved = load_config_file(Path(result.log_dir) / "config.yaml")
    assert saved["max_epochs"] == 4 and saved["module_kwargs"]["nb_buckets"] == 1024
    assert read_checkpoint(result.last_model_path)["epoch"] == 3  # the fourth epoch, counted from 0
    assert load_checkpoint(result.best_model_path).module.hparams.nb_buckets == 1024
    # The saved config makes every setting explicit: a rerun with it takes nothing from the rules.
    rerun = FitConfig(**saved)
    assert settings_from_data(rerun, build_datamodule(rerun)) == {}


def test_a_rule_names_what_it_may_set_and_what_it_needs():
    with pytest.raises(ValueError, match=r"not 'datamodule_kwargs\.max_len'"):
        DataRule("datamodule_kwargs.max_len", lambda profile: 10, "no")
    with pytest.raises(KeyError, match="needs 'mean_tokens' in the data profile"):
        DataRule("max_epochs", lambda profile: profile["mean_tokens"], "needs lengths")({"train_size": 3})


def test_print_config_says_which_settings_the_data_will_set(capsys):
    assert run_cli(fit_cli.main, ["--task", "titanic", "--max-epochs", "3", "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert "max_epochs: 3" in printed
    last_line = "# not final: set from the training data when the run starts (unless given): batch_size, lr"
    assert printed.splitlines()[-1] == last_line
