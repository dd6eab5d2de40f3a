"""The registered model behind the REAL `mlflow models serve`, and analysis.predict's CLI.

python -m pytest tests/test_serving.py -x -q

The served model is the session's `served` (tests/conftest.py, tests/served_model.py): a checkpoint written as a
trial would (no Ray), logged to a fresh SQLite store, registered with analysis.publishing.models.register, served by
analysis.scoring_server from another cwd with the project importable only from the model's own code/ folder.
Every answer is checked against trainables.checkpoint.Classifier run here.
"""

from __future__ import annotations

import base64
import http.client
import json
import struct
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
import pytest

from analysis import predict, serving
from analysis.reading.mlflow_env import using_tracking_uri
from tests.conftest import TINY_COUNTS
from tests.served_model import NAME

pytestmark = pytest.mark.integration  # a real `mlflow models serve`, no study

CLASSES = sorted(TINY_COUNTS)  # the served model's classes (tests/conftest.py's `served`)


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


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
    """POST as keep-alive clients do (requests, curl): the server answers a body over its limit from the headers
    and discards the rest. (urllib sends `Connection: close`, after which uvicorn closes the socket right after the
    413, and a client still writing the body sees a reset instead.)"""
    conn = http.client.HTTPConnection(urlparse(url).hostname, urlparse(url).port, timeout=120)
    try:
        conn.request("POST", urlparse(url).path, body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_the_served_model_refuses_abuse_without_echoing_it(served):
    """A 20000 x 20000 PNG is refused from its header (no 1.2 GB decode); a body over the request limit is a 413
    before parsing; a malformed body is a 400 whose message does not quote it."""
    code, body = _post(served.url, {"inputs": {"image": [_b64(_png_header(20_000, 20_000))]}})
    assert code == 400 and "400 MP) is over the 89 MP limit" in body["message"], body
    code, raw = _post_raw(served.url, b"{" + b"x" * (serving.MAX_REQUEST_BYTES + 1))
    assert code == 413 and b"over the 64 MiB limit" in raw and len(raw) < 1000
    code, raw = _post_raw(served.url, b"{" + b"x" * 5_000_000)
    assert code == 400 and len(raw) < 5 * serving.MAX_ERROR_CHARS, len(raw)
