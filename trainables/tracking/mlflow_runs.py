"""MLflow: one parent run per study, one child run per trial (ASHA-stopped trials included).

Who writes what:
  the study (sweep.study)  parent run (params, dataset/, study/settings.json, study/space.json); the
                           sweep.callbacks.CloseTrialRuns callback ends every child run when its trial ends
  trial driver             creates the child run with params and tags before any worker starts
  Train's controller       per-epoch metrics, tags and the best checkpoint of the child run, as it takes each
                           report (trainables.tracking.recorder, through an outbox that outlasts a server outage)
Params of a child run: its searched values under their study names, and family and arch (what it trains) where
the study fixed them. Tags: trial_id, stopped_early, epochs_reached, best_epoch, a description
(mlflow.note.content), and winner=true on the study's winner (analysis.publishing.winner). Metrics: per epoch (step = epoch;
the scheduled LR is `scheduled_lr`, the searched peak the param `lr`), system/... (MLflow's monitors) and the
winner's test_*. Input: the study's split as an MLflow dataset. Nothing stays RUNNING.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Mapping, Sequence

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from trainables.metrics import OBJECTIVE_KEY
from trainables.paths import sqlite_file
from trainables.tracking import (
    credentials,
    mlflow_ui,
    outbox,  # noqa: F401  (sets MLflow's HTTP retry policy for this process)
)
from trainables.tracking.retry import retrying

log = logging.getLogger("artsweep")
# a new SQLite store announces its schema set-up at INFO ("Creating initial MLflow database tables..."): noise
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)

STUDY_TAG = "artsweep.study"  # "1" on the parent run
SPLIT_MANIFEST = "dataset/splits.csv"  # artifact of the parent run: the split every trial reads
TRIAL_ID_TAG = "trial_id"
SUPERSEDED_TAG = "superseded"  # "true" on a child run replaced by a newer run of the same trial
DRIVER_TAGS = ("driver_host", "driver_pid")  # on the parent run: which process runs the study now
HEARTBEAT_TAG = "heartbeat"  # on the parent run: unix time of the driver's last sign of life
PHASE_TAG = "phase"  # on a trial run: recipe (a family's published recipe, tried first), search,
# confirm or final (trainables.trial.rerun)
NOTE_TAG = "mlflow.note.content"  # a run's (or experiment's) description in the MLflow UI, markdown


def default_uri(workdir: Path) -> str:
    return f"sqlite:///{(workdir / 'mlflow.db').resolve()}"


def is_local_uri(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:", "/")) or "://" not in uri


def check_reachable(uri: str, must_exist: bool = False) -> None:
    """Raise ConnectionError with what to do when the tracking store cannot be used (credentials.CredentialsError
    for a URI that holds a password, or a server that refuses the credentials). `must_exist`: a SQLite file that
    is not there is an error (reading a study), not a new empty store (starting one)."""
    credentials.check_uri(uri)
    if must_exist and (db := sqlite_file(uri)) is not None and not db.exists():
        raise ConnectionError(
            f"no MLflow store at {uri}; run this where tune.py ran (it writes ./mlflow.db) "
            "or pass the study's --mlflow-uri"
        )
    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as e:  # mlflow raises several types for bad URIs and dead servers
        refused = credentials.refusal(uri, e)
        if refused:
            raise refused from None
        raise ConnectionError(
            f"cannot reach MLflow tracking store {uri!r} ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
            "start the server (`mlflow server --host 127.0.0.1 --port 5000`) or pass a reachable --mlflow-uri"
        ) from None


# What kind of experiment this is, for MLflow (3.17's UI opens the view its global GenAI / Model training switch
# names, so the links artsweep prints carry workflowType=machine_learning as well)
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def check_writable(uri: str, experiment: str) -> None:
    """On a tracking server, this user may write to `experiment`, where it exists: it sets the experiment's kind
    again, the first write a study makes (creating an experiment is open to every user a server takes). Raises
    credentials.CredentialsError (401/403) or ConnectionError. A local store has no users: nothing to check."""
    if is_local_uri(uri):
        return
    try:
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is not None:
            client.set_experiment_tag(exp.experiment_id, *next(iter(EXPERIMENT_KIND.items())))
    except Exception as e:  # as check_reachable
        raise credentials.refusal(uri, e, experiment) or ConnectionError(
            f"MLflow at {uri} did not take a write to experiment {experiment!r} "
            f"({type(e).__name__}: {str(e).splitlines()[0][:160]})"
        ) from None


def setup_study(
    uri: str,
    experiment: str,
    params: Mapping,
    artifact_root: Path | None,
    description: str = "",
    view_params: Sequence[str] = (),
) -> tuple[str, str]:
    """(experiment_id, parent_run_id). A local store keeps artifacts under `artifact_root`. The experiment is
    tagged as model training, carries `description` (the UI's description: the latest study's) and the saved
    view of its trials (runs_view, with `view_params` as param columns)."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        location = artifact_root.resolve().as_uri() + f"/{experiment}" if artifact_root and is_local_uri(uri) else None
        exp_id = client.create_experiment(experiment, artifact_location=location)
    else:
        exp_id = exp.experiment_id
    view = dict([mlflow_ui.runs_view(view_params)])
    for key, value in {**EXPERIMENT_KIND, **view, **({NOTE_TAG: description} if description else {})}.items():
        client.set_experiment_tag(exp_id, key, value)
    run = client.create_run(
        exp_id,
        run_name=f"study-{time.strftime('%Y%m%d-%H%M%S')}",
        tags={STUDY_TAG: "1", **({NOTE_TAG: description} if description else {})},
    )
    client.log_batch(run.info.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
    return exp_id, run.info.run_id


def log_dataset(uri: str, parent_run_id: str, manifest: Path, report: dict, plots) -> None:
    """The split manifest every trial reads (as SPLIT_MANIFEST), the dataset report (skipped files included) and
    its plots."""
    client = MlflowClient(uri)
    client.log_text(parent_run_id, manifest.read_text(encoding="utf-8"), SPLIT_MANIFEST)
    for path in plots:
        client.log_artifact(parent_run_id, str(path), artifact_path="dataset")
    client.log_dict(parent_run_id, report, "dataset/report.json")


SETTINGS = "study/settings.json"  # artifact of the parent run: the RunSettings --resume rebuilds
SPACE = "study/space.json"  # artifact of the parent run: the searched distributions (Optuna JSON), fixed values


def log_study(uri: str, parent_run_id: str, settings: Mapping, space: Mapping) -> None:
    client = MlflowClient(uri)
    client.log_dict(parent_run_id, dict(settings), SETTINGS)
    client.log_dict(parent_run_id, dict(space), SPACE)


def log_metrics(uri: str, run_id: str, values: Mapping[str, float]) -> None:
    """One batch of metrics now (e.g. the study's spend on its parent run)."""
    if values:
        now = int(time.time() * 1000)
        MlflowClient(uri).log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in values.items()])


