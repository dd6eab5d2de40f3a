"""What a configuration costs to serve: parameters, GFLOPs per image, latency at batch 1 and throughput at the
serving batch, measured once per (architecture, image size, precision, runtime, device kind, threads, batch) and
cached beside the memory probes (trainables.trial.memory), in this machine's artsweep cache.

Pure PyTorch: torch.utils.flop_counter counts the FLOPs of one forward pass (a multiply-add is 2 FLOPs);
torch.utils.benchmark times it (warm-up, a fixed thread count, CUDA synchronised around each block, the median of
blocks of runs). A latency is only meaningful on a device nothing else uses meanwhile: the caller picks the moment
(a study measures before its trials start, or in a task that holds a whole GPU or a node's CPUs), never a trial on
a packed GPU.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from trainables.paths import cache_root

SERVING_BATCH = 32  # images per request of a batch client (benchmarks/serving.py measures 1 and 32 too)
MIN_RUN_S = 0.5  # seconds of timed runs per batch size (torch.utils.benchmark blocked_autorange's min_run_time)
WARMUP_RUNS = 3  # untimed forward passes first: lazy initialisation, allocator and cuDNN autotuning
RUNTIME = "torch-eager"  # the runtime the figures are for (ONNX Runtime and torch.compile: benchmarks/serving.py)


@dataclass(frozen=True)
class Cost:
    params: int  # parameters
    gflops: float  # GFLOPs of one image's forward pass (multiply-add = 2)
    latency_ms: float  # median ms of one forward pass at batch 1
    throughput_img_s: float  # images/s at batch `batch` (median of blocks)
    batch: int  # the serving batch throughput_img_s was measured at
    threads: int  # torch's intra-op threads while timing (CPU)
    precision: str  # fp32 | bf16 (autocast)
    runtime: str  # RUNTIME
    device: str  # device kind: "cpu: <processor>" or the CUDA device's name


def device_kind(device: torch.device) -> str:
    """What a latency was measured on: the GPU's name, or the CPU's model name (Linux /proc/cpuinfo)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"cpu: {line.split(':', 1)[1].strip()}"
    except OSError:
        pass
    return f"cpu: {platform.processor() or platform.machine()}"


def all_threads() -> int:
    """Every CPU this process may run on (its affinity mask: a container's or a Ray task's share)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def count_gflops(model: nn.Module, image_size: int, device: torch.device) -> float:
    """GFLOPs of one image's forward pass at image_size (eval mode, no grad)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, image_size, image_size, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / 1e9


def _median_s(model: nn.Module, x: torch.Tensor, threads: int, precision: str) -> float:
    from torch.utils import benchmark

    autocast = precision == "bf16"

    def forward():
        with torch.no_grad(), torch.autocast(x.device.type, torch.bfloat16, enabled=autocast):
            return model(x)

    for _ in range(WARMUP_RUNS):
        forward()
    timer = benchmark.Timer(stmt="forward()", globals={"forward": forward}, num_threads=threads)
    return timer.blocked_autorange(min_run_time=MIN_RUN_S).median  # synchronises CUDA around each block


def measure(
    model: nn.Module,
    image_size: int,
    device: torch.device | str = "cpu",
    *,
    batch: int = SERVING_BATCH,
    threads: int | None = None,
    precision: str = "fp32",
) -> Cost:
    """The model's cost at image_size on `device` (moved there and set to eval mode)."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
    device = torch.device(device)
    threads = threads or all_threads()
    model = model.to(device).eval()
    one = torch.rand(1, 3, image_size, image_size, device=device)
    many = torch.rand(batch, 3, image_size, image_size, device=device)
    latency = _median_s(model, one, threads, precision)
    per_batch = _median_s(model, many, threads, precision)
    return Cost(
        params=sum(p.numel() for p in model.parameters()),
        gflops=round(count_gflops(model, image_size, device), 6),
        latency_ms=round(latency * 1e3, 4),
        throughput_img_s=round(batch / per_batch, 2),
        batch=batch,
        threads=threads,
        precision=precision,
        runtime=RUNTIME,
        device=device_kind(device),
    )


def cache_file() -> Path:
    return cache_root() / "latency.json"


def cost_key(name: str, image_size: int, device: torch.device | str, batch: int, threads: int, precision: str) -> str:
    """One cached measurement: architecture (with the knobs that shape it), size, precision, runtime, device kind,
    threads, serving batch."""
    return f"{name}|{image_size}px|{precision}|{RUNTIME}|{device_kind(torch.device(device))}|{threads}t|b{batch}"


def lookup(
    name: str,
    image_size: int,
    device: torch.device | str = "cpu",
    *,
    batch: int = SERVING_BATCH,
    threads: int = 1,
    precision: str = "fp32",
    cache: Path | None = None,
) -> Cost | None:
    """The cached measurement of cost_key(...) on this machine, or None when it was never measured here."""
    found = _table(cache or cache_file()).get(cost_key(name, image_size, device, batch, threads, precision))
    return Cost(**found) if found else None


def cached(
    name: str,
    build: Callable[[], nn.Module],
    image_size: int,
    device: torch.device | str = "cpu",
    *,
    batch: int = SERVING_BATCH,
    threads: int = 1,
    precision: str = "fp32",
    cache: Path | None = None,
) -> Cost:
    """measure(build(), ...) once per cost_key on this machine; later calls read the table (a JSON file, written
    whole through a temporary name, so a reader never sees half of it)."""
    known = dict(batch=batch, threads=threads, precision=precision)
    found = lookup(name, image_size, device, **known, cache=cache)
    if found:
        return found
    cost = measure(build(), image_size, device, **known)
    cache = cache or cache_file()
    table = _table(cache)  # read again: another process may have added its networks meanwhile
    table[cost_key(name, image_size, device, batch, threads, precision)] = asdict(cost)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(table, indent=1, sort_keys=True))
    tmp.replace(cache)
    return cost


def _table(cache: Path) -> dict:
    """{cost_key: Cost as a dict} of every network measured on this machine; empty when the file is missing or not
    a table (hand-edited, or written by something else): its networks are then measured again and it is rewritten."""
    try:
        table = json.loads(cache.read_text()) if cache.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return table if isinstance(table, dict) else {}
