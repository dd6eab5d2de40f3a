"""What each network a study can train costs to serve, measured before its trials start, on a device they leave alone.

A latency is only true on a device nothing else uses meanwhile: a trial never times itself (on a packed GPU or a
busy node it would time its neighbours too). So the study measures every network of its space (SearchSpace.shapes:
architecture x shape knobs, at the study's input side) once, before Tune starts a trial: in one Ray task that holds
a whole GPU (GPU studies) or a whole node's CPUs, or in the driver itself when the study's only node is this
machine's CPUs (nothing else runs on them yet). The figures ride in RunSettings.costs to every trial, which reports
them each epoch (trainables.trial.worker.serving_costs) and tags how they were measured. The measuring process reads
and fills that node's cache (trainables.latency.cached: once per network, runtime, device kind, threads and batch),
so the next study of the same networks measures nothing.
"""

from __future__ import annotations

import dataclasses
import os
import time

import ray
import torch

from search_spaces.space import SearchSpace
from sweep.console import say
from sweep.preflight import UsageError
from trainables import latency
from trainables.config import RunSettings

BUSY = 1.0  # 1-minute load per CPU above which the measured latencies are suspect (other work shared the CPUs)


def precision(s: RunSettings) -> str:
    """What the trials' inference runs in: bf16 autocast on GPUs with AMP, fp32 on CPUs (trainables.engine)."""
    return "bf16" if s.use_gpu and s.amp in ("auto", "bf16") else "fp32"


def _measure(shapes: dict, num_classes: int, precision: str) -> dict:
    """In the Ray task (or the driver, on this machine's CPUs): each network built at random init (weights do not
    change its cost) and measured on this node's GPU, or its CPUs with every thread the task holds, and cached on
    this node."""
    import torch

    from trainables.pretrained import Weights

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = {}
    for key, (cfg, size) in shapes.items():
        cost = latency.cached(
            key,
            lambda cfg=cfg, size=size: cfg.family.build(cfg, num_classes, size, Weights("none")),
            size,
            device,
            threads=latency.all_threads(),
            precision=precision,
        )
        out[key] = dataclasses.asdict(cost)
    return out


def measure(s: RunSettings, space: SearchSpace) -> dict:
    """{TrialConfig.shape: Cost as a dict} of every network of the study, from one Ray task holding a whole GPU
    (s.use_gpu) or a whole node's CPUs (the largest node's), or from this process on this machine's CPUs. A study
    that needs them (--objectives, --max-latency-ms) is refused when they cannot be measured; any other goes on
    without them (its trials report no latency)."""
    shapes = _shapes(s, space)
    nodes = [n for n in ray.nodes() if n["Alive"]]
    node_cpus = max(int(n["Resources"].get("CPU", 0)) for n in nodes)
    t0, load = time.monotonic(), os.getloadavg()[0]  # processes running or waiting, over the last minute
    here = _here(s, nodes)
    costs = _cached_here(s, shapes) if here else None  # nothing to measure
    if costs is None:
        where = "one GPU" if s.use_gpu else f"{node_cpus} CPUs of {'this machine' if here else 'one node'}"
        say(f"measuring what {len(shapes)} network(s) cost to serve, on {where}, before any trial starts (cached)")
        args = (shapes, len(s.classes), precision(s))
        try:
            if here:  # the torch this process has loaded, where a task would start a process and import it first
                costs = _measure(*args)
            else:
                task = ray.remote(_measure).options(
                    num_cpus=0 if s.use_gpu else node_cpus,
                    num_gpus=1 if s.use_gpu else 0,
                    name="artsweep-serving-costs",
                )
                costs = ray.get(task.remote(*args))
        except Exception as e:  # noqa: BLE001 - a network that does not build fails its trials anyway, with its error
            if s.objectives or s.max_latency_ms:
                raise UsageError(f"could not measure the networks' latency ({type(e).__name__}: {e})") from None
            say(f"warning: serving costs not measured ({type(e).__name__}); trials report no latency_ms")
            return {}
        if load > BUSY * node_cpus:
            say(
                f"warning: this machine was busy while the study started (load {load:.1f} on {node_cpus} CPUs): the "
                f"latencies may be inflated; they are cached in {latency.cache_file()} (delete it to measure again)"
            )
    fastest = min(costs.values(), key=lambda c: c["latency_ms"])
    slowest = max(costs.values(), key=lambda c: c["latency_ms"])
    say(
        f"serving costs of {len(costs)} network(s) in {time.monotonic() - t0:.0f} s ({fastest['device']}, "
        f"{fastest['threads']} thread(s), {fastest['precision']}): batch-1 latency {fastest['latency_ms']:.2f} ms "
        f"({_name(costs, fastest)}) .. {slowest['latency_ms']:.2f} ms ({_name(costs, slowest)})"
    )
    _check_budget(s, costs)
    return costs


def refuse_before_ray(s: RunSettings, space: SearchSpace, address: str | None) -> None:
    """A latency budget no network meets, refused before Ray starts when the study will run on this machine's CPUs
    and this machine's cache knows every network's latency (else measure() refuses it once it has measured)."""
    if not s.max_latency_ms or address or os.environ.get("RAY_ADDRESS") or s.use_gpu or torch.cuda.is_available():
        return  # another machine, or this one's GPU (measured in bf16 there): not the cached CPU figures
    costs = _cached_here(s, _shapes(s, space))
    if costs is not None:
        _check_budget(s, costs)


def _check_budget(s: RunSettings, costs: dict) -> None:
    fastest = min(costs.values(), key=lambda c: c["latency_ms"])
    if s.max_latency_ms and fastest["latency_ms"] > s.max_latency_ms:
        raise UsageError(
            f"--max-latency-ms {s.max_latency_ms:g}: no network of the study is that fast here (the fastest, "
            f"{_name(costs, fastest)}, takes {fastest['latency_ms']:.2f} ms); raise the budget or search smaller "
            "architectures (--arch, --image-size)"
        )


def _shapes(s: RunSettings, space: SearchSpace) -> dict:
    """{TrialConfig.shape: (a config of that network, input side)} of every network the study can train."""
    shapes = {}
    for cfg in space.shapes():
        size = s.image_size or cfg.family.image_size
        shapes.setdefault(cfg.shape(size), (cfg, size))
    return shapes


def _here(s: RunSettings, nodes: list) -> bool:
    """Whether the study's only node is this machine and its trials use its CPUs: the task would run here, with
    this machine's threads, and read and fill the same cache, so the driver measures (or reads) them itself."""
    return not s.use_gpu and len(nodes) == 1 and nodes[0]["NodeID"] == ray.get_runtime_context().get_node_id()


def _cached_here(s: RunSettings, shapes: dict) -> dict | None:
    """Every network's CPU figures from this machine's cache with all its threads; None when one is missing."""
    found = {
        key: latency.lookup(key, size, "cpu", threads=latency.all_threads(), precision=precision(s))
        for key, (_, size) in shapes.items()
    }
    return None if None in found.values() else {k: dataclasses.asdict(c) for k, c in found.items()}


def _name(costs: dict, cost: dict) -> str:
    return next(k for k, c in costs.items() if c is cost)
