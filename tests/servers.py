"""Real servers for the tests, on loopback: an `mlflow server` that can be stopped and started again on the
same port and store (as a restarting tracking server is), and an HTTP readiness wait."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

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
                f"sqlite:///{self.work / 'server.db'}",
                "--artifacts-destination",
                str(self.work / "artifacts"),
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
