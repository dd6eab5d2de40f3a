"""Metrics over a whole split: a metric is one `Metric` spec (name, direction, function) in METRICS.

Every function takes (logits [N, C] float, targets [N] int) as numpy arrays and returns a float. A spec's
`key(split)` is its reported name (`val_macro_f1`, `test_macro_f1`); OBJECTIVE is the spec that Optuna,
ASHA, checkpoints, the running best and the leaderboard rank by, each reading its `mode`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

# sklearn and torch are imported inside the functions: the trial driver and the Tune process import this
# module for OBJECTIVE and should not pay ~1.5 s of sklearn import in every trial.

PG_KEY = "placement_group_id"  # also in each report: lets the study free a stopped trial's Train workers
RUN_ID_KEY = "mlflow_run_id"  # also in each report: the trial's child run, which the study closes
REPLAYED_KEY = "replayed"  # a finished trial's record given back to a resumed study (not trained again)
# trainables.tracking.recorder takes these out before Tune sees the report (rank 0's only, but SYSTEM_KEY)
TAGS_KEY = "artsweep_tags"  # tags for the trial's run, on a worker group's first report
IMPROVED_KEY = "artsweep_improved"  # this epoch is the best so far: the checkpoint folder also holds model.pt
SYSTEM_KEY = "artsweep_system"  # any rank's report: its node's system metrics (trainables.tracking.sysmetrics)


@dataclass(frozen=True)
class Metric:
    name: str  # without split prefix: "macro_f1"
    fn: Callable[[np.ndarray, np.ndarray], float]
    mode: str = "max"  # "max": higher is better; "min": lower is better
    min_classes: int = 2  # reported only for at least this many classes (top-5: 6)
    # the same metric on many resamples of one split at once, for bootstrap intervals: resampled(logits, targets)
    # gives f(idx [..., N] image indices) -> values [...], equal to fn(logits[i], targets[i]) for each row i of idx
    # (tests/test_scores.py checks every one against fn); None: fn is called once per resample
    resampled: Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]] | None = None

    def key(self, split: str = "val") -> str:
        return f"{split}_{self.name}"

    def better(self, a: float, b: float) -> bool:
        """a is strictly better than b (b may be nan: anything finite beats it)."""
        if math.isnan(b):
            return not math.isnan(a)
        return a > b if self.mode == "max" else a < b

    def best(self, values) -> float:
        """The best of `values` (nan when empty)."""
        out = math.nan
        for v in values:
            out = v if self.better(v, out) else out
        return out

    def sort_key(self, value: float) -> tuple:
        """Sorts best first with sorted(..., key=...): nan (never reported) last."""
        return (True, 0.0) if math.isnan(value) else (False, -value if self.mode == "max" else value)


def _pred(logits: np.ndarray) -> np.ndarray:
    return logits.argmax(1)


def macro_f1(logits, targets) -> float:
    from sklearn.metrics import f1_score

    labels = np.arange(logits.shape[1])  # classes absent from the split count as 0, not silently dropped
    return float(f1_score(targets, _pred(logits), labels=labels, average="macro", zero_division=0))


def weighted_f1(logits, targets) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(targets, _pred(logits), average="weighted", zero_division=0))


def accuracy(logits, targets) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(targets, _pred(logits)))


def top5(logits, targets) -> float:
    """Share of images whose class is among the 5 highest scores (only reported for more than 5 classes)."""
    from sklearn.metrics import top_k_accuracy_score

    return float(top_k_accuracy_score(targets, logits, k=5, labels=np.arange(logits.shape[1])))


def _confusions(logits, targets):
    """idx [..., N] -> confusion counts [..., C, C] ([true, predicted]) of each resample: one bincount for all."""
    pred, c = _pred(logits), logits.shape[1]

    def counts(idx: np.ndarray) -> np.ndarray:
        rows = np.asarray(idx).reshape(-1, np.shape(idx)[-1])
        codes = (np.arange(len(rows))[:, None] * c + targets[rows]) * c + pred[rows]
        return np.bincount(codes.ravel(), minlength=len(rows) * c * c).reshape(*np.shape(idx)[:-1], c, c)

    return counts


def _f1_per_class(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(F1 [..., C], support [..., C]) from confusion counts: 2 tp / (2 tp + fp + fn), 0 where a class is neither
    true nor predicted (scikit-learn's zero_division=0)."""
    tp, support = np.diagonal(cm, axis1=-2, axis2=-1), cm.sum(-1)
    both = support + cm.sum(-2)  # true + predicted = 2 tp + fp + fn
    return np.divide(2 * tp, both, out=np.zeros(both.shape), where=both > 0), support


def _resampled_macro_f1(logits, targets):
    counts = _confusions(logits, targets)
    return lambda idx: _f1_per_class(counts(idx))[0].mean(-1)  # every class, as macro_f1's labels=arange(C)


def _resampled_weighted_f1(logits, targets):
    counts = _confusions(logits, targets)

    def weighted(idx):
        f1, support = _f1_per_class(counts(idx))
        return (f1 * support).sum(-1) / support.sum(-1)  # absent classes weigh 0, as scikit-learn leaves them out

    return weighted


def _resampled_hits(hit: np.ndarray):
    return lambda idx: hit[np.asarray(idx)].mean(-1)


def _resampled_accuracy(logits, targets):
    return _resampled_hits(_pred(logits) == targets)


def _resampled_top5(logits, targets):
    # top_k_accuracy_score's own ranking (a stable sort, reversed), so ties break as it breaks them
    top = np.argsort(logits, axis=1, kind="mergesort")[:, ::-1][:, :5]
    return _resampled_hits((top == targets[:, None]).any(1))


def loss(logits, targets) -> float:
    """Plain cross-entropy (no label smoothing), comparable across trials."""
    import torch

    return float(
        torch.nn.functional.cross_entropy(
            torch.as_tensor(logits, dtype=torch.float32), torch.as_tensor(targets, dtype=torch.long)
        )
    )


METRICS = {
    m.name: m
    for m in (
        Metric("macro_f1", macro_f1, resampled=_resampled_macro_f1),
        Metric("accuracy", accuracy, resampled=_resampled_accuracy),
        Metric("top5", top5, min_classes=6, resampled=_resampled_top5),
        Metric("weighted_f1", weighted_f1, resampled=_resampled_weighted_f1),
        Metric("loss", loss, mode="min"),
    )
}
OBJECTIVE = METRICS["macro_f1"]
OBJECTIVE_KEY = OBJECTIVE.key("val")  # "val_macro_f1": the Tune metric, ASHA's, the MLflow metric
BEST_KEY = f"best_{OBJECTIVE_KEY}"  # running best per trial, logged to MLflow beside the per-epoch values


def applicable(num_classes: int) -> list[Metric]:
    """The metrics that mean something for this many classes (top-5 of 2 classes is always 1: left out)."""
    return [m for m in METRICS.values() if num_classes >= m.min_classes]


def compute(logits: np.ndarray, targets: np.ndarray, split: str = "val") -> dict[str, float]:
    return {m.key(split): m.fn(logits, targets) for m in applicable(logits.shape[1])}
