"""Independent oracles: results checked against something the code under test did not compute.

* predict's CSV, scored again here (accuracy, a rank-based AUROC written below), against what the ``test`` command
  reports on the same files (Titanic, a binary ImageFolder tree);
* forecast intervals against ``torch.quantile`` of residuals computed here, and their coverage on a synthetic
  series whose noise is known;
* raw text and images, turned into the exported graph's input with only ``preprocessing.json`` and code written
  here, through the TorchScript and ONNX files, against ``predict_raw``.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy
import pytest
import torch
from PIL import Image
from synthetic_data import make_tree, write_image

from datamodules import PACKAGED_DATA_DIR
from lightning_app import predict as predict_cli
from lightning_app import test as test_cli
from lightning_app.checkpoints import load_checkpoint
from lightning_app.cli import run_cli
from lightning_app.export import export
from lightning_app.models import Covid19Module
from lightning_app.training import FitConfig, FitResult, fit

TITANIC_TEST_CSV = PACKAGED_DATA_DIR / "titanic" / "test.csv"


def rank_auroc(scores: list[float], labels: list[int]) -> float:
    """Mann-Whitney AUROC: the probability that a random positive outscores a random negative (ties count 1/2)."""
    positives = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    negatives = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def accuracy(scores: list[float], labels: list[int]) -> float:
    return sum((s >= 0.5) == (y == 1) for s, y in zip(scores, labels, strict=True)) / len(labels)


def test_rank_auroc_on_hand_computed_cases() -> None:
    assert rank_auroc([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]) == 1.0
    assert rank_auroc([0.1, 0.2, 0.9, 0.8], [1, 1, 0, 0]) == 0.0
    assert rank_auroc([0.5, 0.5, 0.5], [1, 0, 0]) == 0.5
    assert rank_auroc([0.9, 0.3, 0.6, 0.1], [1, 1, 0, 0]) == 0.75  # pairs won: (.9,.6) (.9,.1) (.3,.1) of 4


def reported_test_metrics(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, float]:
    assert run_cli(test_cli.main, [*argv, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def predicted_rows(argv: list[str], output: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, str]]:
    assert run_cli(predict_cli.main, [*argv, "--format", "csv", "--output", str(output)]) == 0
    capsys.readouterr()
    with output.open(newline="") as file:
        return list(csv.DictReader(file))


# -- predict output against the test command's metrics ---------------------------------------------


def test_titanic_predicted_csv_scores_as_the_test_command_reports(trained, tmp_path, capsys) -> None:
    checkpoint = trained["titanic"].best_model_path
    reported = reported_test_metrics(["--task", "titanic", "--ckpt", checkpoint], capsys)
    rows = predicted_rows(
        ["--task", "titanic", "--ckpt", checkpoint, str(TITANIC_TEST_CSV)], tmp_path / "p.csv", capsys
    )
    labels = [int(row["Survived"]) for row in rows]  # the file's own labels, carried through by predict
    scores = [float(row["survival_probability"]) for row in rows]
    assert len(rows) == 179 and set(labels) == {0, 1}
    assert [int(row["survived_predicted"]) for row in rows] == [int(s >= 0.5) for s in scores]
    assert reported["test/acc"] == pytest.approx(accuracy(scores, labels), abs=1e-6)
    assert reported["test/auroc"] == pytest.approx(rank_auroc(scores, labels), abs=1e-5)
    # Not a degenerate model: the oracle would hold trivially for constant scores.
    assert 0.55 < rank_auroc(scores, labels) < 1.0 and len(set(scores)) > 20


#: Test images of colours between the two classes' (see ``synthetic_data.COLOURS``), labelled in turn, so the
#: tiny model's scores spread and its accuracy and AUROC are neither 0 nor 1.
BLENDS = [(40, 220 - 18 * i, 40 + 18 * i) for i in range(11)]


@pytest.fixture(scope="module")
def binary_image_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, FitResult]:
    """One epoch of the default cifar2 model on a tiny two-class tree (cat, dog) whose test split also holds
    in-between colours: (tree, result)."""
    scratch = tmp_path_factory.mktemp("binary_images")
    root = make_tree(scratch / "data", ["cat", "dog"], train_per_class=16, test_per_class=4)
    for i, colour in enumerate(BLENDS):
        for label in ("cat", "dog"):
            write_image(root / "test" / label / f"blend{i}.png", colour, seed=100 + i)
    config = FitConfig(
        task="cifar2",
        data_dir=str(root),
        cache_dir=str(scratch / "cache"),
        log_dir=str(scratch / "runs"),
        max_epochs=1,
        batch_size=16,
        accelerator="cpu",
        enable_progress_bar=False,
    )
    return root, fit(config)


def test_cifar2_predicted_csv_scores_as_the_test_command_reports(binary_image_run, tmp_path, capsys) -> None:
    root, result = binary_image_run
    argv = ["--task", "cifar2", "--ckpt", result.best_model_path]
    reported = reported_test_metrics([*argv, "--data-dir", str(root), "--cache-dir", str(tmp_path / "c")], capsys)
    rows = predicted_rows([*argv, str(root / "test")], tmp_path / "p.csv", capsys)
    labels = [int(Path(row["path"]).parent.name == "dog") for row in rows]  # the folder is the truth
    # The CSV holds the winning class and its probability; P(dog) follows for two classes.
    scores = [float(r["probability"]) if r["label"] == "dog" else 1 - float(r["probability"]) for r in rows]
    assert len(rows) == 2 * (4 + len(BLENDS)) and sum(labels) == len(rows) // 2
    assert reported["test/acc"] == pytest.approx(accuracy(scores, labels), abs=1e-6)
    assert reported["test/auroc"] == pytest.approx(rank_auroc(scores, labels), abs=1e-5)
    assert 0.5 <= accuracy(scores, labels) < 1.0  # each blend is in both folders: the oracle is not 1 == 1


# -- forecast intervals on a series with known noise -------------------------------------------------

NOISE_SD = (0.05, 0.2)  # per series, on the log1p scale
LEVEL = math.log1p(500.0)
WINDOW = 8


def synthetic_log_series(days: int, seed: int) -> torch.Tensor:
    """``float32[days, 2]`` daily counts whose log1p is a constant level plus independent N(0, sd^2) noise."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(days, len(NOISE_SD), generator=generator, dtype=torch.float64) * torch.tensor(NOISE_SD)
    return torch.expm1(LEVEL + noise).float()


