"""Throughput and latency of the served model: Classifier.top_k in this process vs `mlflow models serve`.

python benchmarks/serving.py [--models scratch:simple_cnn@32,cnn:test_resnet@224,transformers:test_vit@224]
                             [--images 64] [--jpeg-size 800x600] [--threads N] [--requests 50] [--no-http]

No Ray, no study: per model (family:arch@image_size, random weights, Weights("none"); real archs such as
cnn:resnet50@224 work offline too) a checkpoint is written as a trial would, and N JPEGs (built-in dataset
renders resized to --jpeg-size) are classified from their file bytes. Locally: top_k at batch 1 and 32
(best of --rounds), split into decode+preprocess (Classifier.preprocess) and the forward pass (batch 32).
Over HTTP: the checkpoint is registered in a temp SQLite store (analysis.publishing.models.register) and served by
the real `mlflow models serve --env-manager local` (analysis.scoring_server) with the same thread count;
start-up = launch to /ping, then p50/p95 latency of 1-image requests and images/s of 32-image requests (base64 JSON, keep-alive).
"""

import argparse
import base64
import io
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
import timm
import torch
from mlflow.tracking import MlflowClient
from PIL import Image

from analysis.publishing import models
from analysis.scoring_server import scoring_server
from search_spaces import get_family
from search_spaces.space import TrialConfig
from trainables import checkpoint
from trainables.data.builtin_dataset import STYLES, render
from trainables.pretrained import Weights

CLASSES = sorted(STYLES)  # 8 classes, as the built-in dataset


def make_jpegs(n: int, w: int, h: int) -> list[bytes]:
    """n JPEG files' bytes (quality 90): renders upscaled to w x h plus mild noise, so the file size and
    decode cost are those of a real photo of a painting rather than a flat upscale."""
    rng, out = np.random.default_rng(0), []
    for i in range(n):
        img = render(CLASSES[i % len(CLASSES)], rng).resize((w, h), Image.Resampling.BICUBIC)
        arr = np.asarray(img, np.float32) + rng.normal(0, 6, (h, w, 3))
        buf = io.BytesIO()
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def make_checkpoint(spec: str, folder: Path) -> tuple[Path, int, float]:
    """'family:arch@size' -> (model.pt, image size px, params in millions)."""
    fam_arch, _, size = spec.partition("@")
    family, _, arch = fam_arch.partition(":")
    fam = get_family(family)
    size = int(size or fam.image_size)
    # fixed values, and the first choice / low end of each searched one (none changes the forward pass at eval)
    values = {
        k: (v.choices[0] if hasattr(v, "choices") else getattr(v, "low", v))
        for k, v in fam.params(standins=True, arch=arch or None).items()
    }
    cfg = TrialConfig(fam, values)
    torch.manual_seed(0)
    model = fam.build(cfg, len(CLASSES), size, Weights("none")).eval()
    data_cfg = timm.data.resolve_model_data_config(model)
    norm = {"mean": tuple(data_cfg["mean"]), "std": tuple(data_cfg["std"])}
    folder.mkdir(parents=True)
    path = checkpoint.save(folder, model, CLASSES, cfg, size, norm, "crop", 1, {})
    return path, size, sum(p.numel() for p in model.parameters()) / 1e6


