"""The real `mlflow models serve` for a model URI, as a context manager (tests/test_serving.py,
benchmarks/serving.py): launched on a free loopback port, waited for until /ping answers, stopped after."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from trainables.net import free_port


@contextmanager
def scoring_server(model_uri: str, env: dict, cwd: Path, log_path: Path, timeout_s: float = 180.0):
    """Run the real `mlflow models serve -m MODEL_URI --env-manager local` on a free loopback port until the
    block ends; yields (base URL, start-up seconds = launch to the first 200 on /ping). `env` must carry
    MLFLOW_TRACKING_URI for a models:/ URI. The server runs in its own process group, so uvicorn's workers
    stop with it."""
    port = free_port()
    with open(log_path, "w") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "models",
                "serve",
                "-m",
                model_uri,
                "--env-manager",
                "local",
                "--host",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.perf_counter() - t0 > timeout_s:
                    log.flush()
                    raise RuntimeError(
                        f"mlflow models serve not up (rc {proc.poll()}):\n{Path(log_path).read_text()[-3000:]}"
                    )
                time.sleep(0.1)
            yield f"http://127.0.0.1:{port}", time.perf_counter() - t0
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
