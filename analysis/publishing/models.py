"""A trial's checkpoint as an MLflow model: logged under its run, registered as a version, given an alias.

The logged model is a pyfunc (analysis.serving.ImageClassifier wrapping the checkpoint, or several averaged: an
ensemble) that `mlflow models serve` answers. Promotion moves an alias: the version that was `champion` becomes
`previous`, so a bad new champion is one `set_registered_model_alias` away from being rolled back, and
`models:/<name>@champion` always serves the latest one (mlflow models serve, analysis.predict).
"""

from __future__ import annotations

import logging
import tempfile
from contextlib import contextmanager
from numbers import Real
from pathlib import Path
from typing import Sequence

import mlflow
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.tracking import MlflowClient
from mlflow.utils.logging_utils import MLFLOW_LOGGING_STREAM

from analysis.reading.mlflow_env import using_tracking_uri
from analysis.serving import DEFAULT_K, MODEL_NAME, SIGNATURE, ImageClassifier, code_paths, example_image, requirements
from trainables import checkpoint
from trainables.tracking import artifacts

CHAMPION, PREVIOUS = "champion", "previous"  # registered model aliases


def model_name(experiment: str) -> str:
    """The registered model of a study's experiment (every study of it registers versions of the same model)."""
    return f"{experiment}-classifier"


@contextmanager
def quiet_mlflow():
    """MLflow's INFO lines, warnings and eprint()s while it logs a model (signature checks, cloudpickle advice,
    "Created version '1' ..."): noise here."""
    logger = logging.getLogger("mlflow")
    level, enabled = logger.level, MLFLOW_LOGGING_STREAM.enabled
    logger.setLevel(logging.ERROR)
    MLFLOW_LOGGING_STREAM.enabled = False
    try:
        yield
    finally:
        logger.setLevel(level)
        MLFLOW_LOGGING_STREAM.enabled = enabled


def log_model(
    client: MlflowClient,
    run_id: str | Sequence[str],
    owner_run_id: str | None = None,
    registered_model_name: str | None = None,
):
    """Log the checkpoint of trial run `run_id` as a pyfunc MLflow logged model (under that run, or under
    `owner_run_id`), optionally registered as a new version of `registered_model_name`. Several run ids: one
    model averaging their softmax outputs (an ensemble; owner_run_id required). Existing runs are not
    reopened or ended. Returns (mlflow ModelInfo, the checkpoint's Classifier or the Ensemble)."""
    run_ids = [run_id] if isinstance(run_id, str) else list(run_id)
    uri = client.tracking_uri
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpts = {}
        for i, rid in enumerate(run_ids):
            try:
                ckpts[rid] = client.download_artifacts(rid, artifacts.ARTIFACT, str(tmp / str(i)))
            except (OSError, MlflowException) as e:
                raise LookupError(f"run {rid} has no {artifacts.ARTIFACT} to log as a model ({e})") from None
        members = [checkpoint.load(c) for c in ckpts.values()]
        clf = members[0] if len(members) == 1 else checkpoint.Ensemble(members)
        (tmp / "code").mkdir()
        owner = owner_run_id or run_ids[0]
        single = len(run_ids) == 1
        # Model.log is what mlflow.pyfunc.log_model calls; it takes run_id, whereas pyfunc.log_model logs to the
        # active run, and start_run(run_id=...) would reopen the finished trial and rewrite its end time.
        # The LoggedModel is created here because Model.log would put it in the active (else Default)
        # experiment, not the run's.
        logged = client.create_logged_model(
            client.get_run(owner).info.experiment_id,
            MODEL_NAME,
            owner,
            params=(client.get_run(run_ids[0]).data.params if single else {"members": ",".join(run_ids)}),
        )
        with using_tracking_uri(uri):
            info = Model.log(
                artifact_path=None,
                name=MODEL_NAME,
                flavor=mlflow.pyfunc,
                run_id=owner,
                model_id=logged.model_id,
                python_model=ImageClassifier(),
                code_paths=code_paths(tmp / "code"),
                artifacts={"checkpoint": ckpts[run_ids[0]]}
                if single
                else {f"checkpoint_{i}": ckpts[rid] for i, rid in enumerate(run_ids)},
                signature=SIGNATURE,
                input_example=(pd.DataFrame({"image": [example_image()]}), {"k": DEFAULT_K}),
                pip_requirements=requirements(),  # explicit: inferring them loads the model in a subprocess
                metadata={
                    "classes": clf.classes,
                    "resize_policy": members[0].resize_policy,
                    "image_size": max(m.image_size for m in members),
                    "trial_run_id": ",".join(run_ids),
                    "checkpoint_epoch": ",".join(str(m.epoch) for m in members),
                },
                registered_model_name=registered_model_name,
            )
    return info, clf


def register(
    client_or_uri: MlflowClient | str, run_id: str, model_name: str, parent_run_id: str | None = None
) -> ModelVersion:
    """Log the checkpoint of trial run `run_id` as a pyfunc model (under that run, or under `parent_run_id`)
    and register it as a new version of `model_name`. Existing runs are not reopened or ended."""
    client = MlflowClient(client_or_uri) if isinstance(client_or_uri, str) else client_or_uri
    info, clf = log_model(client, run_id, parent_run_id, registered_model_name=model_name)
    version = str(info.registered_model_version)
    tags = {
        "trial_run_id": run_id,
        "family": clf.trial_config.family.name,
        "arch": clf.trial_config.arch,
        "checkpoint_epoch": str(clf.epoch),
        **{k: f"{float(v):.4f}" for k, v in clf.metrics.items() if k.startswith("val_") and isinstance(v, Real)},
    }
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, value)
    return client.get_model_version(model_name, version)


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


def register_ensemble(client: MlflowClient, run_ids: list[str], parent_run_id: str, name: str, tags: dict) -> str:
    """Log the runs' checkpoints as one averaged pyfunc model under the parent run, register it as a new version
    of `name` and tag that version; returns the version."""
    with quiet_mlflow():
        info, _ = log_model(client, run_ids, parent_run_id, registered_model_name=name)
    version = str(info.registered_model_version)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    return version
