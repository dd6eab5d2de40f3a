"""Credentials for the tracking server live in the environment (MLFLOW_TRACKING_USERNAME / PASSWORD, read by
MLflow's client), never in a URI: a URI with a password is refused in one line; a real `mlflow server` behind its
basic-auth app that refuses the credentials (401) or a write (403) stops the study before Ray starts, in one line
with no password. That a study run with a user's credentials in its environment leaves the password in no record,
file or printed line is checked on the cluster's own tracking stack (tests/test_tracking_stack_e2e.py)."""

import base64
import secrets
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import ray
from mlflow.tracking import MlflowClient

import tune
from tests.servers import MlflowServer, as_user
from trainables.tracking.credentials import CredentialsError, check_uri
from trainables.tracking.retry import http_status

ROOT = Path(__file__).resolve().parents[1]
SECRET = secrets.token_urlsafe(16)  # a password no test writes anywhere but where credentials belong


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Default permission NO_PERMISSIONS: a user reaches only what it created or was granted."""
    server = MlflowServer(tmp_path_factory.mktemp("auth"), auth="NO_PERMISSIONS").start()
    yield server
    server.stop()


def refused(capsys, *argv: str) -> str:
    """tune.py's one-line refusal of `argv` (exit code 2), with its whole output; Ray never started."""
    with pytest.raises(SystemExit) as exit_:
        tune.main(list(argv))
    out, err = capsys.readouterr()
    assert exit_.value.code == 2 and not ray.is_initialized(), out + err
    assert len(err.splitlines()) == 1 and err.startswith("tune.py: error: "), out + err
    return out + err


@pytest.mark.unit
def test_a_uri_with_credentials_is_refused_in_one_line_without_the_password(capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    said = refused(capsys, "--smoke", "--mlflow-uri", f"http://alice:{SECRET}@127.0.0.1:5000")
    assert SECRET not in said and "--mlflow-uri holds credentials (alice:***@...)" in said
    assert "use http://127.0.0.1:5000 and put the user and password in MLFLOW_TRACKING_USERNAME" in said
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"https://alice:{SECRET}@mlflow.example.org")
    said = refused(capsys, "--smoke", "--mlflow-uri", "sqlite:///mlflow.db")  # MLflow and Ray's workers read it too
    assert SECRET not in said and "MLFLOW_TRACKING_URI holds credentials" in said
    from analysis import sync  # every command that opens the store refuses it alike

    with pytest.raises(SystemExit) as exit_:
        sync.main(["--experiment", "x", "--mlflow-uri", "http://127.0.0.1:5000"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.splitlines()) == 1 and SECRET not in err, err
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with pytest.raises(CredentialsError, match="PGPASSWORD"):
        check_uri(f"postgresql://study:{SECRET}@db.internal/mlflow")
    with pytest.raises(CredentialsError, match="MLFLOW_TRACKING_USERNAME"):
        check_uri("http://alice@127.0.0.1:5000")  # requests would send it in place of MLflow's credentials
    for fine in ("http://127.0.0.1:5000", "sqlite:////tmp/mlflow.db", "postgresql://study@db.internal/mlflow", None):
        check_uri(fine)


@pytest.mark.integration
def test_the_server_asks_for_credentials_and_a_reader_may_not_write(server):
    search = f"{server.uri}/api/2.0/mlflow/experiments/search?max_results=1"
    wrong = base64.b64encode(f"admin:{SECRET}".encode()).decode()
    for headers in ({}, {"Authorization": f"Basic {wrong}"}):
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(urllib.request.Request(search, headers=headers), timeout=30)
        assert answer.value.code == 401
    owner = server.add_user("owner")
    with as_user("owner", owner):
        client = MlflowClient(server.uri)
        experiment = client.create_experiment("owned")
        run_id = client.create_run(experiment).info.run_id
    reader = server.add_user("reader", {experiment: "READ"})
    with as_user("reader", reader):
        assert client.get_run(run_id).info.status == "RUNNING"  # reading is allowed
        with pytest.raises(Exception) as write:
            client.log_metric(run_id, "val_macro_f1", 0.5)
    assert http_status(write.value) == 403


@pytest.mark.integration
def test_preflight_stops_at_credentials_the_server_refuses_in_one_line(server, tiny_folder, tmp_path, capsys, caplog):
    study = ["--smoke", "--data", str(tiny_folder), "--storage", str(tmp_path / "ray_results")]
    with as_user("nobody", SECRET):  # a user this server does not know
        said = refused(capsys, *study, "--mlflow-uri", server.uri, "--experiment", "refused")
    assert said.startswith(
        f"tune.py: error: MLflow at {server.uri} refused the credentials of user 'nobody' (401): "
        "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
    )
    owner = server.add_user("lead")
    with as_user("lead", owner):
        experiment = MlflowClient(server.uri).create_experiment("lead")
    reader = server.add_user("viewer", {experiment: "READ"})
    with as_user("viewer", reader):  # known, but may only read that experiment
        said += refused(capsys, *study, "--mlflow-uri", server.uri, "--experiment", "lead")
    assert f"MLflow at {server.uri} refused user 'viewer' writes to experiment 'lead' (403): ask its admin" in said
    assert SECRET not in said + caplog.text and reader not in said + caplog.text
