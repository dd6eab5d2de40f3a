"""How many trials run at once and what each one reserves, from the cluster's nodes.

Concurrency comes from the nodes' resources (those running and those the autoscaler may add, see
sweep.cluster.node_capacity) and each trial's gang (driver + N workers), so waiting trials never hold
resources that running trials' workers need.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Mapping, Optional, Sequence

from trainables.trial.memory import MAX_PACK

DRIVER_CPUS = 0.01  # a trial driver only waits on its TorchTrainer; Tune rejects 0 ("empty head bundle")
DRIVER_RESOURCE = "artsweep_driver"  # custom resource only the head declares (cluster/*.yaml): drivers stay there
ACCELERATOR = "accelerator_type:"  # Ray's resource naming a node's GPU model (cluster/*.yaml declares it too)
GPU_GIB = {
    "T4": 14.5,
    "V100": 15.5,
    "A10G": 22,
    "A10": 22,
    "L4": 22,
    "L40S": 44,
    "A100": 39,
    "A100-80G": 79,
    "H100": 79,
    "H200": 139,
}  # GiB per GPU model that a process can allocate (the card's GB, less ECC/driver)


# What the head holds, measured (docs/benchmarks.md "What a trial holds in memory"): its own processes before any
# trial (Ray's GCS, raylet and dashboard, the study's driver with Tune and OptunaSearch, the MLflow server), and
# per running trial: a distributed trial's Tune actor, Train controller and placement-group cleaner live there
# (RSS, benchmarks/overhead.py --workers-per-trial 2); a trial in process trains on its GPU node and adds only
# Tune's bookkeeping to the driver (benchmarks/scale.py: the driver's growth per running trial).
# benchmarks/overhead.py --workers-per-trial 2 (2026-12-03, 2-core development machine): a distributed trial's
# Tune actor 785 MiB RSS (it imports torch for TorchTrainer), Train controller 701, placement-group cleaner 196:
# 1,681 MiB RSS (1,072 PSS, libraries shared); the study's driver 1,110 MiB and Ray's 13 daemons 113 MiB each
# before any trial, the MLflow server's workers ~250 MiB each: HEAD_BASE_GIB.
HEAD_BASE_GIB = 4.0
HEAD_GIB_PER_TRIAL = {"in_process": 0.02, "distributed": 1.7}


@dataclass(frozen=True)
class ResourcePlan:
    max_concurrent: int  # trials running at once
    driver: dict  # resources of one trial driver
    cpus_per_worker: float  # logical CPUs per Train worker (per whole GPU when packed: trials take a share)
    use_gpu: bool  # one GPU per Train worker (or a share of one: trainables.trial.memory.gpu_share)
    gpu_gib: float = 0.0  # memory of the smallest GPU model among the nodes; 0 = unknown (no packing)
    head_cap: Optional[int] = None  # trials the head's memory holds at once (None: its memory is unknown)

    @property
    def loader_workers(self) -> int:
        """DataLoader processes per Train worker: its CPUs beyond the one that trains (0 = decode inline)."""
        return max(0, int(self.cpus_per_worker) - 1)


def gpu_gib(node: Mapping[str, float]) -> Optional[float]:
    """A GPU node's memory per GPU from its accelerator_type resource, None when it names no known model."""
    return next(
        (
            GPU_GIB[k[len(ACCELERATOR) :]]
            for k in node
            if k.startswith(ACCELERATOR) and k[len(ACCELERATOR) :] in GPU_GIB
        ),
        None,
    )


def head_cap(nodes: Sequence[Mapping[str, float]], workers_per_trial: int) -> Optional[int]:
    """How many trials the head's memory holds at once: (its memory - HEAD_BASE_GIB) / what one running trial
    adds there. The head is the node that declares DRIVER_RESOURCE (else the first); its memory is Ray's `memory`
    resource (bytes: what Ray lets tasks and actors use); None when it declares none (a planned node)."""
    head = next((n for n in nodes if n.get(DRIVER_RESOURCE)), nodes[0] if nodes else {})
    if not head.get("memory"):
        return None
    per_trial = HEAD_GIB_PER_TRIAL["in_process" if workers_per_trial == 1 else "distributed"]
    return max(1, int((head["memory"] / 2**30 - HEAD_BASE_GIB) / per_trial))


def plan_resources(nodes: Sequence[Mapping[str, float]], workers_per_trial: int, pack: str = "off") -> ResourcePlan:
    """Concurrency from the nodes' resources and the head's memory (head_cap); see _plan."""
    plan = _plan(nodes, workers_per_trial, pack)
    cap = head_cap(nodes, workers_per_trial)
    return replace(plan, max_concurrent=min(plan.max_concurrent, cap), head_cap=cap) if cap else plan


def _plan(nodes: Sequence[Mapping[str, float]], workers_per_trial: int, pack: str) -> ResourcePlan:
    """Concurrency from the nodes' resources (those running and those the autoscaler may add, see
    cluster.node_capacity) and each trial's gang (driver + N workers), so waiting trials never hold
    resources that running trials' workers need. With pack=auto and single-worker trials on GPUs of known
    memory, up to MAX_PACK trials per GPU may run: each asks for the share its memory estimate needs
    (trainables.trial.memory.gpu_share) and Ray's fractional accounting places them."""
    cpus = sum(float(n.get("CPU", 0)) for n in nodes)
    gpu_nodes = [n for n in nodes if n.get("GPU", 0) > 0]
    gpus = int(sum(n["GPU"] for n in gpu_nodes))
    driver = {"CPU": DRIVER_CPUS, **({DRIVER_RESOURCE: 0.001} if any(n.get(DRIVER_RESOURCE) for n in nodes) else {})}
    if gpus >= workers_per_trial:
        concurrent = gpus // workers_per_trial
        # a worker takes one GPU and the CPUs that go with it on the leanest GPU node type
        cpus_per_worker = max(1.0, math.floor(min(n.get("CPU", 1) / n["GPU"] for n in gpu_nodes)))
        memory = [gpu_gib(n) for n in gpu_nodes]
        known = 0.0 if None in memory else float(min(memory))
        if pack == "auto" and workers_per_trial == 1 and known:
            concurrent *= MAX_PACK
        return ResourcePlan(concurrent, driver, cpus_per_worker, use_gpu=True, gpu_gib=known)
    concurrent = max(1, int(cpus // workers_per_trial))
    # all drivers may sit on one node (the head), so each gang leaves room for every driver there
    per_trial = cpus / concurrent - concurrent * DRIVER_CPUS
    return ResourcePlan(concurrent, driver, round(per_trial / workers_per_trial, 3), use_gpu=False)