def read_artifact_json(client: MlflowClient, run_id: str, path: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        with open(client.download_artifacts(run_id, path, tmp)) as f:
            return json.load(f)


def latest_study(client: MlflowClient, experiment: str):
    """(experiment, parent run) of the newest study in `experiment`; LookupError naming what is missing."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise LookupError(f"no MLflow experiment named {experiment!r}")
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{STUDY_TAG}` = '1'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise LookupError(f"experiment {experiment!r} holds no artsweep study")
    return exp, runs[0]


def read_settings(uri: str, experiment: str) -> dict:
    """RunSettings fields of the latest study in `experiment`; LookupError when there is none."""
    client = MlflowClient(uri)
    _, parent = latest_study(client, experiment)
    return read_artifact_json(client, parent.info.run_id, SETTINGS)


def reopen_study(uri: str, parent_run_id: str) -> None:
    """A resumed study writes into its old parent run again, as this process."""
    MlflowClient(uri).update_run(parent_run_id, status="RUNNING")
    claim_study(uri, parent_run_id)


def claim_study(uri: str, parent_run_id: str) -> None:
    """Record this process as the study's driver, with a first heartbeat."""
    MlflowClient(uri).log_batch(
        parent_run_id,
        tags=[
            RunTag(DRIVER_TAGS[0], socket.gethostname()),
            RunTag(DRIVER_TAGS[1], str(os.getpid())),
            RunTag(HEARTBEAT_TAG, str(int(time.time()))),
        ],
    )


def objective_histories(
    uri: str, experiment_id: str, parent_run_id: str, keys: Sequence[str] = (OBJECTIVE_KEY,)
) -> dict[str, list]:
    """{trial_id: objective per epoch} of every (non-superseded) trial run of a study: what ASHA's rungs held.
    With several `keys` (a Pareto search's objectives, MOASHA's rungs): a tuple of their values per epoch."""
    client = MlflowClient(uri)
    out = {}
    for run in client.search_runs(
        [experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'", max_results=10_000
    ):
        if (
            run.data.tags.get(SUPERSEDED_TAG) != "true"
            and TRIAL_ID_TAG in run.data.tags
            and run.data.tags.get(PHASE_TAG, "search") in ("recipe", "search")
        ):  # the search's rungs only
            hists = [sorted(client.get_metric_history(run.info.run_id, k), key=lambda m: m.step) for k in keys]
            if len(keys) == 1:
                out[run.data.tags[TRIAL_ID_TAG]] = [m.value for m in hists[0]]
            else:  # each epoch's values, as far as every key was logged
                out[run.data.tags[TRIAL_ID_TAG]] = [tuple(m.value for m in ms) for ms in zip(*hists)]
    return out


def live_driver(parent, stale_s: float = 180.0) -> str | None:
    """Why the study of this parent run is still being driven, or None when it is not (ended, or its driver
    died: a process gone on this machine, or no heartbeat for stale_s from another machine)."""
    if parent.info.status != "RUNNING":
        return None
    tags = parent.data.tags
    host, pid, beat = tags.get(DRIVER_TAGS[0]), tags.get(DRIVER_TAGS[1]), float(tags.get(HEARTBEAT_TAG, 0))
    if host == socket.gethostname() and pid:
        import psutil

        alive = psutil.pid_exists(int(pid)) and int(pid) != os.getpid()
        return f"its driver (pid {pid}) is running on this machine" if alive else None
    age = time.time() - beat
    return f"its driver on {host} beat {age:.0f} s ago" if age < stale_s else None


def open_trial_run(
    uri: str,
    experiment_id: str,
    parent_run_id: str,
    trial_id: str,
    trial_name: str,
    params: Mapping,
    tags: Mapping,
    dataset: Mapping | None = None,
) -> tuple[str, list[dict] | None]:
    """(run id, None) of the trial's child run, to train in; or (run id, its per-epoch metrics) when the trial
    already FINISHED before the study was restarted, which must not train again. One run per trial: a trial
    Tune starts again (a resumed study) continues its own run; an older duplicate is tagged superseded.
    Waits out a tracking server that is restarting (trainables.tracking.retry)."""
    return retrying(
        lambda: _trial_run(uri, experiment_id, parent_run_id, trial_id, trial_name, params, tags, dataset),
        f"opening the MLflow run of trial {trial_id}",
    )


def _trial_run(uri, experiment_id, parent_run_id, trial_id, trial_name, params, tags, dataset):
    client = MlflowClient(uri)
    runs = _trial_runs(client, experiment_id, parent_run_id, trial_id)
    for old in runs[1:]:
        client.set_tag(old.info.run_id, SUPERSEDED_TAG, "true")
    if runs:
        run = runs[0]
        if run.info.status == "FINISHED":
            return run.info.run_id, history(client, run)
        client.update_run(run.info.run_id, status="RUNNING")
        return run.info.run_id, None
    return _create_trial_run(client, experiment_id, parent_run_id, trial_id, trial_name, params, tags, dataset), None


def history(client: MlflowClient, run) -> list[dict]:
    """A run's metrics as one dict per epoch (step 1, 2, ...), in order. Step 0 is not an epoch: a crowned
    winner's test metrics sit there (analysis.publishing.winner), and a replayed epoch must not carry them."""
    epochs: dict[int, dict] = {}
    for key in run.data.metrics:
        for m in client.get_metric_history(run.info.run_id, key):
            if m.step >= 1:
                epochs.setdefault(m.step, {})[key] = m.value
    return [epochs[k] for k in sorted(epochs)]


def _create_trial_run(client, experiment_id, parent_run_id, trial_id, trial_name, params, tags, dataset=None) -> str:
    run = client.create_run(
        experiment_id,
        tags={
            MLFLOW_PARENT_RUN_ID: parent_run_id,
            MLFLOW_RUN_NAME: trial_name,
            TRIAL_ID_TAG: trial_id,
            **{k: str(v) for k, v in tags.items()},
        },
    )
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
    mlflow_ui.log_input(client, run.info.run_id, dataset, "train/val")
    return run.info.run_id


def fetch_artifact(uri: str, run_id: str, artifact: str, folder: str) -> str:
    """Download an artifact (e.g. the parent run's split manifest) into `folder`, waiting out a server restart."""
    return retrying(lambda: MlflowClient(uri).download_artifacts(run_id, artifact, folder), f"fetching {artifact}")


def _trial_runs(client: MlflowClient, experiment_id: str, parent_run_id: str, trial_id: str) -> list:
    return client.search_runs(
        [experiment_id],
        filter_string=(f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}' and tags.{TRIAL_ID_TAG} = '{trial_id}'"),
        order_by=["attributes.start_time DESC"],
    )


def find_trial_run(client: MlflowClient, experiment_id: str, parent_run_id: str, trial_id: str):
    """The trial's child run (the newest, should an older one exist)."""
    runs = _trial_runs(client, experiment_id, parent_run_id, trial_id)
    return runs[0] if runs else None


def close_study(uri: str, experiment_id: str, parent_run_id: str, status: str) -> list[str]:
    """End the parent run and any child run still RUNNING (as KILLED). Returns the ids it had to kill."""
    client = MlflowClient(uri)
    left = client.search_runs(
        [experiment_id],
        filter_string=(f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}' and attributes.status = 'RUNNING'"),
    )
    for r in left:
        client.set_terminated(r.info.run_id, status="KILLED")
    client.set_terminated(parent_run_id, status=status)
    return [r.info.run_id for r in left]
