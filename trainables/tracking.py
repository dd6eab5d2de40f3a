"""MLflow: one parent run per study, one child run per trial (ASHA-stopped trials included).

Who writes what:
  the study (sweep.study)  parent run (params, dataset/, study/settings.json, study/space.json); the
                           sweep.callbacks.CloseTrialRuns callback ends every child run when its trial ends
  trial driver             creates the child run with params and tags before any worker starts
  worker rank 0            per-epoch metrics and the best checkpoint of its child run
Params of a child run: exactly its searched values under their study names. Tags: family, arch, trial_id,
stopped_early, epochs_reached. Nothing stays RUNNING.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Mapping

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

STUDY_TAG = "artsweep.study"          # "1" on the parent run
SPLIT_MANIFEST = "dataset/splits.csv"  # artifact of the parent run: the split every trial reads
TRIAL_ID_TAG = "trial_id"

# Fail fast on an unreachable server instead of retrying for minutes.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per download floods logs


def default_uri(workdir: Path) -> str:
    return f"sqlite:///{(workdir / 'mlflow.db').resolve()}"


def is_local_uri(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:", "/")) or "://" not in uri


def check_reachable(uri: str, must_exist: bool = False) -> None:
    """Raise ConnectionError with what to do when the tracking store cannot be used. `must_exist`: a
    SQLite file that is not there is an error (reading a study), not a new empty store (starting one)."""
    if must_exist and uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        raise ConnectionError(f"no MLflow store at {uri}; run this where tune.py ran (it writes ./mlflow.db) "
                              "or pass the study's --mlflow-uri")
    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as e:  # mlflow raises several types for bad URIs and dead servers
        raise ConnectionError(
            f"cannot reach MLflow tracking store {uri!r} ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
            "start the server (`mlflow server --host 127.0.0.1 --port 5000`) or pass a reachable --mlflow-uri"
        ) from None


def setup_study(uri: str, experiment: str, params: Mapping, artifact_root: Path | None) -> tuple[str, str]:
    """(experiment_id, parent_run_id). A local store keeps artifacts under `artifact_root`."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        location = artifact_root.resolve().as_uri() + f"/{experiment}" if artifact_root and is_local_uri(uri) else None
        exp_id = client.create_experiment(experiment, artifact_location=location)
    else:
        exp_id = exp.experiment_id
    run = client.create_run(exp_id, run_name=f"study-{time.strftime('%Y%m%d-%H%M%S')}", tags={STUDY_TAG: "1"})
    client.log_batch(run.info.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
    return exp_id, run.info.run_id


def log_dataset(uri: str, parent_run_id: str, manifest: Path, report: dict, plots) -> None:
    """The split manifest every trial reads, the dataset report (skipped files included) and its plots."""
    client = MlflowClient(uri)
    for path in (manifest, *plots):
        client.log_artifact(parent_run_id, str(path), artifact_path="dataset")
    client.log_dict(parent_run_id, report, "dataset/report.json")


SETTINGS = "study/settings.json"   # artifact of the parent run: the RunSettings --resume rebuilds
SPACE = "study/space.json"         # artifact of the parent run: the searched distributions (Optuna JSON), fixed values


def log_study(uri: str, parent_run_id: str, settings: Mapping, space: Mapping) -> None:
    client = MlflowClient(uri)
    client.log_dict(parent_run_id, dict(settings), SETTINGS)
    client.log_dict(parent_run_id, dict(space), SPACE)


def read_artifact_json(client: MlflowClient, run_id: str, path: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        with open(client.download_artifacts(run_id, path, tmp)) as f:
            return json.load(f)


def latest_study(client: MlflowClient, experiment: str):
    """(experiment, parent run) of the newest study in `experiment`; LookupError naming what is missing."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise LookupError(f"no MLflow experiment named {experiment!r}")
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`{STUDY_TAG}` = '1'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise LookupError(f"experiment {experiment!r} holds no artsweep study")
    return exp, runs[0]


def read_settings(uri: str, experiment: str) -> dict:
    """RunSettings fields of the latest study in `experiment`; LookupError when there is none."""
    client = MlflowClient(uri)
    _, parent = latest_study(client, experiment)
    return read_artifact_json(client, parent.info.run_id, SETTINGS)


def reopen_study(uri: str, parent_run_id: str) -> None:
    """A resumed study writes into its old parent run again."""
    MlflowClient(uri).update_run(parent_run_id, status="RUNNING")


def open_trial_run(uri: str, experiment_id: str, parent_run_id: str, trial_id: str, trial_name: str,
                   params: Mapping, tags: Mapping) -> str:
    """The trial's child run: its searched params under their study names; tags (family, arch) for filtering."""
    client = MlflowClient(uri)
    run = client.create_run(experiment_id, tags={
        MLFLOW_PARENT_RUN_ID: parent_run_id, MLFLOW_RUN_NAME: trial_name, TRIAL_ID_TAG: trial_id,
        **{k: str(v) for k, v in tags.items()}})
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
    return run.info.run_id


class EpochLogger:
    """Rank 0's view of its child run: per-epoch metrics and the best checkpoint."""

    def __init__(self, uri: str, run_id: str):
        self.client, self.run_id = MlflowClient(uri), run_id

    def log_epoch(self, values: Mapping[str, float], epoch: int) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[
            Metric(k, float(v), now, epoch) for k, v in values.items() if isinstance(v, (int, float))])

    def fetch(self, run_id: str, artifact: str, folder: str) -> str:
        """Download an artifact (e.g. the parent run's split manifest) into `folder`; returns its path."""
        return self.client.download_artifacts(run_id, artifact, folder)

    def tag(self, tags: Mapping[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_checkpoint(self, path: Path, epoch: int) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path="checkpoint")
        self.client.set_tag(self.run_id, "best_epoch", str(epoch))


def find_trial_run(client: MlflowClient, experiment_id: str, parent_run_id: str, trial_id: str):
    """The trial's newest child run: a trial restarted by --resume has a KILLED run from before the stop."""
    runs = client.search_runs([experiment_id], filter_string=(
        f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}' and tags.{TRIAL_ID_TAG} = '{trial_id}'"),
        order_by=["attributes.start_time DESC"])
    return runs[0] if runs else None


def close_trial_run(uri: str, experiment_id: str, parent_run_id: str, trial_id: str, *, status: str,
                    epochs_reached: int, stopped_early: bool, error: str | None = None) -> None:
    """End a trial's child run (status FINISHED / FAILED / KILLED) and tag how it ended."""
    client = MlflowClient(uri)
    run = find_trial_run(client, experiment_id, parent_run_id, trial_id)
    if run is None:
        return
    tags = [RunTag("stopped_early", str(stopped_early).lower()), RunTag("epochs_reached", str(epochs_reached))]
    if error:
        tags.append(RunTag("error", error[:4000]))
    client.log_batch(run.info.run_id, tags=tags)
    client.set_terminated(run.info.run_id, status=status)


def close_study(uri: str, experiment_id: str, parent_run_id: str, status: str) -> list[str]:
    """End the parent run and any child run still RUNNING (as KILLED). Returns the ids it had to kill."""
    client = MlflowClient(uri)
    left = client.search_runs([experiment_id], filter_string=(
        f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}' and attributes.status = 'RUNNING'"))
    for r in left:
        client.set_terminated(r.info.run_id, status="KILLED")
    client.set_terminated(parent_run_id, status=status)
    return [r.info.run_id for r in left]
