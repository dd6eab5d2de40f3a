"""The registered model behind the REAL `mlflow models serve`, and analysis.predict's CLI.

python -m pytest tests/test_serving.py -x -q

A checkpoint is written as a trial would (no Ray), logged to a fresh SQLite store, registered with
analysis.publishing.models.register, served by analysis.scoring_server from another cwd with the project importable
only from the model's own code/ folder, and every answer is checked against trainables.checkpoint.Classifier
run here.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import subprocess
import sys
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from analysis import predict, serving
from analysis.publishing import models
from analysis.reading.mlflow_env import using_tracking_uri
from analysis.scoring_server import scoring_server
from search_spaces import get_family
from tests.conftest import TINY_COUNTS
from trainables import checkpoint
from trainables.pretrained import Weights

pytestmark = pytest.mark.integration  # a real `mlflow models serve`, no study

NORM = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
CLASSES = sorted(TINY_COUNTS)
NAME = "painter"


NO_PROJECT = """
import os, sys
from importlib.machinery import PathFinder


class OnlyModelCode:
    def find_spec(self, name, path=None, target=None):
        if name not in ("trainables", "search_spaces", "analysis", "sweep", "tune"):
            return None
        spec = PathFinder.find_spec(name, [p for p in sys.path if os.path.basename(p) == "code"])
        if spec is None:
            raise ModuleNotFoundError(f"{name}: only a model's code/ folder may provide it here")
        return spec


