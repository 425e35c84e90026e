"""Classification metrics a stage's targets cannot define are reported as NaN with one warning, not as 0."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torchmetrics.functional.classification import binary_auroc, binary_f1_score

from lightning_app.models.classifier import ClassifierModule


class Probabilities(ClassifierModule):
    """A classifier whose inputs are already its logits, so each test chooses the predictions."""

    def __init__(self, num_classes: int = 2) -> None:
        names = ["died", "survived"] if num_classes == 2 else ["bird", "cat", "dog"][:num_classes]
        super().__init__(num_classes, preprocessing={"class_names": names})
        self.net = torch.nn.Identity()


def epoch(module: ClassifierModule, stage: str, logits: torch.Tensor, target: list[int]) -> dict[str, float]:
    """One epoch of ``stage`` in two steps; the computed metrics as floats, warnings left to the caller."""
    target_tensor = torch.tensor(target)
    half = len(target) // 2
    module._step(stage, (logits[:half], target_tensor[:half]))
    module._step(stage, (logits[half:], target_tensor[half:]))
    return {key: float(value) for key, value in module.compute_epoch_metrics(stage).items()}


def our_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "cannot be computed" in str(w.message)]


LOGITS = torch.tensor([-2.0, 1.0, -0.5, 3.0, 0.2, -1.0])


def test_one_class_binary_set_reports_auroc_and_f1_as_nan_with_one_warning_naming_the_stage() -> None:
    module = Probabilities()
    with pytest.warns(UserWarning) as caught:
        values = epoch(module, "test", LOGITS, [0] * 6)
    (message,) = our_warnings(caught.list)
    assert message.startswith("test: the test examples (6) hold no example of class(es) survived;")
    assert "test/auroc, test/f1 cannot be computed and are reported as NaN" in message
    assert math.isnan(values["test/auroc"]) and math.isnan(values["test/f1"])
    assert values["test/acc"] == pytest.approx(3 / 6)  # accuracy is defined: 3 of 6 predicted negative


def test_only_positives_leave_f1_defined_and_auroc_nan() -> None:
    module = Probabilities()
    with pytest.warns(UserWarning) as caught:
        values = epoch(module, "val", LOGITS, [1] * 6)
    (message,) = our_warnings(caught.list)
    assert message.startswith("val: ") and "no example of class(es) died; val/auroc cannot be computed" in message
    assert math.isnan(values["val/auroc"])
    assert values["val/f1"] == pytest.approx(float(binary_f1_score(torch.sigmoid(LOGITS), torch.ones(6).long())))


def test_both_classes_give_torchmetrics_values_without_a_warning() -> None:
    module = Probabilities()
    target = [0, 1, 0, 1, 1, 0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = epoch(module, "test", LOGITS, target)
    assert our_warnings(caught) == []
    preds = torch.sigmoid(LOGITS)
    assert values["test/auroc"] == pytest.approx(float(binary_auroc(preds, torch.tensor(target))))
    assert values["test/f1"] == pytest.approx(float(binary_f1_score(preds, torch.tensor(target))))


def test_counts_start_again_each_epoch() -> None:
    module = Probabilities()
    with pytest.warns(UserWarning, match="cannot be computed"):
        epoch(module, "train", LOGITS, [0] * 6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = epoch(module, "train", LOGITS, [0, 1, 0, 1, 1, 0])
    assert our_warnings(caught) == []
    assert all(math.isfinite(value) for value in values.values()), values


def test_multiclass_set_missing_a_class_reports_macro_metrics_and_its_accuracy_as_nan() -> None:
    module = Probabilities(num_classes=3)
    logits = torch.tensor([[3.0, 0, 0], [0, 3.0, 0], [3.0, 0, 0], [0, 0, 3.0], [0, 3.0, 0], [3.0, 0, 0]])
    with pytest.warns(UserWarning) as caught:
        values = epoch(module, "test", logits, [0, 1, 0, 1, 1, 0])
    (message,) = our_warnings(caught.list)
    assert "no example of class(es) dog; test/auroc, test/f1, test/acc_dog cannot be computed" in message
    assert math.isnan(values["test/auroc"]) and math.isnan(values["test/f1"]) and math.isnan(values["test/acc_dog"])
    assert values["test/acc_bird"] == 1.0 and values["test/acc_cat"] == pytest.approx(2 / 3)
    assert values["test/acc"] == pytest.approx(5 / 6)
