"""Two Ray nodes on loopback (separate `ray start` processes, their own resources), a real `mlflow server`,
the study submitted with `ray job submit`: trials run on both nodes and reach MLflow over HTTP only.
Everything started here is stopped at the end."""

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient

from analysis.reading.runs import trial_rows
from tests.servers import BIN, wait_http
from trainables.net import free_port
from trainables.tracking.mlflow_runs import latest_study

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e


# Ray 2.60 authenticates every connection with a token: one per cluster, given to every node and client.
AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


def ray(*args, **kw):
    return subprocess.run(
        [str(BIN / "ray"), *args], capture_output=True, text=True, timeout=600, env={**os.environ, **AUTH}, **kw
    )


@dataclass
class Cluster:
    work: Path
    mlflow_uri: str
    dashboard: str
    gcs_port: int
    node: subprocess.Popen  # the non-head node's `ray start --block` (its process tree is the node)


def nodes_of(dashboard: str) -> list[dict]:
    out = ray("list", "nodes", f"--address={dashboard}", "--format=json")
    try:
        return [n for n in json.loads(out.stdout) if n.get("state") == "ALIVE"]
    except ValueError:
        return []


def alive_nodes(dashboard: str) -> int:
    return len(nodes_of(dashboard))


@pytest.fixture  # one cluster per test: a study's leftovers (placement groups) never shape the next test
def cluster(tmp_path_factory):
    work = tmp_path_factory.mktemp("multinode")
    mlflow_port, gcs_port, dash_port = free_port(), free_port(), free_port()
    server = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(mlflow_port),
            "--backend-store-uri",
            f"sqlite:///{work / 'server.db'}",
            "--artifacts-destination",
            str(work / "artifacts"),
        ],
        stdout=open(work / "mlflow.log", "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{mlflow_port}/health")
        head = ray(
            "start",
            "--head",
            f"--port={gcs_port}",
            "--num-cpus=1",
            '--resources={"artsweep_driver": 1000}',
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash_port}",
            "--include-dashboard=true",
        )
        assert head.returncode == 0, head.stdout + head.stderr
        # the second node in the foreground (--block): its process tree is the node, which a test can take away
        node = subprocess.Popen(
            [str(BIN / "ray"), "start", f"--address=127.0.0.1:{gcs_port}", "--num-cpus=1", "--block"],
            env={**os.environ, **AUTH},
            start_new_session=True,
            stdout=open(work / "node.log", "w"),
            stderr=subprocess.STDOUT,
        )
        wait_http(f"http://127.0.0.1:{dash_port}/api/version")
        deadline = time.monotonic() + 120
        while alive_nodes(f"http://127.0.0.1:{dash_port}") < 2:
            assert node.poll() is None and time.monotonic() < deadline, (work / "node.log").read_text()[-2000:]
            time.sleep(1)
        yield Cluster(work, f"http://127.0.0.1:{mlflow_port}", f"http://127.0.0.1:{dash_port}", gcs_port, node)
    finally:
        ray("stop", "--force")
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_study_submitted_as_a_job_runs_on_both_nodes_and_logs_over_http(cluster):
    work, mlflow_uri, dashboard = cluster.work, cluster.mlflow_uri, cluster.dashboard
    for _ in range(30):  # the head's job agent registers a few seconds after the dashboard answers
        job = ray(
            "job",
            "submit",
            f"--address={dashboard}",
            "--",
            sys.executable,
            str(ROOT / "tune.py"),
            "--address",
            "auto",
            "--smoke",
            "--num-samples",
            "4",
            "--max-epochs",
            "1",
            "--experiment",
            "multinode",
            "--mlflow-uri",
            mlflow_uri,
            "--storage",
            str(work / "ray_results"),
        )
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
    for r in rows:  # artifacts went through the server
        assert client.get_run(r.run_id).info.artifact_uri.startswith("mlflow-artifacts:")
        assert client.list_artifacts(r.run_id, "checkpoint")
    assert list(work.glob("**/mlflow.db")) == []  # no node-local store was created


EPOCHS = 6


def test_a_lost_node_takes_no_trial_with_it(cluster):
    """SIGKILL the non-head node (its process tree: raylet and workers) while a trial trains there: that trial's
    workers restart on the head from its last epoch (once the head has room), and both trials finish."""
    client, experiment = MlflowClient(cluster.mlflow_uri), "lose-node"
    cmd = [
        sys.executable,
        str(ROOT / "tune.py"),
        "--address",
        f"127.0.0.1:{cluster.gcs_port}",
        "--smoke",
        "--num-samples",
        "2",
        "--max-epochs",
        str(EPOCHS),
        "--no-early-stopping",
        "--experiment",
        experiment,
        "--mlflow-uri",
        cluster.mlflow_uri,
        "--storage",
        str(cluster.work / "ray_results"),
    ]
    proc = subprocess.Popen(
        cmd, cwd=cluster.work, env={**os.environ, **AUTH}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    worker_node = next(n["node_id"] for n in nodes_of(cluster.dashboard) if not n["is_head_node"])
    deadline, lost = time.monotonic() + 300, None
    while lost is None and proc.poll() is None and time.monotonic() < deadline:
        for r in _rows(client, experiment):  # a trial's first report tags the node it trains on
            if client.get_run(r.run_id).data.tags.get("node_id") == worker_node and r.epochs < EPOCHS - 2:
                kill_tree(cluster.node.pid)  # mid-trial: take its node away
                lost = r.run_id
        time.sleep(0.5)
    out = proc.communicate(timeout=600)[0]
    assert lost is not None, "never saw a trial on the second node:\n" + out[-3000:]
    assert proc.returncode == 0, out[-4000:]
    rows = _rows(client, experiment)
    assert len(rows) == 2 and all(r.status == "FINISHED" and r.epochs == EPOCHS for r in rows), rows
    tags = client.get_run(lost).data.tags
    assert tags["node_id"] != worker_node and int(tags["resumed_from_epoch"]) >= 1  # went on, on the head


def kill_tree(pid: int) -> None:
    """SIGKILL a process and everything below it (the node's raylet, its workers), children first."""
    root = psutil.Process(pid)
    for p in [*root.children(recursive=True), root]:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


def _rows(client, experiment):
    try:
        exp, parent = latest_study(client, experiment)
    except LookupError:
        return []
    return trial_rows(client, exp.experiment_id, parent.info.run_id)
