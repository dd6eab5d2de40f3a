"""Stop a real study with Ctrl-C (SIGINT) after its first trial, then `tune.py --resume` it: finished
trials are kept, the rest run, and everything lands in the same MLflow parent run."""
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from mlflow.tracking import MlflowClient

from analysis.runs import latest_study, trial_rows
from tests.conftest import ROOT

pytestmark = pytest.mark.e2e
N = 3


def _children(client, status=None):
    try:
        exp, parent = latest_study(client, "resume")
    except LookupError:
        return None, []
    query = f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    if status:
        query += f" and attributes.status = '{status}'"
    return parent, client.search_runs([exp.experiment_id], query)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "sigkill"])
def test_stopped_study_resumes_in_the_same_parent_run(tmp_path, sig):
    """Ctrl-C (Tune saves its state) or SIGKILL of the driver (nothing saved on the way out): --resume ends with
    exactly N trials, one run each, the trials that had finished not trained again (their end times kept)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = ["--experiment", "resume", "--mlflow-uri", uri, "--storage", str(tmp_path / "ray_results"),
              "--no-dashboard"]
    first = subprocess.Popen([sys.executable, str(ROOT / "tune.py"), "--smoke", "--num-samples", str(N),
                              "--max-epochs", "2", *common], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    client = MlflowClient(uri)
    deadline = time.monotonic() + 300
    while not _children(client, "FINISHED")[1]:            # the first trial is done: now stop, like Ctrl-C
        assert first.poll() is None and time.monotonic() < deadline, first.stdout.read()[-3000:]
        time.sleep(0.5)
    os.kill(first.pid, sig)
    out, _ = first.communicate(timeout=180)
    parent, _ = _children(client)
    kept = {r.info.run_id: r.info.end_time for r in _children(client, "FINISHED")[1]}
    if sig == signal.SIGINT:
        assert parent.info.status == "KILLED" and "--resume" in out, out[-3000:]
    else:
        assert parent.info.status == "RUNNING"        # killed: nobody closed the record
    assert 1 <= len(kept) < N, out[-3000:]

    second = subprocess.run([sys.executable, str(ROOT / "tune.py"), "--resume", *common], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    out2 = second.stdout + second.stderr
    assert second.returncode == 0, out2[-4000:]
    parent2, finished = _children(client, "FINISHED")
    assert parent2.info.run_id == parent.info.run_id and parent2.info.status == "FINISHED"
    trial_ids = Counter(r.data.tags["trial_id"] for r in finished)
    assert len(trial_ids) == N and max(trial_ids.values()) == 1, trial_ids     # every sample, each once
    ends = {r.info.run_id: r.info.end_time for r in finished}
    assert all(ends.get(run) == end for run, end in kept.items())              # finished trials not re-run
    all_runs = _children(client)[1]
    assert len({r.data.tags["trial_id"] for r in all_runs}) == N
    assert all(r.info.status == "FINISHED" for r in all_runs if r.data.tags.get("superseded") != "true")
    rows = trial_rows(client, parent.info.experiment_id, parent.info.run_id)
    assert len(rows) == N and len({r.name for r in rows}) == N                # the leaderboard: N trials
    assert not _children(client, "RUNNING")[1]