sys.meta_path.insert(0, OnlyModelCode())
"""


@dataclass
class Served:
    url: str
    ckpt: Path
    clf: checkpoint.Classifier
    uri: str


def _checkpoint(folder: Path) -> Path:
    torch.manual_seed(0)
    cfg = get_family("scratch").config("simple_cnn", width=0.25)
    model = cfg.family.build(cfg, len(CLASSES), 32, Weights("none"))
    with torch.no_grad():  # spread the classes' logits: top-k order must not hinge on float noise between processes
        cfg.family.head(model).bias.copy_(torch.arange(len(CLASSES), dtype=torch.float32) * 1.5)
    return checkpoint.save(folder, model, CLASSES, cfg, 32, NORM, "crop", 1, {"val_macro_f1": 0.5})


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serving")
    ckpt = _checkpoint(tmp)
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("serving", artifact_location=(tmp / "artifacts").as_uri())
    run = client.create_run(exp, run_name="trial")  # a trial's child run, as the study leaves it
    client.log_artifact(run.info.run_id, str(ckpt), "checkpoint")
    client.set_terminated(run.info.run_id)
    mv = models.register(client, run.info.run_id, NAME)
    assert (mv.name, str(mv.version)) == (NAME, "1") and mv.tags["trial_run_id"] == run.info.run_id
    assert client.get_run(run.info.run_id).info.status == "FINISHED"  # the trial run was not reopened

    # Serve as on a machine without this project: another cwd, and a sitecustomize (run by every Python the
    # server starts, uvicorn's too) that lets only a model's code/ folder provide the project's packages.
    cwd = tmp_path_factory.mktemp("elsewhere")
    (cwd / "sitecustomize.py").write_text(NO_PROJECT)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "PYTHONPATH": os.pathsep.join([str(cwd), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    blocked = subprocess.run(
        [sys.executable, "-c", "import trainables"], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert blocked.returncode != 0 and "only a model's code/" in blocked.stderr, blocked.stderr
    with scoring_server(f"models:/{NAME}/1", env, cwd, tmp / "serve.log", timeout_s=120) as (base, up_s):
        print(f"mlflow models serve answered /ping after {up_s:.1f} s")
        yield Served(f"{base}/invocations", ckpt, checkpoint.load(ckpt), uri)


def _images(folder: Path) -> list[Path]:
    return [folder / "cubism" / "000.jpg", folder / "impressionism" / "001.png"]  # a JPEG and a PNG


def assert_matches(predictions: list[dict], local: list[list[tuple[str, float]]], k: int):
    assert len(predictions) == len(local)
    for pred, ref in zip(predictions, local):
        assert len(pred["classes"]) == len(pred["probabilities"]) == k
        assert set(pred["classes"]) <= set(CLASSES)
        assert sum(pred["probabilities"]) <= 1 + 1e-6
        assert pred["classes"] == [c for c, _ in ref]
        assert pred["probabilities"] == pytest.approx([p for _, p in ref], abs=1e-4)


@pytest.mark.parametrize("fmt", ["dataframe_split", "dataframe_records", "inputs"])
def test_served_top_k_equals_the_local_classifier(served, tiny_folder, fmt):
    files = _images(tiny_folder)
    data = [_b64(f.read_bytes()) for f in files]
    payload = {
        "dataframe_split": {"columns": ["image"], "data": [[d] for d in data]},
        "dataframe_records": [{"image": d} for d in data],
        "inputs": {"image": data},
    }[fmt]
    status, body = _post(served.url, {fmt: payload, "params": {"k": 3}})
    assert status == 200, body
    assert_matches(body["predictions"], served.clf.top_k(files, 3), 3)


def test_default_k_is_five_or_every_class(served, tiny_folder):
    f = _images(tiny_folder)[0]
    status, body = _post(served.url, {"dataframe_split": {"columns": ["image"], "data": [[_b64(f.read_bytes())]]}})
    assert status == 200, body
    assert_matches(body["predictions"], served.clf.top_k([f], 5), min(5, len(CLASSES)))
    assert sum(body["predictions"][0]["probabilities"]) == pytest.approx(1, abs=1e-5)  # k covers all classes


@pytest.mark.parametrize(
    "bad, reason", [(b"not an image", "not an image"), (None, "undecodable")], ids=["garbage", "truncated_jpeg"]
)
def test_a_corrupt_image_is_a_400_naming_the_row(served, tiny_folder, bad, reason):
    good = _images(tiny_folder)[0].read_bytes()
    bad = bad if bad is not None else good[: len(good) // 2]  # a truncated JPEG
    status, body = _post(served.url, {"dataframe_split": {"columns": ["image"], "data": [[_b64(good)], [_b64(bad)]]}})
    assert status == 400, body
    assert body["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "row 1:" in body["message"] and reason in body["message"] and "row 0" not in body["message"]


def test_in_process_pyfunc_takes_raw_bytes(served, tiny_folder):
    import mlflow
    from mlflow.exceptions import MlflowException

    files = _images(tiny_folder)
    with using_tracking_uri(served.uri):
        model = mlflow.pyfunc.load_model(f"models:/{NAME}/1")
    out = model.predict(pd.DataFrame({"image": [f.read_bytes() for f in files]}), params={"k": 2})
    assert_matches(out.to_dict("records"), served.clf.top_k(files, 2), 2)
    with pytest.raises(MlflowException, match="row 0: zero-byte file"):
        model.predict(pd.DataFrame({"image": [b""]}))


def test_predict_cli(served, tiny_folder, tmp_path, capsys):
    files = _images(tiny_folder)
    local = served.clf.top_k(files, 3)
    for source in (["--checkpoint", str(served.ckpt)], ["--model", f"models:/{NAME}/1", "--mlflow-uri", served.uri]):
        assert predict.main([*map(str, files), *source, "-k", "3"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines == [f"{f}: " + ", ".join(f"{c} {p:.3f}" for c, p in ref) for f, ref in zip(files, local)]

    junk, missing = tmp_path / "junk.jpg", tmp_path / "missing.png"
    junk.write_bytes(b"not an image")
    argv = [str(files[0]), str(junk), str(missing), str(files[1]), "--checkpoint", str(served.ckpt)]
    assert predict.main(argv) == 2  # bad input: exit 2, and the good files are still classified
    out, err = capsys.readouterr()
    assert [line.split(":")[0] for line in out.splitlines()] == [str(files[0]), str(files[1])]
    assert f"error: {junk}: not an image" in err and f"error: {missing}: No such file" in err
    with pytest.raises(SystemExit) as e:  # no source given: argparse's usage error
        predict.main([str(files[0])])
    assert e.value.code == 2


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header says width x height (no pixel data): what a decompression bomb looks like up front."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _post_raw(url: str, body: bytes) -> tuple[int, bytes]:
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_the_served_model_refuses_abuse_without_echoing_it(served):
    """A 20000 x 20000 PNG is refused from its header (no 1.2 GB decode); a body over the request limit is a 413
    before parsing; a malformed body is a 400 whose message does not quote it."""
    code, body = _post(served.url, {"inputs": {"image": [_b64(_png_header(20_000, 20_000))]}})
    assert code == 400 and "400 MP) is over the 89 MP limit" in body["message"], body
    code, raw = _post_raw(served.url, b"{" + b"x" * (serving.MAX_REQUEST_BYTES + 1))
    assert code == 413 and b"over the 64 MiB limit" in raw and len(raw) < 1000
    code, raw = _post_raw(served.url, b"{" + b"x" * 5_000_000)
    assert code == 400 and len(raw) < 5 * serving.MAX_ERROR_CHARS, len(raw)
