"""A study's trials as rows, read from MLflow: what the leaderboard, the plots and the evaluation rank.

Used by analysis.leaderboard (python -m analysis.leaderboard --experiment NAME) and tune.py's summary.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from trainables.metrics import OBJECTIVE, OBJECTIVE_KEY
from trainables.tracking import SUPERSEDED_TAG, check_reachable, latest_study


@dataclass
class TrialRow:
    run_id: str
    name: str
    status: str
    family: str
    arch: str
    params: dict                 # the searched values under their study names (MLflow params)

    def param(self, name: str, default=""):
        """A param by its plain name, also in an `all` study, where it is qualified (`cnn.lr`)."""
        return self.params.get(name, self.params.get(f"{self.family}.{name}", default))
    best: float                  # best val_macro_f1 over the trial's epochs (nan if none)
    best_epoch: int
    epochs: int                  # epochs with a reported val_macro_f1
    stopped_early: bool
    wall_s: float                # from the child run's creation (trial start) to its end; nan while running
    history: list = field(repr=False, default_factory=list)   # val_macro_f1 per epoch


def trial_rows(client: MlflowClient, experiment_id: str, parent_run_id: str) -> list[TrialRow]:
    """Every child run of the study (ASHA-stopped ones included), best objective first (OBJECTIVE.mode)."""
    children = client.search_runs([experiment_id], filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'",
                                  max_results=10_000)
    children = [r for r in children if r.data.tags.get(SUPERSEDED_TAG) != "true"]   # replaced by a newer run
    rows = []
    for r in children:
        hist = sorted(client.get_metric_history(r.info.run_id, OBJECTIVE_KEY), key=lambda m: m.step)
        values = [m.value for m in hist]
        best_i = values.index(OBJECTIVE.best(values)) if values else -1
        rows.append(TrialRow(
            run_id=r.info.run_id, name=r.data.tags.get(MLFLOW_RUN_NAME, r.info.run_id), status=r.info.status,
            family=r.data.tags.get("family", "?"), arch=r.data.tags.get("arch", "?"), params=dict(r.data.params),
            best=values[best_i] if values else float("nan"), best_epoch=hist[best_i].step if values else 0,
            epochs=len(values), stopped_early=r.data.tags.get("stopped_early") == "true",
            wall_s=(r.info.end_time - r.info.start_time) / 1000 if r.info.end_time else float("nan"), history=values))
    return sorted(rows, key=lambda row: OBJECTIVE.sort_key(row.best))



def best_per_family(rows: list[TrialRow]) -> dict[str, TrialRow]:
    """Each family's best trial that reported a result, families ranked by it (`rows` are best first)."""
    best: dict[str, TrialRow] = {}
    for r in rows:
        if r.epochs:
            best.setdefault(r.family, r)
    return best


def study_parser(doc: str, prog: str) -> argparse.ArgumentParser:
    """The arguments every analysis command shares: which study, in which tracking store."""
    p = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", required=True, help="MLflow experiment of the study (tune.py --experiment)")
    p.add_argument("--mlflow-uri", default="sqlite:///mlflow.db", help="tracking URI (default: %(default)s)")
    return p


def open_study(p: argparse.ArgumentParser, a: argparse.Namespace):
    """(client, experiment, parent run, trial rows) of the latest study; exit 2 with one line when the store
    cannot be reached or holds no study."""
    try:
        check_reachable(a.mlflow_uri, must_exist=True)   # before MlflowClient, which creates a missing SQLite file
        client = MlflowClient(a.mlflow_uri)
        exp, study = latest_study(client, a.experiment)
    except (ConnectionError, LookupError) as e:
        p.exit(2, f"{p.prog}: error: {e}\n")
    return client, exp, study, trial_rows(client, exp.experiment_id, study.info.run_id)
