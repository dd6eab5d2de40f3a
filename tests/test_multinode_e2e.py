"""Two Ray nodes on loopback (separate `ray start` processes, their own resources), a real `mlflow server`,
the study submitted with `ray job submit`: trials run on both nodes and reach MLflow over HTTP only.
Everything started here is stopped at the end."""
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from analysis.runs import latest_study, trial_rows
from tests.servers import BIN, wait_http
from trainables.net import free_port

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e


# Ray 2.60 authenticates every connection with a token: one per cluster, given to every node and client.
AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


def ray(*args, **kw):
    return subprocess.run([str(BIN / "ray"), *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **AUTH}, **kw)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    work = tmp_path_factory.mktemp("multinode")
    mlflow_port, gcs_port, dash_port = free_port(), free_port(), free_port()
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port),
         "--backend-store-uri", f"sqlite:///{work / 'server.db'}", "--artifacts-destination", str(work / "artifacts")],
        stdout=open(work / "mlflow.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{mlflow_port}/health")
        head = ray("start", "--head", f"--port={gcs_port}", "--num-cpus=1", "--resources={\"artsweep_driver\": 1000}",
                   "--dashboard-host=127.0.0.1", f"--dashboard-port={dash_port}", "--include-dashboard=true")
        assert head.returncode == 0, head.stdout + head.stderr
        node = ray("start", f"--address=127.0.0.1:{gcs_port}", "--num-cpus=1")
        assert node.returncode == 0, node.stdout + node.stderr
        wait_http(f"http://127.0.0.1:{dash_port}/api/version")
        yield work, f"http://127.0.0.1:{mlflow_port}", f"http://127.0.0.1:{dash_port}"
    finally:
        ray("stop", "--force")
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_study_submitted_as_a_job_runs_on_both_nodes_and_logs_over_http(cluster):
    work, mlflow_uri, dashboard = cluster
    for _ in range(30):   # the head's job agent registers a few seconds after the dashboard answers
        job = ray("job", "submit", f"--address={dashboard}", "--",
                  sys.executable, str(ROOT / "tune.py"), "--address", "auto", "--smoke", "--num-samples", "4",
                  "--max-epochs", "1", "--experiment", "multinode", "--mlflow-uri", mlflow_uri,
                  "--storage", str(work / "ray_results"))
        out = job.stdout + job.stderr
        if "No available agent to submit job" not in out:
            break
        time.sleep(2)
    assert job.returncode == 0 and "succeeded" in out, out[-4000:]
    assert "2 trial(s) at a time" in out and "best trial" in out
    client = MlflowClient(mlflow_uri)
    exp, parent = latest_study(client, "multinode")
    rows = trial_rows(client, exp.experiment_id, parent.info.run_id)
    assert len(rows) == 4 and all(r.status == "FINISHED" and r.epochs == 1 for r in rows)
    nodes = {client.get_run(r.run_id).data.tags["node_id"] for r in rows}
    assert len(nodes) == 2, "trials ran on one node only"
    for r in rows:                                                   # artifacts went through the server
        assert client.get_run(r.run_id).info.artifact_uri.startswith("mlflow-artifacts:")
        assert client.list_artifacts(r.run_id, "checkpoint")
    assert list(work.glob("**/mlflow.db")) == []                     # no node-local store was created
