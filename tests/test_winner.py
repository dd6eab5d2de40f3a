"""Crowning a study's winner in MLflow (analysis.publishing.winner) on a real SQLite store: exactly one winner, its test
metrics on its own run, descriptions that lead with it; crowning again (a resumed study) moves the crown."""

import pytest
from mlflow.tracking import MlflowClient

from analysis.publishing import winner
from analysis.reading.runs import TrialRow
from trainables.tracking import mlflow_runs

pytestmark = pytest.mark.unit


def test_the_crown_goes_to_one_run_and_the_descriptions_lead_with_it(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp, parent = mlflow_runs.setup_study(uri, "crown", {"family": "scratch"}, tmp_path, description="The study.")
    client = MlflowClient(uri)
    rows = []
    for i in range(2):
        run = client.create_run(exp, run_name=f"run_trial_{i}", tags={"mlflow.parentRunId": parent})
        rows.append(
            TrialRow(
                run.info.run_id, f"run_trial_{i}", "FINISHED", "scratch", "deep_cnn", {}, 0.5 + i / 10, 2, 3, False, 1.0
            )
        )
    winner.crown(client, exp, parent, rows[0], {"test_macro_f1": 0.4}, log_model=False)
    winner.crown(client, exp, parent, rows[1], {"test_macro_f1": 0.6, "test_accuracy": 0.7}, log_model=False)
    runs = {r.info.run_id: r for r in client.search_runs([exp])}
    assert [k for k, r in runs.items() if r.data.tags.get("winner") == "true"] == [rows[1].run_id]
    assert runs[rows[1].run_id].data.metrics == {"test_macro_f1": 0.6, "test_accuracy": 0.7}
    assert runs[parent].data.tags["winner_run_id"] == rows[1].run_id
    for note in (runs[parent].data.tags["mlflow.note.content"], client.get_experiment(exp).tags["mlflow.note.content"]):
        lead, rest = note.split("\n\n")
        assert lead.startswith("**Winner:** [run_trial_1](#/experiments/") and "test_macro_f1 0.6000" in lead
        assert rest == "The study." and "run_trial_0" not in note  # one winner paragraph, the study's kept
    assert "viewStateShareKey=best-trials" in client.get_experiment(exp).tags["mlflow.note.content"]
    assert "**Winner of the study**" in runs[rows[1].run_id].data.tags["mlflow.note.content"]


def test_a_crowned_runs_replayed_epochs_carry_no_test_metrics(tmp_path):
    """--resume replays a finished trial's epochs from MLflow (mlflow_runs.history): the winner's test metrics (step 0)
    are not an epoch, or Tune would get a report without the objective."""
    from mlflow.entities import Metric

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp, parent = mlflow_runs.setup_study(uri, "replay", {}, tmp_path)
    client = MlflowClient(uri)
    run = client.create_run(exp, tags={"mlflow.parentRunId": parent})
    client.log_batch(run.info.run_id, metrics=[Metric("val_macro_f1", v, 0, e) for e, v in ((1, 0.2), (2, 0.3))])
    row = TrialRow(run.info.run_id, "run_trial_0", "FINISHED", "scratch", "deep_cnn", {}, 0.3, 2, 2, False, 1.0)
    winner.crown(client, exp, parent, row, {"test_macro_f1": 0.25}, log_model=False)
    assert mlflow_runs.history(client, client.get_run(run.info.run_id)) == [
        {"val_macro_f1": 0.2},
        {"val_macro_f1": 0.3},
    ]
