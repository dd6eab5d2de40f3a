"""Stop a real study with Ctrl-C in its search, resume it, SIGKILL the resumed driver in its confirm phase, resume
again: finished trials and confirmation runs are kept, the rest run, and everything lands in the same MLflow
parent run, one run per trial."""

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from mlflow.tracking import MlflowClient

from analysis.reading.confirm import confirmed, searched
from analysis.reading.runs import trial_rows
from tests.conftest import ROOT
from trainables.tracking.mlflow_runs import latest_study

pytestmark = pytest.mark.e2e
N = 3  # search trials: enough that some are still pending when Ctrl-C lands
SEEDS = 3  # --confirm 1 --confirm-seeds 3, 2 at a time: the SIGKILL lands before the third one ends


def _children(client, status=None):
    try:
        exp, parent = latest_study(client, "resume")
    except LookupError:
        return None, []
    query = f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    if status:
        query += f" and attributes.status = '{status}'"
    return parent, client.search_runs([exp.experiment_id], query)


def _start(tmp_path, *args):
    return subprocess.Popen(
        [sys.executable, str(ROOT / "tune.py"), *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _stop_after(proc, client, finished: int, sig) -> tuple[str, dict]:
    """Wait until `finished` trial runs are FINISHED, send `sig` to the driver; (its output, {run: end time})."""
    deadline = time.monotonic() + 300
    while len(_children(client, "FINISHED")[1]) < finished:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()[-3000:]
        time.sleep(0.5)
    os.kill(proc.pid, sig)
    out, _ = proc.communicate(timeout=180)
    return out, {r.info.run_id: r.info.end_time for r in _children(client, "FINISHED")[1]}


def test_a_study_stopped_by_ctrl_c_then_killed_resumes_to_exactly_its_trials(tmp_path):
    """Ctrl-C (Tune saves its state, the record is closed KILLED), --resume, then SIGKILL of that driver (nothing
    saved on the way out, the record left RUNNING), --resume again: exactly N trials with one run each, in the
    same parent run, and no trial that had finished was trained again (its end time is kept)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = [
        "--experiment",
        "resume",
        "--mlflow-uri",
        uri,
        "--storage",
        str(tmp_path / "ray_results"),
        "--no-dashboard",
    ]
    client = MlflowClient(uri)
    out, kept = _stop_after(
        _start(
            tmp_path,
            "--smoke",
            "--num-samples",
            str(N),
            "--max-epochs",
            "2",
            "--confirm",
            "1",
            "--confirm-seeds",
            str(SEEDS),
            "--set",
            "width=0.5",  # a quarter of the full width's epoch: trials and re-runs still last seconds, so each
            # signal lands while the next one trains (taken from the study's record on --resume)
            *common,
        ),
        client,
        1,
        signal.SIGINT,
    )
    parent, _ = _children(client)
    assert parent.info.status == "KILLED" and "--resume" in out and 1 <= len(kept) < N, out[-3000:]

    out, kept = _stop_after(_start(tmp_path, "--resume", *common), client, N + 1, signal.SIGKILL)  # 1 confirm run
    assert _children(client)[0].info.status == "RUNNING" and N + 1 <= len(kept) < N + SEEDS, out[-3000:]  # open
    assert "confirm: the 1 best distinct configurations again" in out

    last = subprocess.run(
        [sys.executable, str(ROOT / "tune.py"), "--resume", *common],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert last.returncode == 0, (last.stdout + last.stderr)[-4000:]
    parent2, finished = _children(client, "FINISHED")
    assert parent2.info.run_id == parent.info.run_id and parent2.info.status == "FINISHED"
    trial_ids = Counter(r.data.tags["trial_id"] for r in finished)
    assert len(trial_ids) == N + SEEDS and max(trial_ids.values()) == 1, trial_ids  # every sample and seed, once
    ends = {r.info.run_id: r.info.end_time for r in finished}
    assert all(ends.get(run) == end for run, end in kept.items())  # finished runs not re-run
    all_runs = _children(client)[1]
    assert len({r.data.tags["trial_id"] for r in all_runs}) == N + SEEDS
    assert all(r.info.status == "FINISHED" for r in all_runs if r.data.tags.get("superseded") != "true")
    rows = trial_rows(client, parent.info.experiment_id, parent.info.run_id)
    assert len(searched(rows)) == N and len({r.name for r in rows}) == N + SEEDS  # the leaderboard: N trials
    [conf] = confirmed(rows)
    assert len(conf.runs) == SEEDS and len({r.params["seed"] for r in conf.runs}) == SEEDS
    assert "winner: " in last.stdout and f"confirmation ({SEEDS} new seeds each" in last.stdout
    assert {r.data.params["width"] for r in finished} == {"0.5"}  # --set came back with each --resume
    assert not _children(client, "RUNNING")[1]
