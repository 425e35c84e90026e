"""Titanic preprocessing functions and DataModule."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from datamodules import PACKAGED_DATA_DIR, TitanicDataModule
from datamodules.titanic import (
    EXTENDED_FEATURES,
    TUTORIAL_FEATURES,
    Passenger,
    encode_passengers,
    extended_features,
    fit_feature_stats,
    read_passengers,
    tutorial_features,
)

TRAIN_CSV = PACKAGED_DATA_DIR / "titanic" / "train.csv"


def passenger(**changes) -> Passenger:
    values = {
        "pclass": 3,
        "name": "Braund, Mr. Owen Harris",
        "female": False,
        "age": 22.0,
        "sibsp": 1,
        "parch": 0,
        "fare": 7.25,
        "cabin_known": False,
        "embarked": "S",
        "survived": 0,
    }
    values.update(changes)
    return Passenger(**values)


def test_read_passengers_parses_the_bundled_splits():
    train = read_passengers(TRAIN_CSV)
    test = read_passengers(PACKAGED_DATA_DIR / "titanic" / "test.csv")
    assert (len(train), len(test)) == (712, 179)
    assert {p.survived for p in train} == {0, 1}
    assert any(p.age is None for p in train), "the data has passengers of unknown age"


@pytest.mark.parametrize(
    ("name", "title"),
    [
        ("Braund, Mr. Owen Harris", "Mr"),
        ("Cumings, Mrs. John Bradley (Florence Briggs Thayer)", "Mrs"),
        ("Heikkinen, Miss. Laina", "Miss"),
        ("Palsson, Master. Gosta Leonard", "Master"),
        ("Aubart, Mme. Leontine Pauline", "Mrs"),
        ("Reynaldo, Ms. Encarnacion", "Miss"),
        ("Byles, Rev. Thomas Roussel Davids", "Rare"),
        ("no comma or title", "Rare"),
    ],
)
def test_title_is_read_from_the_name(name, title):
    assert passenger(name=name).title == title


def test_tutorial_features_match_the_tutorial_encoding():
    rows = tutorial_features([passenger(), passenger(pclass=1, female=True, age=None, fare=None, embarked=None)])
    assert rows.shape == (2, len(TUTORIAL_FEATURES)) == (2, 15)
    first = dict(zip(TUTORIAL_FEATURES, rows[0].tolist(), strict=True))
    assert first["Pclass_3"] == 1 and first["Pclass_1"] == 0
    assert (first["male"], first["female"]) == (1, 0)
    assert (first["Age"], first["Age_null"]) == (22, 0)
    assert first["Fare"] == pytest.approx(7.25)
    assert (first["Cabin_null"], first["Embarked_S"], first["Embarked_nan"]) == (1, 1, 0)
    second = dict(zip(TUTORIAL_FEATURES, rows[1].tolist(), strict=True))
    assert (second["Age"], second["Age_null"], second["Embarked_nan"], second["Fare"]) == (0, 1, 1, 0)


def test_extended_features_are_standardised_with_train_statistics():
    train = read_passengers(TRAIN_CSV)
    stats = fit_feature_stats(train)
    features = extended_features(train, stats)
    assert features.shape == (712, len(EXTENDED_FEATURES))
    standardised = [EXTENDED_FEATURES.index(n) for n in ("age", "sibsp", "parch", "family_size", "log_fare")]
    assert torch.allclose(features[:, standardised].mean(0), torch.zeros(5), atol=1e-4)
    assert torch.allclose(features[:, standardised].std(0, unbiased=False), torch.ones(5), atol=1e-3)
    # A different "train" set gives different statistics, so the encoding depends on what it was fitted on.
    assert fit_feature_stats(train[:100])["mean"] != stats["mean"]


def test_missing_values_are_filled_with_train_medians():
    stats = fit_feature_stats([passenger(age=10.0, fare=5.0), passenger(age=30.0, fare=9.0), passenger(age=50.0)])
    assert stats["age_fill"] == 30.0
    encoded = extended_features([passenger(age=None, fare=None)], stats)
    named = dict(zip(EXTENDED_FEATURES, encoded[0].tolist(), strict=True))
    assert named["age_missing"] == 1.0
    assert named["age"] == pytest.approx((30.0 - stats["mean"][0]) / stats["std"][0], abs=1e-5)


def test_encode_passengers_rejects_unknown_feature_sets():
    with pytest.raises(ValueError, match="unknown Titanic feature_set"):
        encode_passengers([passenger()], {"feature_set": "bogus"})


def test_datamodule_splits_are_deterministic():
    first, second, other_seed = TitanicDataModule(seed=1), TitanicDataModule(seed=1), TitanicDataModule(seed=2)
    for dm in (first, second, other_seed):
        dm.setup("fit")
    assert (len(first.train_set), len(first.val_set), len(first.test_set)) == (605, 107, 179)
    assert torch.equal(first.val_set.tensors[0], second.val_set.tensors[0])
    assert not torch.equal(first.val_set.tensors[0], other_seed.val_set.tensors[0])


def test_setup_twice_keeps_the_same_datasets():
    dm = TitanicDataModule()
    dm.setup("fit")
    train_set, state = dm.train_set, dm.preprocessing_state()
    dm.setup("test")
    assert dm.train_set is train_set and dm.preprocessing_state() == state


def test_batches_hold_features_and_labels():
    dm = TitanicDataModule(batch_size=16)
    dm.setup("fit")
    features, labels = next(iter(dm.train_dataloader()))
    assert features.shape == (16, dm.model_kwargs()["num_features"]) and features.dtype == torch.float32
    assert labels.shape == (16,) and labels.dtype == torch.int64


def test_statistics_come_from_the_training_part_only(tmp_path: Path):
    dm = TitanicDataModule(seed=3)
    dm.setup("fit")
    train_passengers = read_passengers(TRAIN_CSV)
    order = torch.randperm(712, generator=torch.Generator().manual_seed(3)).tolist()
    n_val = len(dm.val_set)
    expected = fit_feature_stats([train_passengers[i] for i in order[n_val:]])
    assert dm.preprocessing_state()["stats"] == expected
    assert dm.preprocessing_state()["stats"] != fit_feature_stats(train_passengers)
