"""The served model's request caps, against the REAL `mlflow models serve` (the session's `served`, shared with
tests/test_serving.py): a request over a cap gets a 4xx naming it, fast and without the server's memory growing,
and a body too large (or of unknown size) is refused from its headers before any of it is sent.

python -m pytest tests/test_serving_limits.py -q
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import socket
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import psutil
import pytest

from analysis import serving
from trainables.data.builtin_dataset import STYLES, render

HEADERS_ONLY = "POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{}\r\n"


def _tiny_png() -> bytes:
    """A real 16 x 16 PNG (~700 bytes): 10,000 of them fit in a request's bytes many times over."""
    buf = io.BytesIO()
    render(next(iter(STYLES)), np.random.default_rng(0)).resize((16, 16)).save(buf, format="PNG")
    return buf.getvalue()


def _post(url: str, rows: int, k: int = 3) -> tuple[int, dict]:
    cell = base64.b64encode(_tiny_png()).decode()
    body = {"dataframe_split": {"columns": ["image"], "data": [[cell]] * rows}, "params": {"k": k}}
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _server(port: int) -> psutil.Process:
    """The process answering on `port` (uvicorn, which holds the model)."""
    (pid,) = {c.pid for c in psutil.net_connections("tcp") if c.laddr.port == port and c.status == psutil.CONN_LISTEN}
    return psutil.Process(pid)


class PeakRSS(threading.Thread):
    """How far the resident set of `process` grew above its size at the start, at its highest (sampled every
    10 ms while the block runs), MB."""

    def __init__(self, process: psutil.Process):
        super().__init__(daemon=True)
        self.process, self.done = process, threading.Event()
        self.start_rss = self.peak = process.memory_info().rss

    def run(self):
        while not self.done.wait(0.01):
            self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def grown_mb(self) -> float:
        return (self.peak - self.start_rss) / 2**20

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.join()


def _headers_only(port: int, *headers: str) -> tuple[int, dict, float]:
    """Send a POST's headers and not a byte of its body; the server's answer (status, JSON, seconds)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        t0 = time.perf_counter()
        sock.sendall(HEADERS_ONLY.format("".join(f"{h}\r\n" for h in headers)).encode())
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, json.loads(response.read()), time.perf_counter() - t0


@pytest.mark.integration
def test_ten_thousand_rows_are_refused_fast_in_bounded_memory(served):
    server = _server(served.port)
    with PeakRSS(server) as rss:
        t0 = time.perf_counter()
        status, body = _post(served.url, 10_000)
        seconds = time.perf_counter() - t0
    print(f"10,000 rows: HTTP {status} in {seconds:.2f} s, server RSS +{rss.grown_mb:.0f} MB at its peak")
    assert status == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE", body
    assert f"10000 images in one request, over the limit of {serving.MAX_ROWS}" in body["message"], body
    assert len(body["message"]) < 300  # the reason alone: not the DataFrame MLflow quotes before it
    assert seconds < 5 and rss.grown_mb < 200


@pytest.mark.integration
def test_the_row_cap_admits_a_full_request(served):
    status, body = _post(served.url, serving.MAX_ROWS, k=serving.MAX_K)
    assert status == 200, body
    assert len(body["predictions"]) == serving.MAX_ROWS
    assert all(len(p["classes"]) == len(served.clf.classes) for p in body["predictions"])  # k cut to the classes


@pytest.mark.integration
def test_k_over_its_cap_is_refused(served):
    status, body = _post(served.url, 1, k=serving.MAX_K + 1)
    assert status == 400 and f"params.k must be 1 to {serving.MAX_K}" in body["message"], body


@pytest.mark.integration
def test_an_oversized_content_length_gets_413_before_the_body_is_sent(served):
    status, body, seconds = _headers_only(served.port, f"Content-Length: {2**30}")
    print(f"Content-Length 1 GiB, no body sent: HTTP {status} after {seconds:.3f} s")
    assert status == 413 and "1024.0 MiB is over the 64 MiB limit" in body["message"], body
    assert seconds < 5


@pytest.mark.integration
def test_a_body_of_unknown_size_is_refused_before_it_is_read(served):
    status, body, _ = _headers_only(served.port, "Transfer-Encoding: chunked")
    assert status == 411 and "Content-Length" in body["message"], body


@pytest.mark.unit
def test_the_caps_come_from_the_environment(monkeypatch):
    monkeypatch.delenv(serving.LIMIT_ENV["rows"], raising=False)
    assert serving.limit("rows", serving.MAX_ROWS) == 64
    monkeypatch.setenv(serving.LIMIT_ENV["rows"], "16")
    assert serving.limit("rows", serving.MAX_ROWS) == 16
    for bad in ("0", "-3", "lots", "1.5"):
        monkeypatch.setenv(serving.LIMIT_ENV["rows"], bad)
        with pytest.raises(ValueError, match="ARTSWEEP_SERVE_MAX_ROWS=.* must be a whole number >= 1"):
            serving.limit("rows", serving.MAX_ROWS)