def windows_of(series: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    windows = series.unfold(0, WINDOW, 1)[:-1].transpose(1, 2).contiguous()  # [N, WINDOW, C]
    return windows, series[WINDOW:]


def test_forecast_interval_is_the_validation_residual_quantiles_and_covers_80_percent() -> None:
    """A point forecaster (log_trend: persistence on log counts until trained) on a level series with known noise.

    Its one-day residual log1p(y_t) - log1p(y_{t-1}) is N(0, 2 sd^2), so the 80% interval is +-1.2816 sqrt(2) sd.
    Tolerance of the coverage: 1500 held-out days give a binomial standard error sqrt(0.8 * 0.2 / 1500) = 0.010,
    and the quantiles estimated from 1500 validation residuals move coverage by about as much again; 0.05 is 3.5
    combined standard errors, while a 68% (one sd) or 90% interval, or one built on the wrong scale, misses by 0.1.
    """
    import pytorch_lightning as pl

    from datamodules.count_series import level_index
    from datamodules.covid import forecast_samples

    module = Covid19Module(
        num_series=2, horizon=1, net="log_trend", preprocessing={"window": WINDOW, "columns": ["a", "b"]}
    )
    validation = synthetic_log_series(1500 + WINDOW, seed=1)
    windows, targets = windows_of(validation)
    samples = forecast_samples(validation, WINDOW, 1, 0, (0, len(validation)))["val"]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*samples), batch_size=256)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.validate(module, dataloaders=loader, verbose=False)

    with torch.no_grad():
        residuals = torch.log1p(targets.double()) - torch.log1p(module(windows).double())
    expected = torch.quantile(residuals, torch.tensor([0.1, 0.9], dtype=torch.float64), dim=0)
    kept = module.residual_quantiles[[level_index(0.1), level_index(0.9)]].double()
    assert torch.allclose(kept, expected, atol=1e-5)
    theory = 1.2816 * math.sqrt(2) * torch.tensor(NOISE_SD, dtype=torch.float64)
    assert torch.allclose(expected[1], theory, rtol=0.1) and torch.allclose(-expected[0], theory, rtol=0.1)

    held_out = synthetic_log_series(1500 + WINDOW, seed=2)
    covered = torch.zeros(len(NOISE_SD))
    for day in range(WINDOW, len(held_out)):
        forecast = module.forecast(1, held_out[:day])
        actual = held_out[day]
        covered += ((forecast.lower[0] <= actual) & (actual <= forecast.upper[0])).float()
    coverage = covered / (len(held_out) - WINDOW)
    assert torch.all((coverage - 0.8).abs() < 0.05), coverage


# -- raw inputs -> preprocessing.json -> exported graph ----------------------------------------------


