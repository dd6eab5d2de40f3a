"""analysis.reading.scores on predictions whose answers are known, checked against scikit-learn where it has one."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, top_k_accuracy_score

from analysis.reading import scores
from trainables import metrics

pytestmark = pytest.mark.unit

CLASSES = ["a", "b", "c", "d", "e", "f"]


def _preds(n=600, acc=0.7, seed=0):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, len(CLASSES), n)
    pred = np.where(rng.random(n) < acc, targets, rng.integers(0, len(CLASSES), n))
    logits = rng.normal(0, 1, (n, len(CLASSES)))
    logits[np.arange(n), pred] += 3
    return logits, targets


def test_point_metrics_match_sklearn_and_intervals_hold_the_estimate():
    logits, targets = _preds()
    m = scores.point_metrics(logits, targets, n_boot=300)
    pred = logits.argmax(1)
    expected = {
        "test_accuracy": accuracy_score(targets, pred),
        "test_macro_f1": f1_score(targets, pred, average="macro"),
        "test_weighted_f1": f1_score(targets, pred, average="weighted"),
        "test_top5": top_k_accuracy_score(targets, logits, k=5),
    }
    for k, v in expected.items():
        assert m[k]["value"] == pytest.approx(v)
        assert m[k]["ci_low"] <= m[k]["value"] <= m[k]["ci_high"]
    # ~600 images: a macro F1 interval several points wide, not zero and not the whole range
    assert 0.02 < m["test_macro_f1"]["ci_high"] - m["test_macro_f1"]["ci_low"] < 0.2


@pytest.mark.parametrize("metric", [m for m in metrics.METRICS.values() if m.resampled], ids=lambda m: m.name)
def test_every_resampled_metric_equals_its_own_function_on_each_resample(metric):
    """The bootstrap scores many resamples at once (Metric.resampled); each must be the metric's own
    (scikit-learn's) value on that resample: with classes absent from a resample, never predicted, and tied
    scores (top-5 breaks ties as scikit-learn does)."""
    logits, targets = _preds(n=90, acc=0.4, seed=3)
    logits[::7] = np.round(logits[::7])  # ties in the ranking
    targets = np.where(targets == 5, 4, targets)  # class f is never true
    rows = np.random.default_rng(1).integers(0, len(targets), (40, len(targets)))
    rows[0] = np.flatnonzero(targets < 2)[np.arange(len(targets)) % np.count_nonzero(targets < 2)]  # 2 classes only
    got = metric.resampled(logits, targets)(rows)
    assert got.shape == (len(rows),)
    assert got == pytest.approx([metric.fn(logits[r], targets[r]) for r in rows], abs=1e-12)
    assert metric.resampled(logits, targets)(rows.reshape(4, 10, -1)).shape == (4, 10)  # any leading shape


def test_intervals_narrow_with_more_images():
    small, large = (scores.point_metrics(*_preds(n), n_boot=200)["test_accuracy"] for n in (200, 3000))
    assert large["ci_high"] - large["ci_low"] < small["ci_high"] - small["ci_low"]


def test_calibration_buckets_cover_every_prediction_and_ece_sees_overconfidence():
    logits, targets = _preds(acc=0.5)
    cal = scores.calibration(logits * 5, targets)  # sharpened logits: ~100 % confident, ~50 % right
    assert sum(b["share_of_predictions"] for b in cal["buckets"]) == pytest.approx(1.0)
    assert sum(b["count"] for b in cal["bins"]) == len(targets)
    assert cal["ece"] > 0.3
    right = np.zeros_like(logits)
    right[np.arange(len(targets)), targets] = 50  # always right, always sure
    assert scores.calibration(right, targets)["ece"] < 1e-6


def test_confused_pairs_are_the_largest_off_diagonal_counts():
    cm = np.diag([10, 10, 10]).astype(int)
    cm[0, 1], cm[2, 0] = 7, 3
    pairs = scores.confused_pairs(cm, ["x", "y", "z"])
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [("x", "y", 7), ("z", "x", 3)]
    assert pairs[0]["share_of_true"] == pytest.approx(7 / 17)


def test_embedding_outliers_rank_a_sample_sitting_in_another_class_first():
    rng = np.random.default_rng(0)
    targets = np.repeat(np.arange(3), 20)
    centers = np.eye(3) * 5
    emb = centers[targets] + rng.normal(0, 0.3, (60, 3))
    emb[7] = centers[2]  # labelled class 0, looks like class 2
    logits = np.eye(3)[targets] * 5
    out = scores.embedding_outliers(emb, logits, targets, ["p", "q", "r"], top=5)
    assert out[0]["index"] == 7 and out[0]["margin"] < 0 and out[0]["nearest_other"] == "r"
    assert all(o["margin"] > 0 for o in out[1:])
