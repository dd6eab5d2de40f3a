"""Validation metrics over a whole split: a metric is one function in METRICS.

Every function takes (logits [N, C] float, targets [N] int) as numpy arrays and returns a float.
Names carry the `val_` prefix where they are reported; `val_macro_f1` is the study's objective.
"""
from __future__ import annotations

import numpy as np

# sklearn and torch are imported inside the functions: the trial driver and the Tune process import this
# module for OBJECTIVE and should not pay ~1.5 s of sklearn import in every trial.

OBJECTIVE = "val_macro_f1"   # the one metric Optuna, ASHA, checkpoints and the leaderboard rank by
MODE = "max"
BEST = f"best_{OBJECTIVE}"     # running best per trial, logged to MLflow beside the per-epoch values
PG_KEY = "placement_group_id"  # also in each report: lets the study free a stopped trial's Train workers


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
    from sklearn.metrics import top_k_accuracy_score
    k = min(5, logits.shape[1] - 1)
    if k < 1:
        return 1.0
    return float(top_k_accuracy_score(targets, logits, k=k, labels=np.arange(logits.shape[1])))


def loss(logits, targets) -> float:
    """Plain cross-entropy (no label smoothing), comparable across trials."""
    import torch
    return float(torch.nn.functional.cross_entropy(torch.as_tensor(logits, dtype=torch.float32),
                                                   torch.as_tensor(targets, dtype=torch.long)))


METRICS = {
    "val_macro_f1": macro_f1,
    "val_accuracy": accuracy,
    "val_top5": top5,
    "val_weighted_f1": weighted_f1,
    "val_loss": loss,
}


def compute(logits: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    return {name: fn(logits, targets) for name, fn in METRICS.items()}
