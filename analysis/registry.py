"""A study's winner as a registered MLflow model that `mlflow models serve` answers.

python -m analysis.registry --experiment NAME [--mlflow-uri sqlite:///mlflow.db] [--name MODEL_NAME] [--trial RUN_ID]
                           [--alias champion]

Registers the winner of the latest study (or --trial: any run, a confirmation run too) and prints the serve
command and a curl example. The served model itself (analysis.serving.ImageClassifier, a pyfunc wrapping the
trial's checkpoint) and its request / response format are described in analysis/serving.py;
analysis.scoring_server runs it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
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

from analysis.serving import DEFAULT_K, MODEL_NAME, SIGNATURE, ImageClassifier, code_paths, example_image, requirements


@contextmanager
def using_tracking_uri(uri: str):
    """MLflow's fluent API (Model.log, pyfunc.load_model("models:/...")) reads the global tracking URI, and
    the registry URI follows it unless MLFLOW_REGISTRY_URI is set: point it at `uri` for this block only,
    so callers in the same process (tests, notebooks) keep theirs, MLFLOW_TRACKING_URI included."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    env = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with _use_tracking_uri(uri):
            yield
    finally:
        if env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = env


@contextmanager
def quiet_mlflow():
    """MLflow's INFO lines and warnings while it logs a model (signature checks, cloudpickle advice): noise here."""
    from mlflow.utils.logging_utils import MLFLOW_LOGGING_STREAM  # its eprint()s too ("Created version '1' ...")

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
    from trainables import checkpoint

    run_ids = [run_id] if isinstance(run_id, str) else list(run_id)
    uri = client.tracking_uri
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpts = {}
        for i, rid in enumerate(run_ids):
            try:
                ckpts[rid] = client.download_artifacts(rid, checkpoint.ARTIFACT, str(tmp / str(i)))
            except (OSError, MlflowException) as e:
                raise LookupError(f"run {rid} has no {checkpoint.ARTIFACT} to log as a model ({e})") from None
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", required=True, help="MLflow experiment of the study (tune.py --experiment)")
    p.add_argument("--mlflow-uri", default="sqlite:///mlflow.db", help="tracking URI (default: %(default)s)")
    p.add_argument("--name", help="registered model name (default: <experiment>-classifier)")
    p.add_argument(
        "--trial",
        metavar="RUN_ID",
        help="register this run (any trial, confirmation or final run) instead "
        "of the study's winner (with confirmation: the best run of the best configuration by mean)",
    )
    p.add_argument(
        "--alias",
        help="also point this alias at the new version; `champion` moves the old champion to "
        "`previous` (analysis.champion)",
    )
    a = p.parse_args(argv)
    from analysis.champion import PREVIOUS, model_name, promote
    from analysis.confirm import best_run  # here: the served model never needs them
    from analysis.runs import latest_study, trial_rows
    from trainables.tracking.mlflow_runs import check_reachable

    name = a.name or model_name(a.experiment)
    try:
        check_reachable(a.mlflow_uri, must_exist=True)  # before MlflowClient, which creates a missing SQLite file
        client = MlflowClient(a.mlflow_uri)
        run_id = a.trial
        if not run_id:
            exp, study = latest_study(client, a.experiment)
            best = best_run(trial_rows(client, exp.experiment_id, study.info.run_id))
            if best is None:
                raise LookupError(f"no trial of study {study.info.run_id} reported a result")
            run_id = best.run_id
        mv = register(client, run_id, name)
        moved = promote(client, name, mv.version, a.alias) if a.alias else None
    except (LookupError, OSError, MlflowException) as e:  # no store / study / run / checkpoint: one line, exit 2
        p.exit(2, f"analysis.registry: error: {e}\n")
    t = mv.tags
    print(
        f"registered models:/{mv.name}/{mv.version}: trial {client.get_run(run_id).info.run_name} "
        f"({t['family']}/{t['arch']}, val_macro_f1 {t.get('val_macro_f1', '?')} at epoch {t['checkpoint_epoch']}), "
        f"logged model {mv.source}"
    )
    if a.alias:
        print(f"alias {a.alias} -> version {mv.version}" + (f"; version {moved} is now `{PREVIOUS}`" if moved else ""))
    print("serve it:")
    print(
        f"  MLFLOW_TRACKING_URI={a.mlflow_uri} mlflow models serve -m models:/{mv.name}/{mv.version} "
        f"--env-manager local -p 5001"
    )
    print("ask it (top 3 of one image; any size, the body goes through stdin):")
    print(
        '  (printf \'{"dataframe_split": {"columns": ["image"], "data": [["\'; base64 < painting.jpg | '
        'tr -d \'\\n\'; printf \'"]]}, "params": {"k": 3}}\') | curl -s http://127.0.0.1:5001/invocations '
        "-H 'Content-Type: application/json' --data-binary @-"
    )
    print(
        f"or locally:  python -m analysis.predict painting.jpg --model models:/{mv.name}/{mv.version} "
        f"--mlflow-uri {a.mlflow_uri}"
    )
    return 0


if __name__ == "__main__":
    # ImageClassifier comes from analysis.serving, so cloudpickle stores it by reference to that module
    # (what the model's code/ folder provides) even when this file runs as __main__.
    sys.exit(main())