def encode_reviews(texts: list[str], metadata: dict) -> torch.Tensor:
    """Token ids from ``preprocessing.json`` alone: its tokenizer rule, vocabulary, length and sides."""
    rule, spec = metadata["tokenizer_rule"], metadata["preprocessing"]
    index = {token: i for i, token in enumerate(spec["vocabulary"]) if i >= 2}  # 0 <pad>, 1 <unk>
    rows = []
    for text in texts:
        cleaned = text.lower() if rule["lowercase"] else text
        if rule["replace_with_space"]:
            cleaned = re.sub(rule["replace_with_space"], " ", cleaned)
        if rule["delete"]:
            cleaned = re.sub(rule["delete"], "", cleaned)
        tokens = re.findall(rule["token"], cleaned)
        if len(tokens) > spec["max_len"]:
            tokens = tokens[-spec["max_len"] :] if spec["truncate"] == "left" else tokens[: spec["max_len"]]
        ids = [index.get(token, 1) for token in tokens]
        padding = [0] * (spec["max_len"] - len(ids))
        rows.append(padding + ids if spec["pad"] == "left" else ids + padding)
    return torch.tensor(rows, dtype=torch.int32)


@pytest.mark.parametrize("name", ["tutorial", "words"])
def test_tokenizer_rules_written_to_preprocessing_json_tokenise_as_the_tokenizers(name: str) -> None:
    from datamodules.text_encoding import TOKENIZER_RULES, TOKENIZERS

    spec = {"tokenizer_rule": TOKENIZER_RULES[name], "preprocessing": {"vocabulary": ["<pad>", "<unk>"]}}
    texts = ["Don't <BR/>stop!! Isn't it_great?", "  tabs\tand<br />breaks,  émigré 42 ", "", "<pad> <unk>"]
    for text in texts:
        vocabulary = ["<pad>", "<unk>", *dict.fromkeys(TOKENIZERS[name](text))]
        spec["preprocessing"] = {"vocabulary": vocabulary, "max_len": 30, "truncate": "right", "pad": "right"}
        ids = encode_reviews([text], spec)[0].tolist()
        expected = [vocabulary.index(token) if token in vocabulary[2:] else 1 for token in TOKENIZERS[name](text)]
        assert ids == expected + [0] * (30 - len(expected)), text


def normalise_images(paths: list[Path], spec: dict) -> torch.Tensor:
    """Images from ``preprocessing.json`` alone: RGB at its size, 0-1, minus its mean, over its std."""
    images = []
    for path in paths:
        with Image.open(path) as image:
            assert image.size == (spec["image_size"], spec["image_size"])
            pixels = torch.from_numpy(numpy.array(image.convert("RGB"), dtype=numpy.float32))  # [H, W, 3]
        images.append(pixels.permute(2, 0, 1) / 255)
    mean, std = torch.tensor(spec["mean"]).view(1, 3, 1, 1), torch.tensor(spec["std"]).view(1, 3, 1, 1)
    return (torch.stack(images) - mean) / std


def class_table(records: list[dict]) -> torch.Tensor:
    return torch.tensor([list(record["probabilities"].values()) for record in records])


def exported_probabilities(outputs: torch.Tensor) -> torch.Tensor:
    """The graph's output as one probability column per class (a binary model outputs P(class 1) alone)."""
    return torch.stack([1 - outputs, outputs], dim=-1) if outputs.ndim == 1 else outputs


REVIEWS = [
    "A superb, moving film. <br /><br />Wonderful!",
    "An awful, BORING waste of time... isn't it?",
    "",
    "the plot was dull and the actor was great great great " * 20,  # longer than max_len
]


@pytest.mark.filterwarnings("ignore:`torch.jit.\\w+` is deprecated:FutureWarning")
@pytest.mark.parametrize("output_format", ["torchscript", "onnx"])
def test_raw_reviews_through_preprocessing_json_and_the_export_equal_predict_raw(
    trained_imdb, tmp_path, output_format, run_exported
) -> None:
    best, _ = trained_imdb
    target = export(best, output_format, tmp_path / "exported")
    metadata = json.loads((target / "preprocessing.json").read_text())
    expected = class_table(load_checkpoint(best, "imdb").module.predict_raw(REVIEWS))
    token_ids = encode_reviews(REVIEWS, metadata)
    for batch in (token_ids[:1], token_ids):  # batch size 1 and N
        outputs = exported_probabilities(run_exported(target, output_format, batch))
        assert torch.allclose(outputs, expected[: len(batch)], atol=1e-5)


@pytest.mark.filterwarnings("ignore:`torch.jit.\\w+` is deprecated:FutureWarning")
@pytest.mark.parametrize("output_format", ["torchscript", "onnx"])
def test_raw_images_through_preprocessing_json_and_the_export_equal_predict_raw(
    binary_image_run, tmp_path, output_format, run_exported
) -> None:
    root, result = binary_image_run
    target = export(result.best_model_path, output_format, tmp_path / "exported")
    spec = json.loads((target / "preprocessing.json").read_text())["preprocessing"]
    files = sorted((root / "test").glob("*/*"))
    expected = class_table(load_checkpoint(result.best_model_path, "cifar2").module.predict_raw(files))
    images = normalise_images(files, spec)
    for batch in (images[:1], images):  # batch size 1 and N
        outputs = exported_probabilities(run_exported(target, output_format, batch))
        assert torch.allclose(outputs, expected[: len(batch)], atol=1e-5)
