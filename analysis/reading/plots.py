"""The study as pictures: learning curves, fANOVA hyper-parameter importance, parallel coordinates (PNG, Agg),
drawn into a local folder from the trials MLflow holds (analysis.reading.runs), never from Ray's result folders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from mlflow.tracking import MlflowClient
from optuna.distributions import BaseDistribution

from analysis.reading.optuna_study import build_study
from analysis.reading.plot_figures import LOSS, importance_png, learning_curves_png, parallel_png
from analysis.reading.runs import TrialRow, metric_histories

LEARNING_CURVES, IMPORTANCE, PARALLEL = "learning_curves.png", "param_importance.png", "parallel_coordinates.png"


def plot_study(
    rows: list[TrialRow],
    folder: Path,
    distributions: Mapping[str, BaseDistribution],
    max_epochs: int | None = None,
    val_loss: Mapping[str, list] | None = None,
) -> list[Path]:
    """learning_curves.png, param_importance.png, parallel_coordinates.png in `folder` (created).

    rows: analysis.reading.runs.trial_rows (best first). distributions: optuna_study.parse_space of the study's
    space.
    val_loss: {run_id: [(epoch, value), ...]} for the second learning-curve panel (fetch_histories reads it
    from MLflow); none -> a single panel."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    study, skipped = build_study(rows, distributions)
    return [
        learning_curves_png(rows, folder / LEARNING_CURVES, max_epochs, val_loss),
        importance_png(study, skipped, folder / IMPORTANCE),
        parallel_png(study, skipped, folder / PARALLEL),
    ]


def fetch_histories(client: MlflowClient, rows: list[TrialRow], metric: str = LOSS) -> dict[str, list]:
    """{run_id: [(step, value), ...] sorted by step} of `metric` for every trial that logged it."""
    return {k: v for k, v in metric_histories(client, [r.run_id for r in rows], metric).items() if v}


def max_epochs(parent) -> int | None:
    """The study's --max-epochs (its parent run's param; None when not logged): the curves' x range."""
    try:
        return int(parent.data.params["max_epochs"]) or None
    except (KeyError, ValueError):
        return None
