"""Throughput and latency of the served model, and of its forward pass in three runtimes: PyTorch eager,
torch.compile and ONNX Runtime (the export analysis.export registers).

python benchmarks/serving.py [--models family:arch@size,...] [--images 64] [--jpeg-size 800x600] [--threads N]
                             [--requests 50] [--no-http] [--quick]
python benchmarks/serving.py --quick        # the 4 stand-ins, 16 JPEGs, 1 round, no HTTP: every runtime runs
python benchmarks/serving.py --no-http      # every default model, no server: 11 min on 2 cores (Inductor's cache warm
                                            # for 5 of the 7; cold, each compile adds ~1 min)

No Ray, no study: per model (family:arch@image_size, random weights, Weights("none"), nothing downloaded; default:
each family's CPU stand-in, then ResNet-50, ConvNeXt-T and ViT-B/16 at 224 px) a checkpoint is written as a trial
would, and N JPEGs (built-in dataset renders resized to --jpeg-size) are classified from their file bytes.
Runtimes: the forward pass alone on validation-preprocessed tensors, at batch 1 (median ms of a call) and 32
(images/s of median calls), each median of >= --repeats calls lasting >= --min-seconds in all, after warm-up calls
at both batch sizes; "ready s" is that warm-up plus, for compile, Inductor's compiles (one per batch size; its
cache in /tmp/torchinductor_$USER makes a second run faster) and, for ONNX, the export (dynamo exporter) and the
session. Locally: top_k at batch 1 and 32 from the JPEG bytes (best of --rounds), and decode+preprocess
(Classifier.preprocess). Over HTTP: the PyTorch checkpoint is registered in a temp SQLite store
(analysis.publishing.models.register) and served by the real `mlflow models serve --env-manager local`
(analysis.scoring_server) with the same thread count; start-up = launch to /ping, then p50/p95 latency of 1-image
requests and images/s of 32-image requests (base64 JSON, keep-alive). The last line printed is the whole result
as JSON.
"""

import argparse
import base64
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import requests
import timm
import torch
from mlflow.tracking import MlflowClient
from PIL import Image

from analysis.publishing import models, onnx_model
from analysis.scoring_server import scoring_server
from analysis.serving import OnnxForward
from search_spaces import get_family
from search_spaces.space import TrialConfig
from trainables import checkpoint
from trainables.data.builtin_dataset import STYLES, render
from trainables.pretrained import Weights

ROOT = Path(__file__).resolve().parents[1]
CLASSES = sorted(STYLES)  # 8 classes, as the built-in dataset
STANDINS = "scratch:simple_cnn@32,cnn:test_resnet@224,transformers:test_vit@224,hybrid:test_resnet_bigru@224"
LARGE = "cnn:resnet50@224,cnn:convnext_tiny@224,transformers:vit_b16@224"  # vit_b16: timm's vit_base_patch16_224
RUNTIMES = ("eager", "compile", "onnx")


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


def median_time(fn, x: torch.Tensor, repeats: int, min_seconds: float) -> float:
    """Median wall time of fn(x), seconds, over at least `repeats` calls and `min_seconds` in all."""
    times, t_end = [], time.perf_counter() + min_seconds
    while len(times) < repeats or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def forward_pass(runtime: str, model: torch.nn.Module, size: int, folder: Path, threads: int):
    """`runtime`'s forward pass of `model`: float [N, 3, S, S] -> logits."""
    if runtime == "eager":
        return model
    if runtime == "compile":
        torch._dynamo.reset()  # no graphs or recompile counts left from the previous model
        return torch.compile(model)  # Inductor, default mode: what a user's first try gets
    onnx_model.to_onnx(model, size, folder / "model.onnx", "dynamo")  # analysis.export's exporter
    return OnnxForward(folder / "model.onnx", threads)


