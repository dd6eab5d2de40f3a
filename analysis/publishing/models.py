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
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpts = {rid: download_checkpoint(client, rid, tmp / str(i)) for i, rid in enumerate(run_ids)}
        members = [checkpoint.load(c) for c in ckpts.values()]
        clf = members[0] if len(members) == 1 else checkpoint.Ensemble(members)
        single = len(run_ids) == 1
        info = log_pyfunc(
            client,
            owner_run_id or run_ids[0],
            MODEL_NAME,
            client.get_run(run_ids[0]).data.params if single else {"members": ",".join(run_ids)},
            {"checkpoint": ckpts[run_ids[0]]}
            if single
            else {f"checkpoint_{i}": ckpts[rid] for i, rid in enumerate(run_ids)},
            {
                "classes": clf.classes,
                "resize_policy": members[0].resize_policy,
                "image_size": max(m.image_size for m in members),
                "trial_run_id": ",".join(run_ids),
                "checkpoint_epoch": ",".join(str(m.epoch) for m in members),
            },
            registered_model_name,
        )
    return info, clf


def download_checkpoint(client: MlflowClient, run_id: str, folder: Path) -> str:
    """The local path of trial run `run_id`'s best checkpoint (artifacts.ARTIFACT), downloaded into `folder`;
    LookupError when the run has none."""
    try:
        return client.download_artifacts(run_id, artifacts.ARTIFACT, str(folder))
    except (OSError, MlflowException) as e:
        raise LookupError(f"run {run_id} has no {artifacts.ARTIFACT} to log as a model ({e})") from None


def log_pyfunc(
    client: MlflowClient,
    owner: str,
    name: str,
    params: dict,
    model_artifacts: dict,
    metadata: dict,
    registered_model_name: str | None,
    flavor=mlflow.pyfunc,
    onnx: bool = False,
):
    """Log analysis.serving.ImageClassifier over `model_artifacts` (its checkpoint(s), or an ONNX export) as a
    logged model `name` of run `owner`, with the served code, signature, example and requirements (onnx: an
    export's); optionally registered. `flavor`: mlflow.pyfunc, or a module-like object whose save_model calls
    it and adds a flavour. Returns mlflow's ModelInfo."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "code").mkdir()
        # Model.log is what mlflow.pyfunc.log_model calls; it takes run_id, whereas pyfunc.log_model logs to the
        # active run, and start_run(run_id=...) would reopen the finished trial and rewrite its end time.
        # The LoggedModel is created here because Model.log would put it in the active (else Default)
        # experiment, not the run's.
        logged = client.create_logged_model(client.get_run(owner).info.experiment_id, name, owner, params=params)
        with using_tracking_uri(client.tracking_uri):
            return Model.log(
                artifact_path=None,
                name=name,
                flavor=flavor,
                run_id=owner,
                model_id=logged.model_id,
                python_model=ImageClassifier(),
                code_paths=code_paths(Path(tmp) / "code"),
                artifacts=model_artifacts,
                signature=SIGNATURE,
                input_example=(pd.DataFrame({"image": [example_image()]}), {"k": DEFAULT_K}),
                pip_requirements=requirements(onnx),  # explicit: inferring them loads the model in a subprocess
                metadata=metadata,
                registered_model_name=registered_model_name,
            )


def register(
    client_or_uri: MlflowClient | str, run_id: str, model_name: str, parent_run_id: str | None = None
) -> ModelVersion:
    """Log the checkpoint of trial run `run_id` as a pyfunc model (under that run, or under `parent_run_id`)
    and register it as a new version of `model_name`. Existing runs are not reopened or ended."""
    client = MlflowClient(client_or_uri) if isinstance(client_or_uri, str) else client_or_uri
    info, clf = log_model(client, run_id, parent_run_id, registered_model_name=model_name)
    return tag_version(client, model_name, str(info.registered_model_version), version_tags(run_id, clf, "pytorch"))


def version_tags(run_id: str, clf: checkpoint.Classifier, fmt: str) -> dict[str, str]:
    """A registered version's tags: the trial it came from, its family / arch, epoch and validation metrics, and
    its format (`pytorch`: the checkpoint; `onnx`: its export)."""
    return {
        "format": fmt,
        "trial_run_id": run_id,
        "family": clf.trial_config.family.name,
        "arch": clf.trial_config.arch,
        "checkpoint_epoch": str(clf.epoch),
        **{k: f"{float(v):.4f}" for k, v in clf.metrics.items() if k.startswith("val_") and isinstance(v, Real)},
    }


def tag_version(client: MlflowClient, name: str, version: str, tags: dict) -> ModelVersion:
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))
    return client.get_model_version(name, version)


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
    return tag_version(client, name, str(info.registered_model_version), tags).version


def registered_report(uri: str, mv: ModelVersion, run_name: str, alias: str | None, moved: str | None) -> str:
    """What analysis.registry and analysis.export print once a version is registered: the version and its trial,
    the alias moved (`moved`: the version that became PREVIOUS), how to serve and ask it."""
    t = mv.tags
    lines = [
        f"registered models:/{mv.name}/{mv.version} (format={t.get('format', '?')}): trial {run_name} "
        f"({t['family']}/{t['arch']}, val_macro_f1 {t.get('val_macro_f1', '?')} at epoch {t['checkpoint_epoch']}), "
        f"logged model {mv.source}"
    ]
    if alias:
        lines.append(
            f"alias {alias} -> version {mv.version}" + (f"; version {moved} is now `{PREVIOUS}`" if moved else "")
        )
    return "\n".join([*lines, serve_instructions(uri, mv)])


def serve_instructions(uri: str, mv: ModelVersion) -> str:
    """How to serve a registered version and ask it (the lines analysis.registry and analysis.export print)."""
    model = f"models:/{mv.name}/{mv.version}"
    return "\n".join(
        [
            "serve it:",
            f"  MLFLOW_TRACKING_URI={uri} mlflow models serve -m {model} --env-manager local -p 5001",
            "ask it (top 3 of one image; any size, the body goes through stdin):",
            '  (printf \'{"dataframe_split": {"columns": ["image"], "data": [["\'; base64 < painting.jpg | '
            'tr -d \'\\n\'; printf \'"]]}, "params": {"k": 3}}\') | curl -s http://127.0.0.1:5001/invocations '
            "-H 'Content-Type: application/json' --data-binary @-",
            f"or locally:  python -m analysis.predict painting.jpg --model {model} --mlflow-uri {uri}",
        ]
    )
