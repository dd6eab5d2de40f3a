"""Who drives a study: --resume must tell a live study from a crashed one (real MLflow store, real processes)."""

import socket
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from trainables.tracking import mlflow_runs


def _parent(tmp_path, **tags):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("who"), tags={k: str(v) for k, v in tags.items()})
    return client.get_run(run.info.run_id)


@pytest.mark.integration  # live and dead processes
def test_a_live_driver_on_this_machine_is_seen_and_a_dead_one_is_not(tmp_path):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid now names no process
    try:
        here = socket.gethostname()
        running = _parent(tmp_path, driver_host=here, driver_pid=live.pid, heartbeat=0)
        assert "is running on this machine" in mlflow_runs.live_driver(running)
        client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
        client.set_tag(running.info.run_id, "driver_pid", str(dead.pid))
        assert mlflow_runs.live_driver(client.get_run(running.info.run_id)) is None  # crashed: resume may go on
    finally:
        live.kill()


@pytest.mark.unit
def test_another_machines_driver_counts_while_its_heartbeat_is_fresh(tmp_path):
    fresh = _parent(tmp_path, driver_host="elsewhere", driver_pid=1, heartbeat=int(time.time()) - 20)
    assert "beat 2" in mlflow_runs.live_driver(fresh)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.set_tag(fresh.info.run_id, "heartbeat", str(int(time.time()) - 3600))
    assert mlflow_runs.live_driver(client.get_run(fresh.info.run_id)) is None
    client.set_terminated(fresh.info.run_id, "KILLED")
    assert mlflow_runs.live_driver(client.get_run(fresh.info.run_id)) is None  # ended: nobody drives it


@pytest.mark.integration  # a dead process
def test_the_leaderboard_says_whether_a_study_is_live_crashed_or_ended(tmp_path):
    from analysis.reading.board import study_state

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    parent = _parent(tmp_path, driver_host=socket.gethostname(), driver_pid=dead.pid, heartbeat=0)
    assert study_state(parent).startswith("crashed") and "--resume" in study_state(parent)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.set_terminated(parent.info.run_id, "FINISHED")
    assert study_state(client.get_run(parent.info.run_id)) == "finished"
