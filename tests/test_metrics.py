"""Metrics cover all classes and agree with scikit-learn on the same predictions."""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from trainables import metrics

pytestmark = pytest.mark.unit


def test_metric_registry_names_and_values():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 6)).astype(np.float32)
    targets = rng.integers(0, 6, 200)
    m = metrics.compute(logits, targets)
    assert set(m) == {spec.key("val") for spec in metrics.METRICS.values()} and metrics.OBJECTIVE_KEY in m
    assert all("/" not in k and k.startswith("val_") for k in m)
    assert m["val_macro_f1"] == pytest.approx(f1_score(targets, logits.argmax(1), average="macro"))
    assert m["val_accuracy"] <= m["val_top5"] <= 1


def test_class_missing_from_predictions_counts_as_zero():
    logits = np.eye(3, dtype=np.float32)[[0, 0, 1, 1]]  # never predicts class 2
    targets = np.array([0, 0, 1, 2])
    assert metrics.macro_f1(logits, targets) == pytest.approx((1 + 2 / 3 + 0) / 3)


@pytest.mark.parametrize("spec", list(metrics.METRICS.values()), ids=list(metrics.METRICS))
def test_every_metric_spec_ranks_by_its_own_direction(spec):
    good, bad = (0.9, 0.1) if spec.mode == "max" else (0.1, 0.9)
    assert spec.better(good, bad) and not spec.better(bad, good) and spec.better(bad, float("nan"))
    assert spec.best([bad, good, bad]) == good
    ranked = sorted([bad, float("nan"), good], key=spec.sort_key)
    assert ranked[:2] == [good, bad] and ranked[2] != ranked[2]  # best first, never-reported last
    assert spec.key("val") == f"val_{spec.name}" and spec.key("test") == f"test_{spec.name}"


def test_loss_is_minimised_and_the_objective_maximised():
    assert metrics.METRICS["loss"].mode == "min" and metrics.OBJECTIVE.mode == "max"
    assert metrics.OBJECTIVE_KEY == "val_macro_f1" and metrics.BEST_KEY == "best_val_macro_f1"


@pytest.mark.parametrize("num_classes", [2, 3, 5])
def test_few_classes_omit_top5_and_absent_classes_count(num_classes):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(40, num_classes)).astype(np.float32)
    targets = rng.integers(0, num_classes - 1, 40)  # the last class never occurs in the split
    m = metrics.compute(logits, targets)
    assert "val_top5" not in m and {"val_macro_f1", "val_accuracy", "val_loss"} <= set(m)
    labels = np.arange(num_classes)
    assert m["val_macro_f1"] == pytest.approx(
        f1_score(targets, logits.argmax(1), labels=labels, average="macro", zero_division=0)
    )
