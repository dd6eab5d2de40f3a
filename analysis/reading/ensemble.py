"""The top K models of a study as one: which runs, their test predictions, and the score table beside each member.

Members: the K best runs by validation macro F1 among the confirmation runs (several seeds of the best
configurations: the usual way an ensemble gains), or among the search's trials when the study did not confirm.
The ensemble's probabilities are the members' mean (trainables.checkpoint.average, as the served ensemble
computes them).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from analysis.reading import scores
from analysis.reading.confirm import searched
from analysis.reading.evaluation import load_trial, predict_split
from analysis.reading.runs import TrialRow
from trainables.metrics import OBJECTIVE


def members(rows: list[TrialRow], k: int) -> list[TrialRow]:
    """The K best confirmation runs by validation, or the K best search trials without confirmation."""
    pool = [r for r in rows if r.phase == "confirm" and r.epochs] or [r for r in searched(rows) if r.epochs]
    return sorted(pool, key=lambda r: OBJECTIVE.sort_key(r.best))[:k]


def as_logits(probs: np.ndarray) -> np.ndarray:
    """Probabilities as logits for analysis.reading.scores (its softmax gives them back; argmax and ranks are kept)."""
    return np.log(np.clip(probs, 1e-12, None))


def table(named: dict[str, np.ndarray], targets: np.ndarray, n_boot: int) -> pd.DataFrame:
    """One row per model (name -> probabilities [N, C]): each point metric with its bootstrap 95 % interval."""
    out = []
    for name, probs in named.items():
        point = scores.point_metrics(as_logits(probs), targets, n_boot=n_boot)
        out.append(
            {
                "model": name,
                **{k: v["value"] for k, v in point.items()},
                **{f"{k}_ci": f"[{v['ci_low']:.4f}, {v['ci_high']:.4f}]" for k, v in point.items()},
            }
        )
    return pd.DataFrame(out).set_index("model")


def member_probabilities(
    client: MlflowClient, rows: list[TrialRow], parent_run_id: str
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """({member name: test probabilities [N, C]}, targets [N]) through the evaluation's prediction."""
    probs, targets = {}, None
    for r in rows:
        with tempfile.TemporaryDirectory() as tmp:
            clf, splits = load_trial(client, r, parent_run_id, Path(tmp))
        pred = predict_split(clf, splits)
        if targets is not None and not np.array_equal(targets, pred.targets):
            raise ValueError(f"{r.name} scored other test images than the other members (another split?)")
        probs[r.name], targets = scores.softmax(pred.logits), pred.targets
    return probs, targets
