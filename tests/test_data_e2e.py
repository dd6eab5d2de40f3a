"""A study on a CSV manifest: one split and one decode cache for every trial, the dataset report on MLflow."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from analysis.reading.runs import trial_rows
from trainables.data.scan import scan
from trainables.tracking.mlflow_runs import latest_study

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e


def test_two_class_study_on_csv_manifest_shares_split_and_cache(tiny_folder, tmp_path):
    """A 2-class study (cats vs dogs shaped) from a CSV manifest: trains, reports and evaluates without top-5."""
    source = scan(tiny_folder)
    two = source.classes[:2]
    manifest = tiny_folder.parent / "labels.csv"  # paths in a manifest are relative to it
    (tiny_folder.parent / "broken.jpg").write_bytes(b"")
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        w.writerows(
            (str(Path(p).relative_to(tiny_folder.parent)), source.classes[label])
            for p, label in zip(source.paths, source.labels)
            if source.classes[label] in two
        )
        w.writerow(["broken.jpg", "cubism"])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cache_dir = tmp_path / "cache"
    cmd = [
        sys.executable,
        str(ROOT / "tune.py"),
        "--data",
        str(manifest),
        "--smoke",
        "--num-samples",
        "2",
        "--max-epochs",
        "1",
        "--set",
        "width=0.25",  # the smallest networks: what is tested is the data's path
        "--experiment",
        "csv",
        "--mlflow-uri",
        uri,
        "--storage",
        str(tmp_path / "ray"),
        "--no-dashboard",
    ]
    proc = subprocess.run(
        cmd,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "ARTSWEEP_CACHE": str(cache_dir)},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "decode cache built" in out and "broken.jpg: zero-byte file" in out
    client = MlflowClient(uri)
    exp, parent = latest_study(client, "csv")
    rows = trial_rows(client, exp.experiment_id, parent.info.run_id)
    assert len(rows) == 2
    tags = [client.get_run(r.run_id).data.tags for r in rows]
    assert len({t["split_manifest"] for t in tags}) == 1 and len({t["decode_cache"] for t in tags}) == 1
    assert all(t["decode_cache_built_by_trial"] == "false" for t in tags)  # built once, by the study
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "dataset")}
    assert {"dataset/report.json", "dataset/classes.png", "dataset/sizes.png"} <= artifacts
    assert any(a.endswith(".csv") for a in artifacts)
    report = json.loads(
        Path(client.download_artifacts(parent.info.run_id, "dataset/report.json", str(tmp_path))).read_text()
    )
    assert report["skipped"] == [{"path": str(tiny_folder.parent / "broken.jpg"), "reason": "zero-byte file"}]
    assert all("val_top5" not in client.get_run(r.run_id).data.metrics for r in rows)  # 2 classes: no top-5
    proc = subprocess.run(
        [sys.executable, "-m", "analysis.evaluate", "--experiment", "csv", "--mlflow-uri", uri],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "ARTSWEEP_CACHE": str(cache_dir)},
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    won = client.get_run(client.get_run(parent.info.run_id).data.tags["winner_run_id"]).data.metrics
    assert "test_macro_f1_ci_low" in won and "test_top5" not in won  # evaluate's, on the winning trial's run
    html = [
        a.path
        for a in client.list_artifacts(parent.info.run_id, "evaluation")
        for a in client.list_artifacts(parent.info.run_id, a.path)
        if a.path.endswith("report.html")
    ]
    assert html, "no evaluation report"
