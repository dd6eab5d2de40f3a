"""Faults caused for real, with real processes: a Train worker SIGKILLed mid-epoch, the tracking server stopped
for a minute mid-study. What survives is checked in MLflow, where the user looks. Marked `fault` (and `e2e`): `python -m pytest -m fault` runs them alone."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient

from analysis.reading.runs import trial_rows
from tests.servers import MlflowServer
from trainables.metrics import OBJECTIVE_KEY
from trainables.tracking.mlflow_runs import latest_study

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.e2e, pytest.mark.fault]
EPOCHS = 4


def train_workers(study_pid: int) -> list[int]:
    """Pids of the Train workers of this study's own Ray cluster (its processes descend from tune.py)."""
    found = []
    for p in psutil.Process(study_pid).children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(p.cmdline()):
                found.append(p.pid)
        except psutil.NoSuchProcess:
            pass
    return found


def epochs_logged(client, experiment) -> list[int]:
    try:
        exp, parent = latest_study(client, experiment)
    except LookupError:
        return []
    runs = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    return sorted(m.step for r in runs for m in client.get_metric_history(r.info.run_id, OBJECTIVE_KEY))


def outage_noticed(out: str, uri: str) -> set[str]:
    """Runs whose writes the outbox kept because the server at `uri` did not answer: its warning names the run and
    the failed request's address, on the console (the study's own writes) or in Ray's output, the log file the
    console names (the trials')."""
    log = next(line.split("Ray's output: ")[1].split(" (")[0] for line in out.splitlines() if "Ray's output: " in line)
    lines = (out + open(log).read()).splitlines()
    found = (re.search(r"MLflow did not take a write of run (\w+) ", line) for line in lines if f"{uri}/" in line)
    return {m[1] for m in found if m}


def test_a_killed_worker_resumes_its_trial_from_the_last_epoch(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [
        sys.executable,
        str(ROOT / "tune.py"),
        "--smoke",
        "--num-samples",
        "1",
        "--max-epochs",
        str(EPOCHS),
        "--workers-per-trial",
        "2",
        "--set",
        "width=0.5",  # epochs of ~3 s: long enough to be caught in, a quarter of the full width's
        "--experiment",
        "kill-worker",
        "--mlflow-uri",
        uri,
        "--storage",
        str(tmp_path / "ray_results"),
        "--no-dashboard",
    ]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client, killed, deadline = MlflowClient(uri), None, time.monotonic() + 400
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        if (tmp_path / "mlflow.db").exists() and epochs_logged(client, "kill-worker") == [1]:
            workers = train_workers(proc.pid)  # epoch 1 is checkpointed and logged: the workers are in epoch 2
            if workers:
                killed = workers[-1]
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.2)
    out = proc.communicate(timeout=600)[0]
    assert killed is not None, "never saw epoch 1 logged while the workers ran:\n" + out[-3000:]
    assert proc.returncode == 0, out[-4000:]
    exp, parent = latest_study(client, "kill-worker")
    rows = trial_rows(client, exp.experiment_id, parent.info.run_id)
    assert len(rows) == 1 and rows[0].status == "FINISHED" and not rows[0].stopped_early  # one child run
    assert epochs_logged(client, "kill-worker") == list(range(1, EPOCHS + 1))  # every epoch, each once
    tags = client.get_run(rows[0].run_id).data.tags
    assert 1 <= int(tags["resumed_from_epoch"]) < EPOCHS  # continued from its checkpoint, not from scratch


def test_the_study_outlasts_a_tracking_server_stopped_for_40_seconds(tmp_path):
    """40 s: longer than the outbox's 30 s between sends, so at least one send fails while the server is away."""
    server = MlflowServer(tmp_path).start()
    cmd = [
        sys.executable,
        str(ROOT / "tune.py"),
        "--smoke",
        "--num-samples",
        "2",
        "--max-epochs",
        "2",
        "--experiment",
        "outage",
        "--mlflow-uri",
        server.uri,
        "--storage",
        str(tmp_path / "ray_results"),
        "--no-dashboard",
    ]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client, deadline, stopped_at = MlflowClient(server.uri), time.monotonic() + 400, None
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if epochs_logged(client, "outage"):  # a trial is training: take the server away mid-study
                server.stop()
                stopped_at = time.monotonic()
                break
            time.sleep(0.5)
        if stopped_at is not None:
            time.sleep(40)
    finally:
        server.start()
    out = proc.communicate(timeout=900)[0]
    assert stopped_at is not None, out[-3000:]
    assert proc.returncode == 0, out[-4000:]
    exp, parent = latest_study(client, "outage")
    rows = trial_rows(client, exp.experiment_id, parent.info.run_id)
    noticed = outage_noticed(out, server.uri)
    assert noticed & {parent.info.run_id, *(r.run_id for r in rows)}, out[-3000:]  # the outage was noticed ...
    assert len(rows) == 2 and all(r.status == "FINISHED" for r in rows)  # ... and lost nothing
    for r in rows:
        steps = [m.step for m in client.get_metric_history(r.run_id, OBJECTIVE_KEY)]
        assert steps == list(range(1, len(steps) + 1)) and len(steps) == r.epochs >= 1, (r.name, steps)
        assert int(client.get_run(r.run_id).data.tags["epochs_reached"]) == len(steps)
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
    server.stop()
