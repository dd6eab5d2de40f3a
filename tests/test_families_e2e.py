"""`tune.py --smoke` for every family (and `all`) on CPU-sized stand-ins: real Ray, real MLflow.
Follows the registry, so a new family gets its smoke study without a new test."""
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from analysis.runs import latest_study, trial_rows
from search_spaces import ALL, FAMILIES, arch_choices

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e


def smoke(family, tmp_path, samples):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [sys.executable, str(ROOT / "tune.py"), "--family", family, "--smoke", "--num-samples", str(samples),
           "--max-epochs", "1", "--experiment", f"smoke-{family}", "--mlflow-uri", uri,
           "--storage", str(tmp_path / "ray_results"), "--no-dashboard"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    client = MlflowClient(uri)
    exp, parent = latest_study(client, f"smoke-{family}")
    return out, trial_rows(client, exp.experiment_id, parent.info.run_id)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_smoke_logs_the_architecture_of_every_trial(family, tmp_path):
    _, rows = smoke(family, tmp_path, samples=2)
    assert len(rows) == 2 and all(r.status == "FINISHED" and r.epochs == 1 for r in rows)
    stand_ins = arch_choices(FAMILIES[family], standins=True)
    assert all(r.family == family and r.arch in stand_ins and r.params["arch"] == r.arch for r in rows)


def test_all_runs_every_family_in_one_study_and_ranks_them(tmp_path):
    out, rows = smoke(ALL, tmp_path, samples=len(FAMILIES))
    assert {r.family for r in rows} == set(FAMILIES)
    assert "families ranked by their best trial:" in out
    ranked = out.split("families ranked by their best trial:")[1]
    assert all(f in ranked for f in FAMILIES)
