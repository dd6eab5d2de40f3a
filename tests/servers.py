"""Real servers for the tests, on loopback: an `mlflow server` that can be stopped and started again on the
same port and store (as a restarting tracking server is), copied to a second server, and compared with what it
held before; and an HTTP readiness wait."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import closing
from pathlib import Path

from mlflow.tracking._tracking_service import utils as tracking_utils

from trainables.net import free_port

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


class MlflowServer:
    """`mlflow server` on 127.0.0.1 with a SQLite store and an artifact folder under `work`."""

    def __init__(self, work: Path):
        self.work, self.port, self.proc = Path(work), free_port(), None
        self.uri = f"http://127.0.0.1:{self.port}"
        self.db, self.artifacts = self.work / "server.db", self.work / "artifacts"

    def start(self) -> "MlflowServer":
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
            ],
            stdout=open(self.work / "mlflow.log", "a"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # no GenAI job runners (two huey consumer processes, ~250 MB each): nothing here uses them
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
        wait_http(f"{self.uri}/health")
        return self

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
