"""Real servers for the tests, on loopback: an `mlflow server` that can be stopped and started again on the
same port and store (as a restarting tracking server is), copied to a second server, and compared with what it
held before, optionally behind MLflow's basic-auth app (users and grants made through its REST API); and an
HTTP readiness wait."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import closing, contextmanager
from pathlib import Path

from mlflow.tracking._tracking_service import utils as tracking_utils

from trainables.net import free_port
from trainables.tracking import new_store

BIN = Path(sys.executable).parent


def wait_http(url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:  # answering, e.g. 401 without the token: up
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(url)


@contextmanager
def as_user(user: str | None, password: str | None = None):
    """MLflow clients of this process (and processes it starts meanwhile) call as `user`, through the variables
    MLflow's client reads (None: no credentials at all); what was set before comes back after."""
    names = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    before = {n: os.environ.pop(n, None) for n in names}
    os.environ.update({n: v for n, v in zip(names, (user, password)) if v is not None})
    try:
        yield
    finally:
        for n in names:
            os.environ.pop(n, None)
        os.environ.update({n: v for n, v in before.items() if v is not None})


class MlflowServer:
    """`mlflow server` on 127.0.0.1 with a SQLite store and an artifact folder under `work`; with `auth`, behind
    MLflow's basic-auth app, `auth` being the permission of a user on what it was granted nothing on
    ("NO_PERMISSIONS", "READ", ...), its admin `self.admin` (name, password made here), users from add_user()."""

    def __init__(self, work: Path, auth: str | None = None):
        self.work, self.port, self.proc = Path(work), free_port(), None
        self.uri = f"http://127.0.0.1:{self.port}"
        self.db, self.artifacts = self.work / "server.db", self.work / "artifacts"
        self.auth, self.admin = auth, ("admin", secrets.token_urlsafe(16))
        self._secret_key = secrets.token_urlsafe(32)  # Flask's, for the auth app's CSRF tokens

    def start(self) -> "MlflowServer":
        auth = ["--app-name", "basic-auth"] if self.auth else []
        new_store.seed(f"sqlite:///{self.db}")  # a new file starts as MLflow's empty store, as tune.py's do
        self.proc = subprocess.Popen(
            [
                str(BIN / "mlflow"),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{self.db}",
                "--artifacts-destination",
                str(self.artifacts),
                *auth,
            ],
            stdout=open(self.work / "mlflow.log", "a"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # no GenAI job runners (two huey consumer processes, ~250 MB each): nothing here uses them
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **self._auth_env()},
        )
        wait_http(f"{self.uri}/health")
        return self

    def _auth_env(self) -> dict[str, str]:
        """The auth app's settings: its ini file (owner-only: it holds the admin's password) and secret key."""
        if not self.auth:
            return {}
        ini = self.work / "basic_auth.ini"
        if not ini.exists():
            fd = os.open(ini, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(
                    f"[mlflow]\ndefault_permission = {self.auth}\n"
                    f"database_uri = sqlite:///{self.work / 'auth.db'}\n"
                    f"admin_username = {self.admin[0]}\nadmin_password = {self.admin[1]}\n"
                    # a checked password is taken for 5 min without hashing it again (PBKDF2: ~1 s a request on 2 busy cores)
                    "auth_cache_ttl_seconds = 300\n"
                )
        return {"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_FLASK_SERVER_SECRET_KEY": self._secret_key}

    def add_user(self, name: str, grants: dict[str, str] | None = None) -> str:
        """Create user `name` on this (auth) server and grant it {experiment id: permission}; its password
        (made here) is returned."""
        from mlflow.server.auth.client import AuthServiceClient  # imports the whole auth app (~1 s): only here

        password = secrets.token_urlsafe(16)
        with as_user(*self.admin):
            client = AuthServiceClient(self.uri)
            client.create_user(name, password)
            for experiment_id, permission in (grants or {}).items():
                client.grant_user_permission(name, "experiment", experiment_id, permission)
        return password

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)

    def copy(self, work: Path) -> "MlflowServer":
        """A server (not started) on a copy of this one's store and artifacts under `work`. The store names
        artifacts by `mlflow-artifacts:/` URIs the server resolves, so the copy serves the same runs and files."""
        work = Path(work)
        work.mkdir(parents=True, exist_ok=True)
        copy = MlflowServer(work)
        with closing(_read_only(self.db)) as src, closing(sqlite3.connect(copy.db)) as dst:
            src.backup(dst)  # consistent even while this server runs
        if self.artifacts.is_dir():
            shutil.copytree(self.artifacts, copy.artifacts)
        return copy

    def record(self) -> dict[str, tuple]:
        """What the store holds: per table its row count and a digest of its rows (runs, tags, params, metric
        values, registered models, versions and aliases, ...), per artifact file a digest of its bytes."""
        with closing(_read_only(self.db)) as db:
            tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            out = {}
            for table in tables:
                rows = sorted(map(repr, db.execute(f'SELECT * FROM "{table}"')))
                out[f"table {table}"] = (len(rows), hashlib.sha1("\n".join(rows).encode()).hexdigest()[:12])
        files = self.artifacts.rglob("*") if self.artifacts.is_dir() else []
        out |= {
            f"artifact {p.relative_to(self.artifacts)}": (hashlib.sha1(p.read_bytes()).hexdigest()[:12],)
            for p in files
            if p.is_file()
        }
        return out

    def changes_since(self, before: dict[str, tuple]) -> dict[str, tuple]:
        """What differs from an earlier record(): {table or artifact: (before, now)}, None where absent."""
        now = self.record()
        return {
            k: (before.get(k), now.get(k)) for k in sorted(before.keys() | now.keys()) if before.get(k) != now.get(k)
        }


def forget_artifact_locations() -> None:
    """MLflow keeps each run's (and logged model's) artifact repository for the whole process, by id alone
    (mlflow.tracking._tracking_service.utils._artifact_repos_cache), whatever the client's tracking URI. A copy
    holds the same ids: a process that switches between a server and its copy forgets them first, or its
    artifact reads and writes go to the server it used before."""
    tracking_utils._artifact_repos_cache.clear()


def _read_only(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True)
