"""The reports analysis logs to a study's MLflow parent run: the leaderboard, the study plots, each evaluation
(and the winner's test metrics on its own run, which crowns it) and the ensemble's scores."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from analysis.publishing.winner import crown
from analysis.reading.board import write
from analysis.reading.evaluation import Evaluation, test_metrics
from analysis.reading.runs import TrialRow
from trainables.tracking import mlflow_runs

LEADERBOARD, PLOTS, EVALUATION, ENSEMBLE = "leaderboard", "plots", "evaluation", "ensemble"  # artifact folders


def log_leaderboard(client: MlflowClient, parent_run_id: str, rows: list[TrialRow]) -> None:
    """leaderboard/leaderboard.csv (every param, raw values) and .md."""
    with tempfile.TemporaryDirectory() as tmp:
        write(rows, Path(tmp) / "leaderboard.csv", Path(tmp) / "leaderboard.md")
        client.log_artifacts(parent_run_id, tmp, LEADERBOARD)


def log_plots(client: MlflowClient, parent_run_id: str, paths: list[Path]) -> None:
    for p in paths:
        client.log_artifact(parent_run_id, str(p), artifact_path=PLOTS)


def log_evaluation(
    client: MlflowClient,
    experiment_id: str,
    parent_run_id: str,
    row: TrialRow,
    ev: Evaluation,
    folder: Path,
    winner: bool,
) -> None:
    """The evidence goes to the parent run (evaluation/<trial>/); the winner's test metrics, with their intervals,
    go on its own run, which is crowned (analysis.publishing.winner: tag, logged model, links) as the study's end
    does."""
    client.log_artifacts(parent_run_id, str(folder), f"{EVALUATION}/{ev.trial}")
    if winner:
        settings = mlflow_runs.read_artifact_json(client, parent_run_id, mlflow_runs.SETTINGS)
        crown(client, experiment_id, parent_run_id, row, test_metrics(ev), settings.get("dataset"))


def log_ensemble(client: MlflowClient, parent_run_id: str, members: list[TrialRow], df: pd.DataFrame) -> None:
    """ensemble/metrics.json (the members' run ids, each model's metrics) and metrics.md (the table)."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "metrics.json").write_text(
            json.dumps(
                {"members": [r.run_id for r in members], "metrics": df.reset_index().to_dict("records")}, indent=2
            )
        )
        (Path(tmp) / "metrics.md").write_text(df.to_markdown(floatfmt=".4f") + "\n")
        client.log_artifacts(parent_run_id, tmp, ENSEMBLE)
