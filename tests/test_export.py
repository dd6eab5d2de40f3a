"""The ONNX export and its gate (analysis.export, analysis.publishing.onnx_model), served by the REAL `mlflow models
serve`.

python -m pytest tests/test_export.py -q --durations=0

No Ray, no study: for one stand-in of every family and for timm's resnet18 (random init, nothing downloaded), a
checkpoint is written as a trial would and logged to a trial run of a fresh SQLite store whose parent run holds the
split manifest of a small built-in-styles folder (tests/conftest.py's tiny_folder). Each is exported, gated on that
validation split, registered (format=onnx) and served from another cwd where only the model's code/ folder provides
the project; the same request goes to the server and to the checkpoint's PyTorch Classifier here, and every image
gets the same top-1. The model made to fail the gate: its exported file's classifier bias is shifted after the
export, as a silent exporter bug would leave it (the graph runs, its numbers are wrong); the command refuses it with
one line and exit 1, and nothing is logged or registered.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import numpy as np
import onnx
import pytest
import requests
import torch
from mlflow.tracking import MlflowClient

from analysis import export, predict
from analysis.publishing import onnx_model
from analysis.publishing.models import model_name
from analysis.reading.mlflow_env import using_tracking_uri
from analysis.scoring_server import scoring_server
from search_spaces import FAMILIES, cnn, get_family
from tests.served_model import NO_PROJECT
from tests.test_served_requirements import ONLY_DECLARED, _declared_modules
from trainables import checkpoint
from trainables.data import dataset
from trainables.data.scan import scan
from trainables.pretrained import Weights
from trainables.tracking.mlflow_runs import SPLIT_MANIFEST

integration = pytest.mark.integration  # real `mlflow models serve`, no study (the gate's arithmetic: a unit test)

# timm's resnet18 as a family of this test alone (registered while the module runs): the cnn family's build
RESNET18 = replace(cnn.FAMILY, name="cnn_resnet18", archs={"resnet18": "resnet18"}, standins={}, recipes=())
MODELS = {  # model id -> (family, arch, input side px): a stand-in of every family, and resnet18
    "scratch": ("scratch", "simple_cnn", 32),
    "cnn": ("cnn", "test_resnet", 64),
    "transformers": ("transformers", "test_vit", 64),
    "hybrid": ("hybrid", "test_resnet_bigru", 64),
    "resnet18": (RESNET18.name, "resnet18", 224),
}
EXPERIMENT = "export"
NORM = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


class Store:
    """A fresh SQLite store with a study's parent run (its split manifest) and one trial run per checkpoint."""

    def __init__(self, tmp, folder):
        self.tmp, self.uri = tmp, f"sqlite:///{tmp / 'mlflow.db'}"
        self.client = MlflowClient(self.uri)
        self.exp = self.client.create_experiment(EXPERIMENT, artifact_location=(tmp / "artifacts").as_uri())
        self.parent = self.client.create_run(self.exp, run_name="study").info.run_id
        self.splits = dataset.make_splits(scan(folder), 0.2, 0.2, seed=0)
        manifest = dataset.write_manifest(self.splits, tmp / "splits.csv")
        self.client.log_text(self.parent, manifest.read_text(), SPLIT_MANIFEST)

    def trial(self, key: str) -> tuple[str, checkpoint.Classifier]:
        """(trial run id, its checkpoint loaded here): random weights, as the trial's best epoch."""
        family, arch, size = MODELS[key]
        torch.manual_seed(0)
        cfg = get_family(family).config(arch, standins=True)
        model = cfg.family.build(cfg, len(self.splits.classes), size, Weights("none"))
        folder = Path(tempfile.mkdtemp(prefix=key, dir=self.tmp))
        path = checkpoint.save(folder, model, self.splits.classes, cfg, size, NORM, "crop", 1, {})
        tags = {"mlflow.parentRunId": self.parent, "split_manifest": f"{self.parent}/{SPLIT_MANIFEST}"}
        run = self.client.create_run(self.exp, run_name=f"trial_{key}", tags=tags).info.run_id
        self.client.log_artifact(run, str(path), "checkpoint")
        self.client.set_terminated(run)
        return run, checkpoint.load(path)


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_folder):
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(FAMILIES, RESNET18.name, RESNET18)  # not register(): gone again when the module ends
        yield Store(tmp_path_factory.mktemp("export"), tiny_folder)


