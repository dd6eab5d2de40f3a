"""Test-set evidence from predictions: pure numpy / scikit-learn / scipy, no model, no MLflow.

Inputs everywhere: logits [N, C] float, targets [N] int (class indices), classes [C] names.
The point metrics are trainables.metrics.METRICS (the ones every epoch reported, under their `test_` keys),
so the test numbers are computed by the same code as the validation numbers trials were selected by.
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from sklearn.metrics import classification_report, confusion_matrix

from trainables import metrics

POINT = ("accuracy", "top5", "macro_f1", "weighted_f1")  # metrics.METRICS bootstrapped; reported as test_*
CONFIDENCE_BUCKETS = (0.9, 0.7, 0.5, 0.0)  # the seeds' calibration table: >90 %, 70-90 %, 50-70 %, <50 %


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


BOOT_BATCH = 100  # resamples evaluated at once: 100 x N image indices (13 MB for WikiArt's 16k test images)


def point_metrics(logits: np.ndarray, targets: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict:
    """{test_accuracy: {value, ci_low, ci_high}, ...}: the value is the metric's own function (scikit-learn's);
    95 % percentile-bootstrap intervals over test images (scipy.stats.bootstrap, resampling images with
    replacement), each batch of resamples scored at once by the metric's `resampled` form (1,000 resamples in
    tens of ms instead of one scikit-learn call each: ~20 s of every study's closing on 2 cores)."""
    out = {}
    rng = np.random.default_rng(seed)
    for m in (m for m in metrics.applicable(logits.shape[1]) if m.name in POINT):
        value = m.fn(logits, targets)
        entry = {"value": value, "ci_low": value, "ci_high": value}
        if n_boot > 1 and len(targets) > 1:
            if m.resampled:
                by_rows = m.resampled(logits, targets)  # scipy passes the resamples' axis: always the last
                statistic, vectorized = (lambda idx, axis=-1, f=by_rows: f(idx)), True
            else:
                statistic, vectorized = (lambda idx, fn=m.fn: fn(logits[idx], targets[idx])), False
            res = stats.bootstrap(
                (np.arange(len(targets)),),
                statistic,
                n_resamples=n_boot,
                batch=BOOT_BATCH,
                vectorized=vectorized,
                method="percentile",
                confidence_level=0.95,
                random_state=rng,
            )
            entry.update(ci_low=float(res.confidence_interval.low), ci_high=float(res.confidence_interval.high))
        out[m.key("test")] = entry
    return out


def per_class(logits: np.ndarray, targets: np.ndarray, classes: list[str]) -> dict:
    """scikit-learn's classification report (precision, recall, f1, support per class and averages)."""
    return classification_report(
        targets,
        logits.argmax(1),
        labels=np.arange(len(classes)),
        target_names=classes,
        output_dict=True,
        zero_division=0,
    )


def confusion(logits: np.ndarray, targets: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts [true, predicted]."""
    return confusion_matrix(targets, logits.argmax(1), labels=np.arange(n_classes))


def confused_pairs(cm: np.ndarray, classes: list[str], top: int = 10) -> list[dict]:
    """The most frequent mistakes: true class -> predicted class, with the share of the true class."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None)[:top]
    pairs = []
    for flat in order:
        t, p = np.unravel_index(flat, cm.shape)
        if off[t, p] == 0:
            break
        pairs.append(
            {
                "true": classes[t],
                "predicted": classes[p],
                "count": int(off[t, p]),
                "share_of_true": float(off[t, p] / max(1, cm[t].sum())),
            }
        )
    return pairs


def calibration(logits: np.ndarray, targets: np.ndarray, n_bins: int = 15) -> dict:
    """Top-label calibration: expected calibration error over equal-width confidence bins, the bins
    (for the reliability diagram) and the seeds' confidence-bucket table."""
    probs = softmax(logits)
    conf, correct = probs.max(1), (probs.argmax(1) == targets).astype(float)
    edges = np.linspace(0, 1, n_bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        m = which == b
        if m.any():
            acc, mean_conf = float(correct[m].mean()), float(conf[m].mean())
            ece += m.mean() * abs(acc - mean_conf)
            bins.append(
                {
                    "low": float(edges[b]),
                    "high": float(edges[b + 1]),
                    "count": int(m.sum()),
                    "accuracy": acc,
                    "confidence": mean_conf,
                }
            )
    buckets, upper = [], 1.0 + 1e-9
    for low in CONFIDENCE_BUCKETS:
        m = (conf > low) & (conf <= upper) if low > 0 else conf <= upper
        buckets.append(
            {
                "confidence": f"{int(low * 100)}-{int(min(upper, 1) * 100)} %",
                "share_of_predictions": float(m.mean()),
                "precision": float(correct[m].mean()) if m.any() else float("nan"),
                "count": int(m.sum()),
            }
        )
        upper = low
    return {"ece": float(ece), "bins": bins, "buckets": buckets}


def embedding_outliers(
    emb: np.ndarray, logits: np.ndarray, targets: np.ndarray, classes: list[str], top: int = 20
) -> list[dict]:
    """Seed 003's check: L2-normalised embeddings, class centroids over this split; a sample is suspect
    when it is far from its own centroid, closer to another class's (negative margin) or mispredicted.
    Returns the `top` most suspect (lowest margin first) with their indices into the split."""
    z = emb / np.linalg.norm(emb, axis=1, keepdims=True).clip(1e-12)
    cents = np.stack(
        [z[targets == c].mean(0) if (targets == c).any() else np.zeros(z.shape[1]) for c in range(len(classes))]
    )
    cents /= np.linalg.norm(cents, axis=1, keepdims=True).clip(1e-12)
    sim = z @ cents.T  # cosine similarity to every centroid
    own = sim[np.arange(len(z)), targets]
    other = sim.copy()
    other[np.arange(len(z)), targets] = -np.inf
    nearest = other.argmax(1)
    margin = own - other[np.arange(len(z)), nearest]  # < 0: closer to another class's centroid
    pred = logits.argmax(1)
    order = np.argsort(margin)[:top]
    return [
        {
            "index": int(i),
            "true": classes[targets[i]],
            "predicted": classes[pred[i]],
            "own_similarity": float(own[i]),
            "nearest_other": classes[nearest[i]],
            "margin": float(margin[i]),
            "mispredicted": bool(pred[i] != targets[i]),
        }
        for i in order
    ]
