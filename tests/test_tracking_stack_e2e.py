"""The cluster head's tracking server, for real on loopback (tests/tracking_stack.py): cluster/mlflow_server.sh
serving MLflow's basic-auth app on a real PostgreSQL, artifacts proxied to moto's S3 server (a stand-in for S3).
Nobody gets in without a password, a read-only user cannot write, a smoke study with confirmation and a final
fit records to it with the study user's credentials (from the environment only), and after everything of the
"head" is deleted (server, its folders, the study's Ray results and Ray's temp folder) a new server on the same
database and bucket serves the same leaderboard, winner's model and champion, predicting the same.

python -m pytest tests/test_tracking_stack_e2e.py -x -q
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import psutil
import pytest
from mlflow.server.auth.client import AuthServiceClient
from mlflow.tracking import MlflowClient

from analysis.publishing.models import CHAMPION, model_name
from analysis.publishing.winner import WINNER_TAG, logged_model_id
from analysis.reading.mlflow_env import using_tracking_uri
from tests.leaks import files, where
from tests.servers import forget_artifact_locations
from tests.tracking_stack import SCRIPT, tracking_stack
from trainables.data.builtin_dataset import STYLES, render

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "stack"
# the cheapest study with both later phases: 2 trials of 1 epoch of the smallest networks, the best confirmed with 1
# new seed, a final fit
STUDY_FLAGS = ["--num-samples", "2", "--max-epochs", "1", "--confirm", "1", "--confirm-seeds", "1", "--final-fit"]
STUDY_FLAGS += ["--set", "width=0.25"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with tracking_stack(tmp_path_factory.mktemp("tracking-stack")) as st:
        yield st


@pytest.fixture(scope="module")
def head(stack, tmp_path_factory):
    """The first head's server (the last test deletes it)."""
    server = stack.server(tmp_path_factory.mktemp("head-1")).start()
    yield server
    server.stop()


@dataclass
class StudyRun:
    out: str
    storage: Path
    ray_tmp: Path


@pytest.fixture(scope="module")
def study(head, tmp_path_factory):
    """One smoke study recording to `head` as its study user: the credentials only in the environment, no
    cloud credentials at all (the server proxies artifacts), Ray's temp folder of its own."""
    work = tmp_path_factory.mktemp("study")
    ray_tmp = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))  # short: Ray's socket paths have <= 107 characters
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))}
    env |= {**head.study_env(), "RAY_TMPDIR": str(ray_tmp)}
    cmd = [
        sys.executable,
        str(ROOT / "tune.py"),
        "--family",
        "scratch",
        "--smoke",
        "--experiment",
        EXPERIMENT,
        "--mlflow-uri",
        head.uri,
        "--storage",
        str(work / "ray_results"),
        "--no-dashboard",
        *STUDY_FLAGS,
    ]
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    yield StudyRun(out, work / "ray_results", ray_tmp)
    shutil.rmtree(ray_tmp, ignore_errors=True)


