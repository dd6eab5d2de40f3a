"""The final fit, scored on the test split and registered as the model name's `champion`.

tune.py --final-fit does this when the study ends; analysis.registry --alias champion does the promotion for any
run. Promotion moves the alias: the version that was `champion` becomes `previous`, so a bad new champion is
one `set_registered_model_alias` away from being rolled back, and `models:/<name>@champion` always serves the
latest one (mlflow models serve, analysis.predict).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from analysis.runs import TrialRow
from trainables.trial.rerun import SOURCE_NAME_TAG, SOURCE_TAG, TRAINED_ON_TAG

CHAMPION, PREVIOUS = "champion", "previous"  # registered model aliases


def model_name(experiment: str) -> str:
    """The registered model of a study's experiment (every study of it registers versions of the same model)."""
    return f"{experiment}-classifier"


def promote(client: MlflowClient, name: str, version: str, alias: str = CHAMPION) -> str | None:
    """Point `alias` at `version`; the version it pointed at before (if another) gets PREVIOUS when the alias is
    CHAMPION. Returns that previous version."""
    try:
        before = client.get_model_version_by_alias(name, alias).version
    except MlflowException:  # RESOURCE_DOES_NOT_EXIST: no version has the alias yet
        before = None
    if alias == CHAMPION and before is not None and str(before) != str(version):
        client.set_registered_model_alias(name, PREVIOUS, before)
    client.set_registered_model_alias(name, alias, version)
    return before if before is not None and str(before) != str(version) else None


def crown_final(
    client: MlflowClient,
    parent_run_id: str,
    final: TrialRow,
    experiment: str,
    out: Path | None = None,
    show_progress: bool = True,
) -> tuple[ModelVersion, dict, str | None]:
    """Score the final fit's model on the test split (analysis.evaluate's report, logged to its run under
    evaluation/), register it as a new version of model_name(experiment) and make it the champion.
    Returns (the version, its test metrics, the version that was champion before). DataError when the study's
    images are not on this machine."""
    from analysis.evaluate import ARTIFACT_DIR, evaluate, load_trial, test_metrics
    from analysis.registry import register

    with tempfile.TemporaryDirectory() as tmp:
        clf, splits = load_trial(client, final, parent_run_id, Path(tmp))
        folder = (out or Path(tmp)) / final.name
        ev = evaluate(clf, splits, folder, final.name, final.run_id, show_progress=show_progress)
        client.log_artifacts(final.run_id, str(folder), ARTIFACT_DIR)
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
