"""Titanic survival (tabular, binary).

Preprocessing is a set of pure functions over parsed passengers, so the same
code scores the training data and new passengers from a checkpoint:

* :func:`read_passengers` parses a Kaggle-format CSV into :class:`Passenger` rows;
* :func:`tutorial_features` is the tutorial's 15-column encoding (no scaling);
* :func:`fit_feature_stats` + :func:`extended_features` add the passenger's title,
  family size and log-fare, standardised with statistics fitted on train only;
* :func:`encode_passengers` dispatches on a ``preprocessing_state`` dict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from datamodules.base import TaskDataModule, parse_float, read_csv_rows, train_val_split
from datamodules.batches import BatchIndexedTensors
from datamodules.errors import DataError

FeatureSet = Literal["tutorial", "extended"]

INPUT_COLUMNS = ["Pclass", "Name", "Sex", "Age", "SibSp", "Parch", "Fare", "Cabin", "Embarked"]
LABEL_COLUMN = "Survived"
PCLASSES = (1, 2, 3)
EMBARKED = ("C", "Q", "S")
TITLES = ("Mr", "Mrs", "Miss", "Master", "Rare")
_TITLE_ALIASES = {"Mlle": "Miss", "Ms": "Miss", "Mme": "Mrs", "Lady": "Mrs", "Countess": "Mrs", "Sir": "Mr"}

TUTORIAL_FEATURES = [
    *(f"Pclass_{c}" for c in PCLASSES), "female", "male", "Age", "Age_null", "SibSp", "Parch", "Fare",
    "Cabin_null", *(f"Embarked_{e}" for e in EMBARKED), "Embarked_nan",
]  # fmt: skip
_STANDARDISED = ["age", "sibsp", "parch", "family_size", "log_fare"]
EXTENDED_FEATURES = [
    *(f"Pclass_{c}" for c in PCLASSES), "female", *_STANDARDISED, "age_missing", "is_alone", "cabin_known",
    *(f"Embarked_{e}" for e in EMBARKED), "Embarked_missing", *(f"Title_{t}" for t in TITLES),
]  # fmt: skip


@dataclass(frozen=True)
class Passenger:
    """One parsed row; ``survived`` is ``None`` for passengers to be scored."""

    pclass: int
    name: str
    female: bool
    age: float | None
    sibsp: int
    parch: int
    fare: float | None
    cabin_known: bool
    embarked: str | None
    survived: int | None = None

    @property
    def title(self) -> str:
        """'Mr', 'Mrs', 'Miss', 'Master' or 'Rare', read from 'Surname, Title. Given names'."""
        _, _, rest = self.name.partition(",")
        raw = rest.strip().split(".", 1)[0].strip() if "." in rest else ""
        title = _TITLE_ALIASES.get(raw, raw)
        return title if title in TITLES else "Rare"


#: Accepted range of each numeric column: wide enough for any real passenger (the data's largest are
#: Age 80, SibSp 8, Parch 6, Fare 512.33), narrow enough that every feature stays a finite float32.
VALUE_RANGES: dict[str, tuple[float, float]] = {"Age": (0, 150), "SibSp": (0, 100), "Parch": (0, 100), "Fare": (0, 1e5)}


def _check_range(path: Path, line: int, column: str, number: float | None) -> None:
    low, high = VALUE_RANGES[column]
    if number is not None and not low <= number <= high:
        raise DataError(path, f"column '{column}' must be between {low:g} and {high:g}, got {number:g}", line=line)


def _parse_int(path: Path, line: int, column: str, value: str) -> int:
    number = parse_float(path, line, column, value)
    if number is None or number != int(number):
        raise DataError(path, f"column '{column}' must be a whole number, got {value!r}", line=line)
    return int(number)


def parse_passenger(path: Path, line: int, row: dict[str, str], with_label: bool) -> Passenger:
    """Validate and type one CSV row (see :func:`read_passengers`)."""
    pclass = _parse_int(path, line, "Pclass", row["Pclass"])
    if pclass not in PCLASSES:
        raise DataError(path, f"column 'Pclass' must be 1, 2 or 3, got {row['Pclass']!r}", line=line)
    sex = row["Sex"].strip().lower()
    if sex not in ("male", "female"):
        raise DataError(path, f"column 'Sex' must be 'male' or 'female', got {row['Sex']!r}", line=line)
    embarked = row["Embarked"].strip().upper() or None
    if embarked is not None and embarked not in EMBARKED:
        raise DataError(path, f"column 'Embarked' must be C, Q, S or empty, got {row['Embarked']!r}", line=line)
    survived = None
    if with_label:
        survived = _parse_int(path, line, LABEL_COLUMN, row[LABEL_COLUMN])
        if survived not in (0, 1):
            raise DataError(path, f"column 'Survived' must be 0 or 1, got {row[LABEL_COLUMN]!r}", line=line)
    numbers = {
        "Age": parse_float(path, line, "Age", row["Age"], allow_missing=True),
        "SibSp": _parse_int(path, line, "SibSp", row["SibSp"]),
        "Parch": _parse_int(path, line, "Parch", row["Parch"]),
        "Fare": parse_float(path, line, "Fare", row["Fare"], allow_missing=True),
    }
    for column, number in numbers.items():
        _check_range(path, line, column, number)
    return Passenger(
        pclass=pclass,
        name=row["Name"],
        female=sex == "female",
        age=numbers["Age"],
        sibsp=int(numbers["SibSp"]),
        parch=int(numbers["Parch"]),
        fare=numbers["Fare"],
        cabin_known=bool(row["Cabin"].strip()),
        embarked=embarked,
        survived=survived,
    )


def read_passengers(path: str | Path, with_label: bool = True) -> list[Passenger]:
    """Parse a Kaggle-format Titanic CSV. ``Age``, ``Fare``, ``Cabin`` and ``Embarked`` may be empty."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    required = INPUT_COLUMNS + ([LABEL_COLUMN] if with_label else [])
    return [parse_passenger(path, line, row, with_label) for line, row in read_csv_rows(path, required)]