def bench_runtimes(clf: checkpoint.Classifier, x: torch.Tensor, folder: Path, a) -> dict:
    """Per runtime: ready s, ms at batch 1, images/s at batch 32 (x: >= 32 preprocessed images)."""
    out, x1, x32 = {}, x[:1], x[:32]
    for runtime in RUNTIMES:
        print(f"  {runtime} ...", file=sys.stderr, flush=True)
        with torch.no_grad():
            t0 = time.perf_counter()
            fn = forward_pass(runtime, clf.model, clf.image_size, folder, a.threads)
            fn(x1), fn(x32)  # warm-up: compiles, allocations
            out[f"{runtime}_ready_s"] = time.perf_counter() - t0
            out[f"{runtime}_b1_ms"] = 1e3 * median_time(fn, x1, a.repeats, a.min_seconds)
            out[f"{runtime}_b32_ips"] = 32 / median_time(fn, x32, a.repeats, a.min_seconds)
    return out


def bench_local(clf: checkpoint.Classifier, jpegs: list[bytes], rounds: int) -> dict:
    n, chunks = len(jpegs), [jpegs[i : i + 32] for i in range(0, len(jpegs), 32)]
    clf.top_k(chunks[0])  # warm-up (allocator, kernels)
    b1 = best_time(lambda: [clf.top_k([j]) for j in jpegs], rounds)  # s for n one-image calls
    b32 = best_time(lambda: [clf.top_k(c) for c in chunks], rounds)  # s for n images in batches of 32
    pre = best_time(lambda: [clf.preprocess(j) for j in jpegs], rounds)  # s: decode + fit + val transform
    return {"b1": n / b1, "b32": n / b32, "pre_ms": 1e3 * pre / n}


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


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--models",
        default=f"{STANDINS},{LARGE}",
        help="comma-separated family:arch@image_size (default: each family's stand-in, then %(default)s)",
    )
    p.add_argument("--images", type=int, default=64, help="JPEGs to classify (default %(default)s)")
    p.add_argument("--jpeg-size", default="800x600", help="JPEG width x height, px (default %(default)s)")
    p.add_argument(
        "--threads", type=int, default=os.cpu_count(), help="torch and ONNX Runtime threads, here and in the server"
    )
    p.add_argument("--rounds", type=int, default=3, help="local top_k timings: best of this many passes")
    p.add_argument("--repeats", type=int, default=3, help="runtime timings: median of at least this many calls")
    p.add_argument(
        "--min-seconds", type=float, default=1.0, help="runtime timings: and of calls lasting this long in all"
    )
    p.add_argument("--requests", type=int, default=50, help="1-image HTTP requests timed (after 3 warm-up)")
    p.add_argument("--batch-requests", type=int, default=4, help="32-image HTTP requests timed (after 1 warm-up)")
    p.add_argument("--no-http", action="store_true", help="skip mlflow models serve")
    p.add_argument("--quick", action="store_true", help="the stand-ins only, 16 JPEGs, 1 round, no HTTP")
    a = p.parse_args()
    if a.quick:
        a.models, a.images, a.rounds, a.no_http = STANDINS, 16, 1, True
    return a