def status(uri: str, path: str, creds: tuple[str, str] | None = None, body: dict | None = None) -> int:
    """HTTP status of one REST call (POST when `body`), with basic-auth `creds` or none."""
    req = urllib.request.Request(uri + path, data=None if body is None else json.dumps(body).encode())
    req.add_header("Content-Type", "application/json")
    if creds:
        req.add_header("Authorization", "Basic " + base64.b64encode(":".join(creds).encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def test_nobody_gets_in_without_a_password_and_no_secret_shows(head, stack, tmp_path):
    study = (stack.secrets.study_user, stack.secrets.study_password)
    search = "/api/2.0/mlflow/experiments/search?max_results=5"
    artifacts = "/api/2.0/mlflow-artifacts/artifacts"
    assert [status(head.uri, p) for p in (search, artifacts, "/")] == [401, 401, 401]
    assert status(head.uri, search, (study[0], "wrong-password-12")) == 401
    assert status(head.uri, search, study) == 200
    # no secret on a command line of the server's processes (ps shows them) or in its log; its folder owner-only
    tree = [psutil.Process(head.pid), *psutil.Process(head.pid).children(recursive=True)]
    assert len(tree) >= 3  # the CLI and its two uvicorn workers (and uvicorn's supervisor)
    shown = " ".join(" ".join(p.cmdline()) for p in tree) + (head.run_dir / "mlflow.log").read_text()
    assert not [s for s in stack.secrets.values() if s in shown]
    assert oct(head.run_dir.stat().st_mode & 0o777) == "0o700"
    assert oct((head.run_dir / "basic_auth.ini").stat().st_mode & 0o777) == "0o600"
    # a secrets file others can read is refused, with one line saying what to do, before anything starts
    loose = stack.secrets.write(tmp_path / "mlflow.env")
    loose.chmod(0o644)
    proc = subprocess.run(
        ["bash", str(SCRIPT), head.destination],
        capture_output=True,
        text=True,
        timeout=60,
        env={**head.env(), "ARTSWEEP_MLFLOW_SECRETS": str(loose), "ARTSWEEP_MLFLOW_DIR": str(tmp_path / "run")},
    )
    assert proc.returncode == 1 and f"chmod 600 {loose}" in proc.stderr and not (tmp_path / "run").exists()


def test_a_study_records_as_its_user_with_artifacts_in_the_bucket(head, stack, study, monkeypatch):
    for k, v in head.study_env().items():  # this process reads as the study user too
        monkeypatch.setenv(k, v)
    client = MlflowClient(head.uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], max_results=100)
    phases = sorted(r.data.tags.get("phase", "") for r in runs)
    assert {"confirm", "final"} <= set(phases), phases
    assert client.get_model_version_by_alias(model_name(EXPERIMENT), CHAMPION)
    keys = stack.s3.keys("mlflow/")
    assert any(k.endswith("/model.pt") for k in keys) and any(k.endswith("/MLmodel") for k in keys), keys[:20]
    # The study user's password, given through the environment only, is nowhere a study writes: the console, the
    # whole store (every table: params, tags, metrics; the parent run's settings), every object in the bucket
    # (artifacts: settings.json, the split, reports, models), the study's folder (Ray results, ray.log,
    # checkpoints) and Ray's session logs.
    places = {"console": study.out.encode(), "store": stack.postgres.dump("mlflow"), **stack.s3.objects()}
    places |= files(study.storage.parent) | files(study.ray_tmp)
    assert where([EXPERIMENT.encode()], places) and any(p.endswith("ray.log") for p in places)  # the scan reads them
    user, password = stack.secrets.study_user, stack.secrets.study_password
    header = base64.b64encode(f"{user}:{password}".encode())  # an Authorization header, had one been logged
    assert where([password.encode(), header], places) == []
    assert not [s for s in stack.secrets.values() if s in study.out]


def test_a_read_only_user_reads_but_cannot_write(head, stack, study, monkeypatch):
    reader = ("reader", "reader-password-1")
    for k, v in head.admin_env().items():
        monkeypatch.setenv(k, v)
    admin = AuthServiceClient(head.uri)
    admin.create_user(*reader)
    exp = MlflowClient(head.uri).get_experiment_by_name(EXPERIMENT)
    admin.grant_user_permission(reader[0], "experiment", exp.experiment_id, "READ")
    run = MlflowClient(head.uri).search_runs([exp.experiment_id], max_results=1)[0]
    run_id = run.info.run_id
    assert status(head.uri, f"/api/2.0/mlflow/runs/get?run_id={run_id}", reader) == 200
    writes = {
        "/api/2.0/mlflow/runs/set-tag": {"run_id": run_id, "key": "k", "value": "v"},
        "/api/2.0/mlflow/runs/create": {"experiment_id": exp.experiment_id},
        "/api/2.0/mlflow/registered-models/alias": {"name": model_name(EXPERIMENT), "alias": CHAMPION, "version": "1"},
    }
    assert {p: status(head.uri, p, reader, body) for p, body in writes.items()} == dict.fromkeys(writes, 403)


def _images(n: int = 6) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [np.array(render(style, rng)) for style in list(STYLES)[:n]]  # a copy: writable, as torch wants


def _what_the_head_serves(uri: str, cwd: Path) -> tuple[str, np.ndarray, np.ndarray]:
    """The leaderboard's text (a new process in `cwd`, as a person runs it), and the winner's logged model's and
    the champion's class probabilities on a few images."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT)}
    board = subprocess.run(
        [sys.executable, "-m", "analysis.leaderboard", "--experiment", EXPERIMENT, "--mlflow-uri", uri, "--no-log"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert board.returncode == 0, board.stderr[-3000:]
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    [winner] = client.search_runs([exp.experiment_id], f"tags.{WINNER_TAG} = 'true'")
    model_id = logged_model_id(client, exp.experiment_id, winner.info.run_id)
    forget_artifact_locations()  # a new server serves the same run ids: forget where the last one was
    with using_tracking_uri(uri):
        probs = [
            mlflow.pyfunc.load_model(u).unwrap_python_model().clf.probabilities(_images())
            for u in (f"models:/{model_id}", f"models:/{model_name(EXPERIMENT)}@{CHAMPION}")
        ]
    return board.stdout, *probs


def test_a_new_head_on_the_same_database_and_bucket_serves_everything_unchanged(
    head, stack, study, tmp_path, monkeypatch
):
    for k, v in head.study_env().items():
        monkeypatch.setenv(k, v)
    board, winner, champion = _what_the_head_serves(head.uri, tmp_path)
    assert "confirmation:" in board and winner.shape == champion.shape == (len(_images()), len(STYLES))
    # `ray down`: the head and all it held go
    old = psutil.Process(head.pid)
    head.stop()
    assert not old.is_running()
    for folder in (head.work, study.storage, study.ray_tmp):
        shutil.rmtree(folder)
    t0 = time.monotonic()
    new = stack.server(tmp_path / "head-2").start()
    try:
        assert new.port != head.port
        print(f"new head's server up in {time.monotonic() - t0:.1f} s")
        board2, winner2, champion2 = _what_the_head_serves(new.uri, tmp_path)
    finally:
        new.stop()
    assert board2 == board
    np.testing.assert_allclose(winner2, winner, rtol=0, atol=1e-6)
    np.testing.assert_allclose(champion2, champion, rtol=0, atol=1e-6)