def best_time(fn, rounds: int) -> float:
    """Shortest wall time of `rounds` calls of fn(), seconds (the least disturbed by other processes)."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_local(clf: checkpoint.Classifier, jpegs: list[bytes], rounds: int) -> dict:
    n, chunks = len(jpegs), [jpegs[i : i + 32] for i in range(0, len(jpegs), 32)]
    clf.top_k(chunks[0])  # warm-up (allocator, kernels)
    b1 = best_time(lambda: [clf.top_k([j]) for j in jpegs], rounds)  # s for n one-image calls
    b32 = best_time(lambda: [clf.top_k(c) for c in chunks], rounds)  # s for n images in batches of 32
    pre = best_time(lambda: [clf.preprocess(j) for j in jpegs], rounds)  # s: decode + fit + val transform
    x = torch.stack([clf.preprocess(j) for j in jpegs])
    with torch.no_grad():
        fwd = best_time(lambda: [clf.model(x[i : i + 32]) for i in range(0, n, 32)], rounds)
    return {"b1": n / b1, "b32": n / b32, "pre_ms": 1e3 * pre / n, "fwd_ms": 1e3 * fwd / n}


def body(jpegs: list[bytes]) -> dict:
    """The documented request (analysis/serving.py): image file bytes, base64, one row per image."""
    return {
        "dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(j).decode()] for j in jpegs]},
        "params": {"k": 5},
    }


def bench_http(uri: str, name: str, jpegs: list[bytes], tmp: Path, a) -> dict:
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "OMP_NUM_THREADS": str(a.threads),
        "MKL_NUM_THREADS": str(a.threads),
    }
    http = requests.Session()
    with scoring_server(f"models:/{name}/1", env, tmp, tmp / f"serve-{name}.log") as (base, startup):

        def post(payload: dict, n: int) -> float:  # s for one request
            t = time.perf_counter()
            r = http.post(f"{base}/invocations", json=payload, timeout=300)
            dt = time.perf_counter() - t
            if r.status_code != 200 or len(r.json()["predictions"]) != n:
                raise RuntimeError(f"HTTP {r.status_code}: {r.text[:500]}")
            return dt

        singles = [body([j]) for j in jpegs]
        for p in singles[:3]:  # warm-up
            post(p, 1)
        lat = [post(singles[i % len(singles)], 1) for i in range(a.requests)]
        batch = body((jpegs * 32)[:32])
        post(batch, 32)  # warm-up
        total = sum(post(batch, 32) for _ in range(a.batch_requests))
        return {
            "start": startup,
            "p50": 1e3 * np.percentile(lat, 50),
            "p95": 1e3 * np.percentile(lat, 95),
            "ips": 32 * a.batch_requests / total,
        }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--models",
        default="scratch:simple_cnn@32,cnn:test_resnet@224,transformers:test_vit@224",
        help="comma-separated family:arch@image_size (default: %(default)s)",
    )
    p.add_argument("--images", type=int, default=64, help="JPEGs to classify (default %(default)s)")
    p.add_argument("--jpeg-size", default="800x600", help="JPEG width x height, px (default %(default)s)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads, here and in the server")
    p.add_argument("--rounds", type=int, default=3, help="local timings: best of this many passes")
    p.add_argument("--requests", type=int, default=50, help="1-image HTTP requests timed (after 3 warm-up)")
    p.add_argument("--batch-requests", type=int, default=4, help="32-image HTTP requests timed (after 1 warm-up)")
    p.add_argument("--no-http", action="store_true", help="skip mlflow models serve")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    load0, wall0 = os.getloadavg(), time.perf_counter()
    w, h = map(int, a.jpeg_size.lower().split("x"))
    jpegs = make_jpegs(a.images, w, h)
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = next((ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), platform.processor())
    print(
        f"{cpu} ({platform.machine()}, {platform.system()}), {os.cpu_count()} cores, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, Python {platform.python_version()}"
    )
    print(
        f"{len(jpegs)} JPEGs {w}x{h}, mean {np.mean([len(j) for j in jpegs]) / 1024:.0f} KiB; "
        f"load average before {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="artsweep-serving-") as tmp:
        tmp = Path(tmp)
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        if not a.no_http:
            client = MlflowClient(uri)
            exp = client.create_experiment("serving-bench", artifact_location=(tmp / "artifacts").as_uri())
        for i, spec in enumerate(a.models.split(",")):
            ckpt, size, params = make_checkpoint(spec, tmp / f"ckpt{i}")
            print(f"{spec}: local ...", file=sys.stderr, flush=True)
            row = {
                "model": spec.partition("@")[0],
                "size": size,
                "params": params,
                **bench_local(checkpoint.load(ckpt), jpegs, a.rounds),
            }
            if not a.no_http:
                print(f"{spec}: register + mlflow models serve ...", file=sys.stderr, flush=True)
                run = client.create_run(exp, run_name=spec)  # a trial's run holding checkpoint/model.pt
                client.log_artifact(run.info.run_id, str(ckpt), "checkpoint")
                client.set_terminated(run.info.run_id)
                models.register(client, run.info.run_id, f"bench{i}")
                row.update(bench_http(uri, f"bench{i}", jpegs, tmp, a))
            rows.append(row)
    # images/s = throughput; ms/image = wall time per image; startup s = launch to first 200 on /ping
    head = (
        f"{'model':<26}{'px':>4}{'params M':>9}{'loc b1 img/s':>13}{'loc b32 img/s':>14}{'prep ms/img':>12}"
        f"{'fwd ms/img':>11}{'http start s':>13}{'http p50 ms':>12}{'http p95 ms':>12}{'http b32 img/s':>15}"
    )
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        http = (
            f"{r['start']:>13.1f}{r['p50']:>12.1f}{r['p95']:>12.1f}{r['ips']:>15.1f}"
            if "start" in r
            else f"{'-':>13}{'-':>12}{'-':>12}{'-':>15}"
        )
        print(
            f"{r['model']:<26}{r['size']:>4}{r['params']:>9.2f}{r['b1']:>13.1f}{r['b32']:>14.1f}"
            f"{r['pre_ms']:>12.2f}{r['fwd_ms']:>11.2f}" + http
        )
    load1 = os.getloadavg()
    print(
        f"\nfwd = model forward at batch 32; prep = decode + fit + validation transform, one image at a time. "
        f"wall {time.perf_counter() - wall0:.0f} s; load average after {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}"
    )


if __name__ == "__main__":
    main()