def _one_hot(value: object, choices: tuple) -> list[float]:
    return [1.0 if value == choice else 0.0 for choice in choices]


def tutorial_features(passengers: list[Passenger]) -> torch.Tensor:
    """The tutorial's encoding: 15 unscaled columns named in :data:`TUTORIAL_FEATURES`."""
    rows = [
        [
            *_one_hot(p.pclass, PCLASSES),
            float(p.female),
            float(not p.female),
            p.age if p.age is not None else 0.0,
            float(p.age is None),
            float(p.sibsp),
            float(p.parch),
            p.fare if p.fare is not None else 0.0,
            float(not p.cabin_known),
            *_one_hot(p.embarked, EMBARKED),
            float(p.embarked is None),
        ]
        for p in passengers
    ]
    return torch.tensor(rows, dtype=torch.float32).reshape(len(passengers), len(TUTORIAL_FEATURES))


def _raw_numeric(p: Passenger, age_fill: float, fare_fill: float) -> list[float]:
    """Values of :data:`_STANDARDISED` for one passenger, before scaling."""
    fare = p.fare if p.fare is not None else fare_fill
    return [
        p.age if p.age is not None else age_fill,
        float(p.sibsp),
        float(p.parch),
        float(p.sibsp + p.parch + 1),
        math.log1p(max(fare, 0.0)),
    ]


