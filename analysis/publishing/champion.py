"""The final fit, scored on the test split and registered as the model name's `champion`.

A study with --final-fit does this in its closing steps (analysis.publishing.closing); analysis.registry
--alias champion does the promotion for any run (analysis.publishing.models.promote: the old champion becomes
`previous`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from analysis.publishing.artifacts import EVALUATION
from analysis.publishing.models import model_name, promote, register
from analysis.reading.evaluation import evaluate, load_trial, test_metrics
from analysis.reading.runs import TrialRow
from trainables.trial.rerun import SOURCE_NAME_TAG, SOURCE_TAG, TRAINED_ON_TAG


def crown_final(
    client: MlflowClient,
    parent_run_id: str,
    final: TrialRow,
    experiment: str,
    out: Path | None = None,
    show_progress: bool = True,
) -> tuple[ModelVersion, dict, str | None]:
    """Score the final fit's model on the test split (the evaluation's report, logged to its run under
    evaluation/), register it as a new version of model_name(experiment) and make it the champion.
    Returns (the version, its test metrics, the version that was champion before). DataError when the study's
    images are not on this machine."""
    with tempfile.TemporaryDirectory() as tmp:
        clf, splits = load_trial(client, final, parent_run_id, Path(tmp))
        folder = (out or Path(tmp)) / final.name
        ev = evaluate(clf, splits, folder, final.name, final.run_id, show_progress=show_progress)
        client.log_artifacts(final.run_id, str(folder), EVALUATION)
    values = test_metrics(ev)
    for k, v in values.items():
        client.log_metric(final.run_id, k, float(v), step=0)
    tags = client.get_run(final.run_id).data.tags
    mv = register(client, final.run_id, model_name(experiment))
    for key in (TRAINED_ON_TAG, SOURCE_TAG, SOURCE_NAME_TAG):
        client.set_model_version_tag(mv.name, mv.version, key, tags.get(key, ""))
    client.set_model_version_tag(mv.name, mv.version, "epochs", tags.get("epochs_reached", "?"))
    for k in ("test_macro_f1", "test_accuracy"):
        client.set_model_version_tag(mv.name, mv.version, k, f"{values[k]:.4f}")
    previous = promote(client, mv.name, mv.version)
    return client.get_model_version(mv.name, mv.version), values, previous
