"""Write load on the tracking server: many trials logging their epochs at once, on SQLite and on PostgreSQL.

python benchmarks/tracking_load.py [--processes 32] [--duration 60] [--metrics 10] [--workers 4]
                                   [--backends sqlite,postgresql]

Per backend, a real server on loopback: `mlflow server` on a SQLite file (what the cluster's head ran before:
no auth), and cluster/mlflow_server.sh (basic-auth app, PostgreSQL started here in a temp folder, artifacts on
moto's S3 stand-in: tests/tracking_stack.py), both with --workers uvicorn workers. --processes processes (as
many trials writing at once: 64 with packed GPUs) each make a run, wait for the others, then send one
log_batch of --metrics metrics per step (one epoch's record) back to back for --duration seconds, through
MlflowClient with its retries off, so a refused write counts as an error instead of being retried.
Prints per backend: writes/s (log_batch calls acknowledged), p50/p99 latency of a call, errors, and rows lost
(metric rows sent minus those counted back from the store: must be 0 on PostgreSQL). Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import closing, contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.servers import BIN, wait_http  # noqa: E402
from tests.tracking_stack import tracking_stack  # noqa: E402
from trainables.net import free_port  # noqa: E402

COUNT_SQL = "SELECT count(*) FROM metrics WHERE run_uuid IN ({})"


def writer(uri: str, env: dict, args, barrier, results) -> None:
    """One trial: a run, then one log_batch per step for args.duration seconds. Puts (run_id, sent rows,
    latencies of acknowledged calls in s, error texts) on `results`."""
    os.environ.update(env)
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("load")
    run_id = client.create_run(exp.experiment_id).info.run_id
    barrier.wait(timeout=600)
    lat, errors, sent, step, end = [], [], 0, 0, time.monotonic() + args.duration
    while time.monotonic() < end:
        now = int(time.time() * 1000)
        batch = [Metric(f"metric_{i}", float(step * i), now, step) for i in range(args.metrics)]
        t0 = time.perf_counter()
        try:
            client.log_batch(run_id, metrics=batch)
            lat.append(time.perf_counter() - t0)
        except Exception as e:  # a refused or failed write: counted, and its rows are sent all the same
            errors.append(f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}")
        sent += len(batch)
        step += 1
    results.put((run_id, sent, lat, errors))


def run_load(uri: str, env: dict, args) -> tuple[list[str], int, list[float], list[str], float]:
    """args.processes writers at once: (run ids, rows sent, latencies, error texts, seconds from the start line)."""
    from mlflow.tracking import MlflowClient

    os.environ.update(env)
    MlflowClient(uri).create_experiment("load")
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(args.processes + 1), ctx.Queue()
    procs = [ctx.Process(target=writer, args=(uri, env, args, barrier, results)) for _ in range(args.processes)]
    for p in procs:
        p.start()
    barrier.wait(timeout=600)  # every writer has imported MLflow and made its run
    t0 = time.monotonic()
    got = [results.get(timeout=args.duration + 300) for _ in procs]
    elapsed = time.monotonic() - t0
    for p in procs:
        p.join(timeout=60)
    return (
        [g[0] for g in got],
        sum(g[1] for g in got),
        [x for g in got for x in g[2]],
        [e for g in got for e in g[3]],
        elapsed,
    )


def percentile_ms(lat: list[float], q: float) -> float | None:
    ms = sorted(x * 1000 for x in lat)
    return round(ms[min(len(ms) - 1, int(q * len(ms)))], 1) if ms else None


def figures(run_ids, sent, lat, errors, elapsed, stored) -> dict:
    return {
        "writes_per_s": round(len(lat) / elapsed, 1),
        "rows_per_s": round(stored / elapsed, 1),
        "p50_ms": percentile_ms(lat, 0.50),
        "p99_ms": percentile_ms(lat, 0.99),
        "errors": len(errors),
        "error_kinds": dict(Counter(errors).most_common(3)),
        "rows_sent": sent,
        "rows_stored": stored,
        "rows_lost": sent - stored,
        "runs": len(run_ids),
    }


@contextmanager
def sqlite_server(work: Path, workers: int):
    port, db = free_port(), work / "mlflow.db"
    cmd = [
        str(BIN / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--backend-store-uri",
        f"sqlite:///{db}",
        "--artifacts-destination",
        str(work / "artifacts"),
    ]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(
        cmd, stdout=open(work / "sqlite-server.log", "a"), stderr=subprocess.STDOUT, start_new_session=True, env=env
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", timeout=180)
        yield f"http://127.0.0.1:{port}", db
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def bench_sqlite(work: Path, args) -> dict:
    with sqlite_server(work, args.workers) as (uri, db):
        run_ids, sent, lat, errors, elapsed = run_load(uri, {}, args)
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=60)) as conn:
            stored = conn.execute(COUNT_SQL.format(",".join("?" * len(run_ids))), run_ids).fetchone()[0]
    return figures(run_ids, sent, lat, errors, elapsed, stored)


def bench_postgresql(work: Path, args) -> dict:
    with tracking_stack(work) as stack:
        server = stack.server(work / "head", workers=args.workers).start()
        try:
            run_ids, sent, lat, errors, elapsed = run_load(server.uri, server.study_env(), args)
            with closing(stack.postgres.connect("mlflow")) as conn, conn.cursor() as cur:
                cur.execute(COUNT_SQL.format(",".join(["%s"] * len(run_ids))), run_ids)
                stored = cur.fetchone()[0]
        finally:
            server.stop()
    return figures(run_ids, sent, lat, errors, elapsed, stored)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--processes", type=int, default=32, help="writers at once (default 32)")
    p.add_argument("--duration", type=float, default=60, help="seconds each writer logs (default 60)")
    p.add_argument("--metrics", type=int, default=10, help="metrics per log_batch: one epoch (default 10)")
    p.add_argument("--workers", type=int, default=4, help="server workers (default 4, as on the head)")
    p.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    a = p.parse_args(argv)
    # every failed call is an error here, not retried for minutes (MLflow's client default: 7 retries); no
    # telemetry: its thread unsets an environment variable that a request reads (MLflow 3.17), a client-side
    # KeyError about once a minute under this load that is no failure of the server
    os.environ |= {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
    }
    benches = {"sqlite": bench_sqlite, "postgresql": bench_postgresql}
    out = {
        "machine": f"{platform.node()} {os.cpu_count()} cores",
        "processes": a.processes,
        "duration_s": a.duration,
        "metrics_per_write": a.metrics,
        "server_workers": a.workers,
    }
    for name in a.backends.split(","):
        with tempfile.TemporaryDirectory(prefix=f"load-{name}-") as tmp:
            out[name] = benches[name](Path(tmp), a)
        f = out[name]
        print(
            f"{name}: {a.processes} writers x {a.duration:.0f} s: {f['writes_per_s']} writes/s "
            f"({f['rows_per_s']} rows/s), p50 {f['p50_ms']} ms, p99 {f['p99_ms']} ms, errors {f['errors']}, "
            f"rows lost {f['rows_lost']} of {f['rows_sent']}",
            flush=True,
        )
        for text, n in f["error_kinds"].items():
            print(f"  {n} x {text}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