@pytest.fixture(scope="module")
def exported(store, tmp_path_factory):
    """Every model exported, gated, registered and served: {id: (run id, Classifier, version, URL)}. Each server
    starts as soon as its model is registered, while the next model exports (their start-ups overlap)."""
    cwd = tmp_path_factory.mktemp("elsewhere")  # no checkout here; sitecustomize lets only code/ provide it
    (cwd / "sitecustomize.py").write_text(NO_PROJECT)
    env = {**os.environ, "MLFLOW_TRACKING_URI": store.uri, "PYTHONPATH": str(cwd), "OMP_NUM_THREADS": "1"}
    served = {}
    with ExitStack() as stack, ThreadPoolExecutor(len(MODELS)) as pool:  # the pool waits for every start-up first
        for key in MODELS:
            run, clf = store.trial(key)
            mv = onnx_model.export_and_register(store.client, run, model_name(EXPERIMENT))
            server = scoring_server(f"models:/{mv.name}/{mv.version}", env, cwd, cwd / f"{key}.log")
            served[key] = (run, clf, mv, pool.submit(stack.enter_context, server))  # waits for /ping in its thread
        yield {key: (run, clf, mv, started.result()[0]) for key, (run, clf, mv, started) in served.items()}


def _request(files) -> dict:
    return {
        "dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(f.read_bytes()).decode()] for f in files]},
        "params": {"k": 3},
    }


def _images(tiny_folder):
    return sorted(tiny_folder.rglob("*.*"))[::6]  # 14 images, every class, JPEG and PNG


@pytest.mark.parametrize("key", MODELS)
@integration
def test_the_served_export_answers_as_the_pytorch_model(exported, tiny_folder, key):
    run, clf, mv, url = exported[key]
    assert (
        mv.tags["format"] == "onnx" and mv.tags["trial_run_id"] == run and mv.tags["exporter"] in onnx_model.EXPORTERS
    )
    assert float(mv.tags["gate_top1_agreement"]) >= onnx_model.MIN_TOP1_AGREEMENT
    assert float(mv.tags["gate_max_prob_diff"]) <= onnx_model.MAX_PROB_DIFF
    files = _images(tiny_folder)
    r = requests.post(f"{url}/invocations", json=_request(files), timeout=120)
    assert r.status_code == 200, r.text
    local = clf.top_k(files, 3)  # PyTorch, in this process
    for served, ref in zip(r.json()["predictions"], local, strict=True):
        assert served["classes"][0] == ref[0][0]
        assert served["probabilities"] == pytest.approx([p for _, p in ref], abs=onnx_model.MAX_PROB_DIFF)


