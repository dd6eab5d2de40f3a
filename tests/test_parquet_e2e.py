"""A study on Parquet shards in the Hugging Face layout (written here from the built-in set, with two label
columns and one damaged row): --label picks the second column, the class names come from the schema (in its order,
not alphabetical), the damaged row is left out and named, and the study's winner is evaluated on the test split
under those names. The split manifest records each row's shard, row and version. (Both columns' labelling is
checked without a study in test_sources.py: one study here is the wiring's, as each takes ~80 s.)"""

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.parquet_set import PERIODS, write_shards
from trainables.data.builtin_dataset import ensure_builtin_dataset
from trainables.tracking.mlflow_runs import latest_study

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e


def test_a_study_on_parquet_shards_learns_the_label_column_it_is_given(tmp_path_factory):
    label, classes = "period", PERIODS  # ClassLabel order: ["edo", "nineteenth_century", ...]
    shards = tmp_path_factory.mktemp("builtin-parquet")
    write_shards(ensure_builtin_dataset(), shards, shards=4, row_group=100, corrupt=1)
    work = tmp_path_factory.mktemp(f"parquet-{label}")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    cmd = [sys.executable, str(ROOT / "tune.py"), "--data", str(shards), "--label", label, "--smoke"]
    cmd += ["--num-samples", "1", "--max-epochs", "1", "--experiment", label, "--mlflow-uri", uri, "--no-dashboard"]
    cmd += ["--set", "width=0.25"]  # the smallest networks: what is tested is the data's path
    proc = subprocess.run(
        cmd,
        cwd=work,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "ARTSWEEP_CACHE": str(work / "cache")},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert f"classes {len(classes)}," in out and "images listed, not opened" in out and "1 undecodable" in out
    first = shards / "train-00000-of-00004.parquet#row=0"
    assert f"left out {first}: not an image" in out
    client = MlflowClient(uri)
    _, parent = latest_study(client, label)
    assert parent.data.params["label"] == label and parent.data.params["data"] == str(shards)
    folder = Path(client.download_artifacts(parent.info.run_id, "dataset", str(work / "dl")))
    report = json.loads((folder / "report.json").read_text())
    assert [b["path"] for b in json.loads((folder / "undecodable.json").read_text())["undecodable"]] == [str(first)]
    assert report["classes"] == classes and report["source"]["kind"] == "parquet"
    rows = list(csv.DictReader(io.StringIO((folder / "splits.csv").read_text())))
    assert len(rows) == 930 and all("#row=" in r["path"] and r["version"] for r in rows)
    assert {r["label"] for r in rows} == set(classes)
    assert "test macro F1" in out or "test_macro_f1" in out, out[-3000:]  # the study scored its winner
    evaluate = [sys.executable, "-m", "analysis.evaluate", "--experiment", label, "--mlflow-uri", uri]
    proc = subprocess.run(
        [*evaluate, "--bootstrap", "50", "--out", str(work / "evaluation")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "ARTSWEEP_CACHE": str(work / "cache")},
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    evaluated = [a.path for a in client.list_artifacts(parent.info.run_id, "evaluation")]
    assert len(evaluated) == 1, evaluated
    per_class = Path(client.download_artifacts(parent.info.run_id, f"{evaluated[0]}/per_class.csv", str(work)))
    names = [r[""] for r in csv.DictReader(io.StringIO(per_class.read_text()))]
    assert names[: len(classes)] == classes, names
