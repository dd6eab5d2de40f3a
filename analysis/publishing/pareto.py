"""A Pareto search's front, marked where people look: each trial on it tagged `pareto=true` (the others `false`),
and the parent run's `pareto.png` (accuracy against cost, the front drawn, its points labelled by architecture).
A study with a latency budget gets the figure too, with the budget drawn. Run by the study's closing steps."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from mlflow.entities import RunTag
from mlflow.tracking import MlflowClient

from analysis.reading import front
from analysis.reading.runs import TrialRow
from trainables import objectives
from trainables.config import RunSettings
from trainables.objectives import PARETO_TAG


def cost_key(s: RunSettings) -> str | None:
    """The cost the study's front is drawn against: its second objective, latency_ms under a latency budget, or
    None for a study that ranks by accuracy alone."""
    goals = objectives.parse(s.objectives)
    return goals.keys[1] if goals.pareto else "latency_ms" if s.max_latency_ms else None


def publish(client: MlflowClient, s: RunSettings, rows: list[TrialRow]) -> list[TrialRow]:
    """Tag the front (a Pareto search) and log the figure; returns the rows with `pareto` set."""
    key = cost_key(s)
    if key is None:
        return rows
    if s.objectives:
        on = {r.run_id for r in front.front(rows, key)}
        for r in front.points(rows, key):
            client.log_batch(r.run_id, tags=[RunTag(PARETO_TAG, str(r.run_id in on).lower())])
        rows = [dataclasses.replace(r, pareto=r.run_id in on) for r in rows]
    with tempfile.TemporaryDirectory() as tmp:
        client.log_artifact(
            s.parent_run_id, str(front.front_png(rows, key, Path(tmp) / front.FIGURE, s.max_latency_ms))
        )
    return rows