def fit_feature_stats(passengers: list[Passenger]) -> dict[str, Any]:
    """Statistics for :func:`extended_features`, to be fitted on the training split only."""
    if not passengers:
        raise ValueError("cannot fit feature statistics on zero passengers")
    ages = sorted(p.age for p in passengers if p.age is not None)
    fares = sorted(p.fare for p in passengers if p.fare is not None)
    age_fill = ages[len(ages) // 2] if ages else 0.0
    fare_fill = fares[len(fares) // 2] if fares else 0.0
    values = torch.tensor([_raw_numeric(p, age_fill, fare_fill) for p in passengers], dtype=torch.float64)
    std = values.std(dim=0, unbiased=False).clamp_min(1e-6) if len(passengers) > 1 else torch.ones(values.shape[1])
    return {
        "age_fill": age_fill,
        "fare_fill": fare_fill,
        "mean": values.mean(dim=0).tolist(),
        "std": std.tolist(),
    }


def extended_features(passengers: list[Passenger], stats: dict[str, Any]) -> torch.Tensor:
    """The default encoding (:data:`EXTENDED_FEATURES`), numeric columns standardised with ``stats``."""
    mean, std = stats["mean"], stats["std"]
    rows = []
    for p in passengers:
        numeric = _raw_numeric(p, stats["age_fill"], stats["fare_fill"])
        rows.append(
            [
                *_one_hot(p.pclass, PCLASSES),
                float(p.female),
                *((value - m) / s for value, m, s in zip(numeric, mean, std, strict=True)),
                float(p.age is None),
                float(p.sibsp + p.parch == 0),
                float(p.cabin_known),
                *_one_hot(p.embarked, EMBARKED),
                float(p.embarked is None),
                *_one_hot(p.title, TITLES),
            ]
        )
    return torch.tensor(rows, dtype=torch.float32).reshape(len(passengers), len(EXTENDED_FEATURES))


def encode_passengers(passengers: list[Passenger], state: dict[str, Any]) -> torch.Tensor:
    """Encode passengers with a ``preprocessing_state`` from :class:`TitanicDataModule`."""
    if state["feature_set"] == "tutorial":
        return tutorial_features(passengers)
    if state["feature_set"] == "extended":
        return extended_features(passengers, state["stats"])
    raise ValueError(f"unknown Titanic feature_set {state['feature_set']!r}; expected 'tutorial' or 'extended'")


def labels(passengers: list[Passenger]) -> torch.Tensor:
    return torch.tensor([p.survived for p in passengers], dtype=torch.long)


class TitanicDataModule(TaskDataModule):
    """Kaggle Titanic: predict ``Survived`` from passenger details.

    ``train.csv`` (712 rows) is split into train and validation with a fixed seed;
    ``test.csv`` (179 rows, the tutorial's held-out split) is the test set.

    A batch is ``(features, label)``: ``float32[B, num_features]`` and ``int64[B]``.

    Args:
        data_dir: folder with ``train.csv`` and ``test.csv`` (default: bundled data).
        batch_size: rows per batch.
        val_fraction: share of ``train.csv`` held out for validation.
        seed: seed of the train/validation split.
        feature_set: ``"extended"`` (default) or ``"tutorial"`` (the tutorial's 15 columns).
        num_workers: DataLoader workers; the tensors are in memory, so 0 is fastest.
    """

    packaged_subdir = "titanic"

    def __init__(
        self,
        data_dir: str | Path | None = None,
        batch_size: int = 128,
        val_fraction: float = 0.15,
        seed: int = 42,
        feature_set: FeatureSet = "extended",
        num_workers: int = 0,
    ) -> None:
        super().__init__(data_dir)
        if feature_set not in ("tutorial", "extended"):
            raise ValueError(f"feature_set must be 'tutorial' or 'extended', got {feature_set!r}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
        self.save_hyperparameters(ignore=["data_dir"], logger=False)
        self._state: dict[str, Any] | None = None

    def prepare_data(self) -> None:
        self.require_file("train.csv")
        self.require_file("test.csv")

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train_path = self.require_file("train.csv")
        passengers = read_passengers(train_path)
        train_index, val_index = train_val_split(
            len(passengers), self.hparams.val_fraction, self.hparams.seed, train_path, "passenger"
        )
        classes = sorted({p.survived for p in passengers})
        if len(classes) < 2:
            problem = f"column '{LABEL_COLUMN}' needs both classes 0 and 1 to train on, every row has {classes[0]}"
            raise DataError(train_path, problem)
        train = [passengers[i] for i in train_index.tolist()]
        val = [passengers[i] for i in val_index.tolist()]
        test = read_passengers(self.require_file("test.csv"))

        state: dict[str, Any] = {"feature_set": self.hparams.feature_set}
        if self.hparams.feature_set == "extended":
            state["stats"] = fit_feature_stats(train)
        self._state = state
        self.train_set, self.val_set, self.test_set = (
            BatchIndexedTensors(encode_passengers(split, state), labels(split)) for split in (train, val, test)
        )

    def model_kwargs(self) -> dict[str, Any]:
        names = TUTORIAL_FEATURES if self.hparams.feature_set == "tutorial" else EXTENDED_FEATURES
        return {"num_features": len(names)}

    def preprocessing_state(self) -> dict[str, Any]:
        if self._state is None:
            raise RuntimeError("call setup() before preprocessing_state()")
        return self._state
