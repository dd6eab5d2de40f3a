"""A study's trials as rows, read from MLflow.

python -m analysis.runs --experiment NAME [--mlflow-uri URI]   # prints the latest study's trials, best first
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field

from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from trainables.metrics import OBJECTIVE
from trainables.tracking import STUDY_TAG


@dataclass
class TrialRow:
    run_id: str
    name: str
    status: str
    family: str
    arch: str
    params: dict
    best: float                  # best val_macro_f1 over the trial's epochs (nan if none)
    best_epoch: int
    epochs: int                  # epochs with a reported val_macro_f1
    stopped_early: bool
    history: list = field(repr=False, default_factory=list)   # val_macro_f1 per epoch


def latest_study(client: MlflowClient, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise LookupError(f"no MLflow experiment named {experiment!r}")
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`{STUDY_TAG}` = '1'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise LookupError(f"experiment {experiment!r} holds no artsweep study")
    return exp, runs[0]


def trial_rows(client: MlflowClient, experiment_id: str, parent_run_id: str) -> list[TrialRow]:
    """Every child run of the study (ASHA-stopped ones included), best val_macro_f1 first."""
    children = client.search_runs([experiment_id], filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'",
                                  max_results=10_000)
    rows = []
    for r in children:
        hist = sorted(client.get_metric_history(r.info.run_id, OBJECTIVE), key=lambda m: m.step)
        values = [m.value for m in hist]
        best_i = max(range(len(values)), key=values.__getitem__) if values else -1
        rows.append(TrialRow(
            run_id=r.info.run_id, name=r.data.tags.get(MLFLOW_RUN_NAME, r.info.run_id), status=r.info.status,
            family=r.data.tags.get("family", "?"), arch=r.data.tags.get("arch", "?"), params=dict(r.data.params),
            best=values[best_i] if values else float("nan"), best_epoch=hist[best_i].step if values else 0,
            epochs=len(values), stopped_early=r.data.tags.get("stopped_early") == "true", history=values))
    return sorted(rows, key=lambda row: (row.best == row.best, row.best), reverse=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", required=True, help="MLflow experiment name (tune.py --experiment)")
    p.add_argument("--mlflow-uri", default="sqlite:///mlflow.db", help="tracking URI (default: %(default)s)")
    a = p.parse_args(argv)
    client = MlflowClient(a.mlflow_uri)
    exp, study = latest_study(client, a.experiment)
    for row in trial_rows(client, exp.experiment_id, study.info.run_id):
        print(json.dumps({"trial": row.name, "family": row.family, "arch": row.arch, OBJECTIVE: round(row.best, 4),
                          "best_epoch": row.best_epoch, "epochs": row.epochs, "stopped_early": row.stopped_early,
                          "status": row.status}))


if __name__ == "__main__":
    main()