def machine(a, jpegs: list[bytes]) -> dict:
    """Where and when: printed first, and part of the JSON line."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = next((ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), platform.processor())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "commit": commit.stdout.strip() or "?",
        "cpu": f"{cpu} ({platform.machine()}, {platform.system()})",
        "cores": os.cpu_count(),
        "threads": a.threads,
        "versions": {m.__name__: m.__version__ for m in (torch, onnx, onnxruntime)},
        "jpegs": f"{len(jpegs)} x {a.jpeg_size}, mean {np.mean([len(j) for j in jpegs]) / 1024:.0f} KiB",
        "load_before": [round(x, 2) for x in os.getloadavg()],
    }


def bench_model(i: int, spec: str, jpegs: list[bytes], tmp: Path, a, client) -> dict:
    ckpt, size, params = make_checkpoint(spec, tmp / f"ckpt{i}")
    clf = checkpoint.load(ckpt)
    print(f"{spec}: runtimes ...", file=sys.stderr, flush=True)
    x = torch.stack([clf.preprocess(j) for j in (jpegs * 32)[:32]])
    row = {"model": spec.partition("@")[0], "size": size, "params": params}
    row.update(bench_runtimes(clf, x, tmp / f"ckpt{i}", a))
    print(f"{spec}: local top_k ...", file=sys.stderr, flush=True)
    row.update(bench_local(clf, jpegs, a.rounds))
    if client is not None:
        print(f"{spec}: register + mlflow models serve ...", file=sys.stderr, flush=True)
        exp = client.get_experiment_by_name("serving-bench").experiment_id
        run = client.create_run(exp, run_name=spec)  # a trial's run holding checkpoint/model.pt
        client.log_artifact(run.info.run_id, str(ckpt), "checkpoint")
        client.set_terminated(run.info.run_id)
        models.register(client, run.info.run_id, f"bench{i}")
        row.update(bench_http(client.tracking_uri, f"bench{i}", jpegs, tmp, a))
    return row


def print_tables(rows: list[dict]) -> None:
    head = (
        f"{'model':<26}{'px':>4}{'params M':>9}{'runtime':>9}{'b1 ms':>9}{'b32 img/s':>11}{'vs eager':>9}{'ready s':>9}"
    )
    print("\nforward pass alone (preprocessed tensors): ms per call at batch 1, images/s at batch 32")
    print(head + "\n" + "-" * len(head))
    for r in rows:
        for n in RUNTIMES:
            print(
                f"{r['model'] if n == RUNTIMES[0] else '':<26}{r['size']:>4}{r['params']:>9.2f}{n:>9}"
                f"{r[f'{n}_b1_ms']:>9.2f}{r[f'{n}_b32_ips']:>11.1f}{r[f'{n}_b32_ips'] / r['eager_b32_ips']:>8.2f}x"
                f"{r[f'{n}_ready_s']:>9.1f}"
            )
    # images/s = throughput; ms/image = wall time per image; startup s = launch to first 200 on /ping
    head = (
        f"{'model':<26}{'loc b1 img/s':>13}{'loc b32 img/s':>14}{'prep ms/img':>12}"
        f"{'http start s':>13}{'http p50 ms':>12}{'http p95 ms':>12}{'http b32 img/s':>15}"
    )
    print("\nthe PyTorch model from JPEG bytes: Classifier.top_k here (loc), `mlflow models serve` (http)")
    print(head + "\n" + "-" * len(head))
    for r in rows:
        http = (
            f"{r['start']:>13.1f}{r['p50']:>12.1f}{r['p95']:>12.1f}{r['ips']:>15.1f}"
            if "start" in r
            else f"{'-':>13}{'-':>12}{'-':>12}{'-':>15}"
        )
        print(f"{r['model']:<26}{r['b1']:>13.1f}{r['b32']:>14.1f}{r['pre_ms']:>12.2f}" + http)


def main() -> None:
    a = parse_args()
    torch.set_num_threads(a.threads)
    wall0 = time.perf_counter()
    w, h = map(int, a.jpeg_size.lower().split("x"))
    jpegs = make_jpegs(a.images, w, h)
    env = machine(a, jpegs)
    print(", ".join(f"{k} {v}" for k, v in env.items()))
    with tempfile.TemporaryDirectory(prefix="artsweep-serving-") as tmp:
        tmp = Path(tmp)
        client = None
        if not a.no_http:
            client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
            client.create_experiment("serving-bench", artifact_location=(tmp / "artifacts").as_uri())
        rows = [bench_model(i, spec, jpegs, tmp, a, client) for i, spec in enumerate(a.models.split(","))]
    print_tables(rows)
    env.update(load_after=[round(x, 2) for x in os.getloadavg()], wall_s=round(time.perf_counter() - wall0))
    print(
        f"\nvs eager = b32 images/s over eager's; prep = decode + fit + validation transform, one image at a time. "
        f"wall {env['wall_s']} s; "
        f"load average before {env['load_before']}, after {env['load_after']}"
    )
    print(
        json.dumps(
            {**env, "rows": [{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()} for r in rows]}
        )
    )


if __name__ == "__main__":
    main()