@integration
def test_the_export_is_one_pyfunc_with_the_onnx_flavour(exported, store, tiny_folder, capsys):
    run, clf, mv, _ = exported["scratch"]
    uri = f"models:/{mv.name}/{mv.version}"
    with using_tracking_uri(store.uri):
        assert {"python_function", "onnx"} <= set(mlflow.models.get_model_info(uri).flavors)
        graph = mlflow.onnx.load_model(uri)  # MLflow's onnx flavour: the graph itself
    meta = json.loads({p.key: p.value for p in graph.metadata_props}["artsweep"])
    assert meta["classes"] == clf.classes and meta["image_size"] == clf.image_size
    gate = store.client.get_run(run).data.tags
    assert gate["onnx_gate"] == "passed" and gate["onnx_exporter"] == mv.tags["exporter"]
    files = _images(tiny_folder)[:2]
    assert predict.main([*map(str, files), "--model", uri, "--mlflow-uri", store.uri, "-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{f}: " + ", ".join(f"{c} {p:.3f}" for c, p in ref) for f, ref in zip(files, clf.top_k(files, 2))]


@integration
def test_the_export_runs_with_only_its_declared_requirements(exported, store, tiny_folder, tmp_path):
    """tests/test_served_requirements.py's check, on an export: a fresh Python refusing every module the model's
    requirements.txt does not bring (ONNX Runtime must be declared) loads and runs it."""
    _, clf, mv, _ = exported["cnn"]
    model_id = mv.source.removeprefix("models:/")  # the registered version's logged model
    folder = Path(urlparse(store.client.get_logged_model(model_id).artifact_location).path)
    allowed = _declared_modules(folder / "requirements.txt")
    assert {"onnxruntime", "onnx", "torch"} <= allowed and "trainables" not in allowed
    image = _images(tiny_folder)[0]
    argv = [sys.executable, "-c", ONLY_DECLARED, str(folder), str(image), json.dumps(sorted(allowed))]
    proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = json.loads(proc.stdout.strip().splitlines()[-1])
    assert row["classes"] == [c for c, _ in clf.top_k([image], 2)[0]]


def _shift_head_bias(path, classes: int) -> None:
    """The exported file with its classifier's bias (the last [classes] float initializer) shifted by 0, 4, 8 ...:
    every image's probabilities move far from PyTorch's."""
    model = onnx.load(str(path))
    bias = [t for t in model.graph.initializer if list(t.dims) == [classes]][-1]
    values = onnx.numpy_helper.to_array(bias) + 4.0 * np.arange(classes, dtype=np.float32)
    bias.CopyFrom(onnx.numpy_helper.from_array(values, bias.name))
    onnx.save(model, str(path))


@integration
def test_an_export_that_fails_the_gate_is_refused_and_not_registered(exported, store, monkeypatch, capsys):
    run, clf = store.trial("scratch")
    real = onnx_model.to_onnx

    def broken(model, image_size, path, exporter):
        real(model, image_size, path, exporter)
        _shift_head_bias(path, len(clf.classes))

    monkeypatch.setattr(onnx_model, "to_onnx", broken)
    name = model_name(EXPERIMENT)
    before = len(store.client.search_model_versions(f"name='{name}'"))
    with pytest.raises(SystemExit) as e:
        export.main(["--run", run, "--format", "onnx", "--mlflow-uri", store.uri])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 1, err
    (line,) = err.splitlines()  # one line, naming the figures and the thresholds
    assert line.startswith(f"analysis.export: refused: run {run}: the ONNX export failed the gate on ")
    assert "(needs top-1 agreement >= 0.99 and max probability difference <= 0.001): dynamo: top-1 agreement" in line
    assert "; torchscript: top-1 agreement " in line and line.endswith("; not registered")
    assert len(store.client.search_model_versions(f"name='{name}'")) == before  # no version registered
    assert not store.client.search_logged_models([store.exp], filter_string=f"source_run_id = '{run}'")  # nor logged
    gate = store.client.download_artifacts(run, onnx_model.GATE_ARTIFACT, str(store.tmp / "refused"))
    gate = json.loads(Path(gate).read_text())
    assert gate["passed"] is False and [g["exporter"] for g in gate["gates"]] == ["dynamo", "torchscript"]
    assert all(g["max_prob_diff"] > onnx_model.MAX_PROB_DIFF for g in gate["gates"])


@integration
def test_the_command_registers_and_refuses_bad_input(exported, store, capsys):
    run = exported["scratch"][0]
    assert export.main(["--run", run, "--format", "onnx", "--mlflow-uri", store.uri, "--alias", "onnx"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert (
        out[0].startswith("gate passed on ")
        and " validation images with the dynamo exporter: top-1 agreement 1.0000 (>= 0.99)" in out[0]
    )
    assert (
        out[1].startswith(f"registered models:/{model_name(EXPERIMENT)}/")
        and "(format=onnx): trial trial_scratch (scratch/simple_cnn" in out[1]
    )
    assert "mlflow models serve -m models:/" in "\n".join(out)
    for argv, code, says in [
        (["--run", "0" * 32, "--format", "onnx"], 2, "analysis.export: error: "),
        (["--run", run, "--format", "tflite"], 2, "invalid choice: 'tflite'"),
        (
            ["--run", run, "--format", "onnx", "--experiment", "other"],
            2,
            f"run {run} is in experiment 'export', not 'other'",
        ),
    ]:
        with pytest.raises(SystemExit) as e:
            export.main([*argv, "--mlflow-uri", store.uri])
        assert e.value.code == code and says in capsys.readouterr().err


@pytest.mark.unit
def test_the_gate_takes_agreement_and_probability_difference_from_softmax():
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, 1.1, 0.0]])
    labels = np.array([0, 1, 2, 0])
    same = onnx_model.compare(logits, logits + 1e-9, labels, "dynamo", 0.99, 1e-3)  # a shift per row: same softmax
    assert same.passed and same.top1_agreement == 1 and same.max_prob_diff < 1e-12
    assert same.accuracy_pytorch == same.accuracy_onnx == 0.75
    flipped = logits.copy()
    flipped[3] = [1.1, 1.0, 0.0]  # the near tie of the last image goes the other way
    gate = onnx_model.compare(logits, flipped, labels, "dynamo", 0.99, 1e-3)
    p = np.exp([1.1, 1.0, 0.0]) / np.exp([1.1, 1.0, 0.0]).sum()
    assert gate.top1_agreement == 0.75 and gate.max_prob_diff == pytest.approx(p[0] - p[1])
    assert not gate.passed and gate.accuracy_onnx == 1.0
    assert onnx_model.compare(logits, flipped, labels, "dynamo", 0.75, 0.05).passed  # 0.0425 apart: within 0.05
    assert not onnx_model.compare(logits, flipped, labels, "dynamo", 0.75, 0.04).passed
