"""The study's winner, marked where people look for it in the MLflow UI.

The study's closing steps (analysis.publishing.closing) crown its best run when it ends; analysis.evaluate
crowns it again with its bootstrap intervals. Crowning:
  - tags the winning trial run `winner=true` (and no other run of the study), with a description saying so,
  - logs its test-split metrics on it (test_macro_f1, ...; the test split is never used for selection),
  - logs its best checkpoint as an MLflow logged model of that run (the UI's Models tab, with the test metrics
    linked to it), once: a model already logged from that run is reused,
  - tags the parent run `winner_run_id` and writes its description: links to the winning run and its model,
  - puts the same links first in the experiment's description (the UI shows its first paragraph above the runs
    table: one click from the table to the winner), with a link to all trials, best first.
"""

from __future__ import annotations

import time
from typing import Mapping

from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from analysis.publishing import models
from analysis.reading.runs import TrialRow
from trainables.metrics import OBJECTIVE_KEY
from trainables.tracking.mlflow_runs import NOTE_TAG
from trainables.tracking.mlflow_ui import runs_page

WINNER_TAG = "winner"  # "true" on exactly one trial run of a study
WINNER_RUN_TAG = "winner_run_id"  # on the parent run: the winning trial run's id
LEAD = "**Winner:** "  # how the winner's paragraph of a description starts
HEADLINE = ("test_macro_f1", "test_accuracy")  # the test metrics a description quotes


def run_link(experiment_id: str, run_id: str, text: str) -> str:
    """A markdown link the MLflow UI's descriptions open in place (its pages live under #/)."""
    return f"[{text}](#/experiments/{experiment_id}/runs/{run_id})"


def model_link(experiment_id: str, model_id: str, text: str) -> str:
    return f"[{text}](#/experiments/{experiment_id}/models/{model_id})"


def logged_model_id(client: MlflowClient, experiment_id: str, run_id: str) -> str | None:
    """The logged model already made from this run's checkpoint, if any (crowning twice logs it once)."""
    found = client.search_logged_models([experiment_id], filter_string=f"source_run_id = '{run_id}'", max_results=1)
    return found[0].model_id if found else None


def crown(
    client: MlflowClient,
    experiment_id: str,
    parent_run_id: str,
    row: TrialRow,
    test: Mapping[str, float],
    dataset: Mapping | None = None,
    log_model: bool = True,
) -> str | None:
    """Mark `row` as the study's winner (see the module docstring); `test`: its test metrics; `dataset`: the
    study's split (mlflow_ui.dataset_input), which the test metrics are linked to. Returns the logged model's id."""
    others = client.search_runs(
        [experiment_id],
        filter_string=(f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}' and tags.`{WINNER_TAG}` = 'true'"),
    )
    for r in others:
        if r.info.run_id != row.run_id:  # a resumed study, or an earlier crowning, that chose another run
            client.delete_tag(r.info.run_id, WINNER_TAG)
    model_id = logged_model_id(client, experiment_id, row.run_id)
    if model_id is None and log_model:
        model_id = models.log_model(client, row.run_id)[0].model_id
    now = int(time.time() * 1000)
    link = {"dataset_name": dataset["name"], "dataset_digest": dataset["digest"]} if dataset else {}
    client.log_batch(
        row.run_id, metrics=[Metric(k, float(v), now, 0, model_id=model_id, **link) for k, v in test.items()]
    )
    quoted = ", ".join(f"{k} {test[k]:.4f}" for k in HEADLINE if k in test)
    model = f" Model: {model_link(experiment_id, model_id, 'logged model')}." if model_id else ""
    why = (
        " (the best seed of the configuration with the best mean over its confirmation runs: "
        "`python -m analysis.leaderboard` shows them)"
        if row.phase == "confirm"
        else ""
    )
    client.log_batch(
        row.run_id,
        tags=[
            RunTag(WINNER_TAG, "true"),
            RunTag(
                NOTE_TAG,
                (
                    f"**Winner of the study** ({row.family} / {row.arch}){why}: best {OBJECTIVE_KEY} {row.best:.4f} at epoch "
                    f"{row.best_epoch} of {row.epochs}{'; ' + quoted if quoted else ''}.{model}"
                ),
            ),
        ],
    )
    lead = (
        f"{LEAD}{run_link(experiment_id, row.run_id, row.name)} ({row.family} / {row.arch}), best "
        f"{OBJECTIVE_KEY} {row.best:.4f} at epoch {row.best_epoch}{'; ' + quoted if quoted else ''}.{model}"
    )
    parent_note = client.get_run(parent_run_id).data.tags.get(NOTE_TAG, "")
    client.log_batch(
        parent_run_id, tags=[RunTag(WINNER_RUN_TAG, row.run_id), RunTag(NOTE_TAG, first(lead, parent_note))]
    )
    client.set_experiment_tag(
        experiment_id,
        NOTE_TAG,
        first(
            f"{lead} [All trials, best first]({runs_page(experiment_id)})",
            client.get_experiment(experiment_id).tags.get(NOTE_TAG, ""),
        ),
    )
    return model_id


def first(lead: str, description: str) -> str:
    """`description` with `lead` as its first paragraph, in place of an earlier winner's (the UI shows a
    description's first paragraph above the runs table)."""
    if description.startswith(LEAD):
        description = description.split("\n\n", 1)[1] if "\n\n" in description else ""
    return f"{lead}\n\n{description}" if description else lead
