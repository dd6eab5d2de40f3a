"""Shared fixtures: small real image folders written by the tests themselves, and one real study."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from tests.servers import MlflowServer
from trainables.data.builtin_dataset import render

ROOT = Path(__file__).resolve().parents[1]
TINY_COUNTS = {"impressionism": 40, "pointillism": 24, "cubism": 12, "pop_art": 8}  # 5:1, 84 images


def write_folder(root, counts, seed=0):
    rng = np.random.default_rng(seed)
    for style, n in counts.items():
        (root / style).mkdir(parents=True)
        for i in range(n):
            render(style, rng).save(root / style / f"{i:03d}.{'png' if i % 2 else 'jpg'}")
    return root


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("tiny"), TINY_COUNTS)


@dataclass
class Study:
    out: str  # tune.py's stdout + stderr
    client: MlflowClient
    uri: str  # MLflow tracking URI: the real `mlflow server` below
    work: Path  # tune.py's working directory (ray_results)
    server: MlflowServer  # still running for the whole session
    experiment: str = "e2e"


def _tune(work: Path, uri: str, *flags: str, timeout: int) -> str:
    cmd = [
        sys.executable,
        str(ROOT / "tune.py"),
        "--family",
        "scratch",
        "--smoke",
        "--experiment",
        "e2e",
        "--mlflow-uri",
        uri,
        "--storage",
        str(work / "ray_results"),
        "--no-dashboard",
        *flags,
    ]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope="session")
def study(tmp_path_factory) -> Study:
    """One real smoke study for every test that needs one: local Ray, Optuna + ASHA, 6 trials (1 worker each, 2 at
    a time: 2-worker DDP trials are the faults and DDP tests'), 4 epochs, then its 2 best configurations confirmed
    with 2 new seeds each and the winner's final fit, recorded by a real `mlflow server` (SQLite store, proxied
    artifacts) as a team's tracking server would. The analysis and MLflow UI tests read its runs, checkpoints and
    logged model. A 1-trial study with a final fit runs first in the same experiment, so the study's champion has
    a previous one. (1 worker: 2-worker trials, one at a time, took 60 s longer, which the suite's 30 min lacked.)"""
    work = tmp_path_factory.mktemp("study")
    server = MlflowServer(work).start()
    first = _tune(work, server.uri, "--num-samples", "1", "--max-epochs", "1", "--final-fit", timeout=300)
    (work / "first.txt").write_text(first)
    out = _tune(
        work,
        server.uri,
        "--num-samples",
        "6",
        "--max-epochs",
        "4",
        "--confirm",
        "2",
        "--confirm-seeds",
        "2",
        "--final-fit",
        timeout=1200,
    )
    (work / "out.txt").write_text(out)
    yield Study(out, MlflowClient(server.uri), server.uri, work, server)
    server.stop()
