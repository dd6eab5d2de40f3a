"""Metrics cover all classes and agree with scikit-learn on the same predictions."""
import numpy as np
import pytest
from sklearn.metrics import f1_score

from trainables import metrics


def test_metric_registry_names_and_values():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 6)).astype(np.float32)
    targets = rng.integers(0, 6, 200)
    m = metrics.compute(logits, targets)
    assert set(m) == set(metrics.METRICS) and metrics.OBJECTIVE in m
    assert all("/" not in k and k.startswith("val_") for k in m)
    assert m["val_macro_f1"] == pytest.approx(f1_score(targets, logits.argmax(1), average="macro"))
    assert m["val_accuracy"] <= m["val_top5"] <= 1


def test_class_missing_from_predictions_counts_as_zero():
    logits = np.eye(3, dtype=np.float32)[[0, 0, 1, 1]]   # never predicts class 2
    targets = np.array([0, 0, 1, 2])
    assert metrics.macro_f1(logits, targets) == pytest.approx((1 + 2 / 3 + 0) / 3)
