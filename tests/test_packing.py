"""Packing several single-worker trials on one GPU: the share each asks for never over-commits memory, DDP
trials keep whole GPUs, and the plan follows the node shapes of cluster/gpu.yaml. The memory probe is real
(a model built and run on CPU); tests/test_gpu.py checks the estimate against a measured step on a GPU."""

import random
import shutil
from pathlib import Path

import pytest

from search_spaces import get_family
from sweep.cluster import node_capacity
from sweep.resources import DRIVER_RESOURCE, GPU_GIB, HEAD_BASE_GIB, HEAD_GIB_PER_TRIAL, plan_resources
from trainables.config import RunSettings
from trainables.trial import memory
from trainables.trial.driver import worker_resources
from trainables.trial.memory import HEADROOM, MAX_PACK, gpu_share

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("gpu", ["A10G", "H200"])
def test_shares_never_overcommit_a_gpu(gpu):
    """Random mixes of estimates, placed first-fit on 4 GPUs by their shares as Ray adds fractions: the
    estimates on any one GPU never pass its memory."""
    gib, rng = GPU_GIB[gpu], random.Random(0)
    for _ in range(200):
        estimates = [rng.choice([0.8, 1.5, 3.0, 6.4, 11.0, 23.0, 60.0]) * rng.uniform(0.8, 1.2) for _ in range(12)]
        gpus = [[] for _ in range(4)]
        for e in estimates:
            share = gpu_share(e, gib, workers=1)
            if share == 1.0 and e > gib:
                continue  # does not fit at all: not packed, not placed here
            assert e <= share * HEADROOM * gib + 1e-9 or share == 1.0
            for placed in gpus:
                if sum(s for s, _ in placed) + share <= 1.0 + 1e-9:
                    placed.append((share, e))
                    break
        for placed in gpus:
            assert sum(e for _, e in placed) <= gib, placed
            assert len(placed) <= MAX_PACK


def test_small_trials_pack_big_ones_do_not():
    assert gpu_share(1.3, GPU_GIB["A10G"], workers=1) == 1 / 8  # scratch CNN: 8 on a 22 GiB A10G
    assert gpu_share(6.4, GPU_GIB["A10G"], workers=1) == 1 / 3  # ResNet-50 batch 64, AMP: 3
    assert gpu_share(6.4, GPU_GIB["H200"], workers=1) == 1 / 8  # capped at MAX_PACK
    assert gpu_share(12.0, GPU_GIB["A10G"], workers=1) == 1.0  # only one fits: a whole GPU


def test_ddp_off_and_unknown_memory_keep_whole_gpus():
    assert gpu_share(1.0, 139, workers=2) == 1.0  # NCCL: one rank per device
    assert gpu_share(1.0, 139, workers=1, pack="off") == 1.0
    assert gpu_share(1.0, 0, workers=1) == 1.0


def test_plan_from_the_cluster_config_knows_the_gpu_and_packs_single_worker_trials(tmp_path):
    bootstrap = tmp_path / "ray_bootstrap_config.yaml"
    shutil.copy(ROOT / "cluster" / "gpu.yaml", bootstrap)
    nodes = node_capacity([{"CPU": 8.0, DRIVER_RESOURCE: 1000.0}], bootstrap)
    packed = plan_resources(nodes, workers_per_trial=1, pack="auto")
    assert packed.gpu_gib == GPU_GIB["A10G"] and packed.max_concurrent == 8 * MAX_PACK
    assert plan_resources(nodes, workers_per_trial=1, pack="off").max_concurrent == 8
    assert plan_resources(nodes, workers_per_trial=2, pack="auto").max_concurrent == 4
    unknown = plan_resources([{"CPU": 16.0, "GPU": 2.0}], workers_per_trial=1, pack="auto")
    assert unknown.gpu_gib == 0 and unknown.max_concurrent == 2
    h200 = plan_resources([{"CPU": 16.0, "GPU": 1.0, "accelerator_type:H200": 1.0}], 1, "auto")
    assert h200.gpu_gib == GPU_GIB["H200"] and h200.max_concurrent == MAX_PACK and h200.cpus_per_worker == 16


def settings(**kw):
    base = dict(
        family="scratch",
        data_dir="-",
        num_samples=1,
        max_epochs=1,
        workers_per_trial=1,
        experiment="e",
        mlflow_uri="-",
        storage="/tmp",
        classes=tuple("abcdefgh"),
        image_size=64,
        cpus_per_worker=16.0,
        use_gpu=True,
        gpu_gib=GPU_GIB["H200"],
        loader_workers=15,
    )
    return RunSettings(**{**base, **kw})


def test_a_trial_asks_for_its_share_and_the_cpus_that_go_with_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ARTSWEEP_CACHE", str(tmp_path))  # the memory probes go to tmp_path/memory.json
    cfg = get_family("scratch").config("deep_cnn", width=1.0, batch_size=64)
    s, res = worker_resources(cfg, settings())
    assert res == {"CPU": 2.0, "GPU": 1 / 8} and s.cpus_per_worker == 2.0 and s.loader_workers == 1
    assert worker_resources(cfg, settings(workers_per_trial=2))[1] == {"CPU": 16.0, "GPU": 1.0}
    assert worker_resources(cfg, settings(pack="off"))[1] == {"CPU": 16.0, "GPU": 1.0}
    assert worker_resources(cfg, settings(use_gpu=False, cpus_per_worker=1.0))[1] == {"CPU": 1.0}


def test_the_probe_is_real_cached_and_the_estimate_grows_with_the_batch(tmp_path):
    family = get_family("scratch")
    cfg = family.config("simple_cnn", width=0.5)
    builds = []

    def build(size=32):
        from trainables.pretrained import Weights

        builds.append(size)
        return family.build(cfg, 8, size, Weights("none"))

    cache = tmp_path / "memory.json"
    first = memory.probe("scratch:simple_cnn:0.5", build, 32, cache)
    assert memory.probe("scratch:simple_cnn:0.5", build, 32, cache) == first and builds == [32]
    assert memory.probe("scratch:simple_cnn:0.5", lambda: build(64), 64, cache)["activations"] > first["activations"]
    assert first["params"] == sum(p.numel() for p in build().parameters())
    small, big = (memory.estimate_gib(first["params"], first["activations"], b, amp=True) for b in (16, 256))
    assert memory.CONTEXT_GIB < small < big
    assert memory.estimate_gib(first["params"], first["activations"], 64, amp=False) > memory.estimate_gib(
        first["params"], first["activations"], 64, amp=True
    )


def test_the_heads_memory_caps_concurrent_trials(tmp_path):
    """gpu.yaml's head (m5.2xlarge, 32 GiB: Ray's `memory` resource is ~70 % of it) holds the full packing of its
    8 GPUs (64 one-worker trials train in process on the GPU nodes, each adding only Tune's bookkeeping to the
    head), while distributed trials, whose Tune actor and Train controller live on the head, are capped by it."""
    bootstrap = tmp_path / "ray_bootstrap_config.yaml"
    shutil.copy(ROOT / "cluster" / "gpu.yaml", bootstrap)
    head = {"CPU": 8.0, DRIVER_RESOURCE: 1000.0, "memory": 0.7 * 32 * 2**30}
    packed = plan_resources(node_capacity([head], bootstrap), workers_per_trial=1, pack="auto")
    per_trial = HEAD_GIB_PER_TRIAL["in_process"]
    assert packed.max_concurrent == 8 * MAX_PACK <= packed.head_cap
    assert HEAD_BASE_GIB + packed.max_concurrent * per_trial <= 0.7 * 32  # the arithmetic in gpu.yaml
    cpu_nodes = [head] + [{"CPU": 8.0}] * 64  # 512 CPUs: 256 two-worker trials by CPUs alone
    ddp = plan_resources(cpu_nodes, workers_per_trial=2)
    expected = int((0.7 * 32 - HEAD_BASE_GIB) / HEAD_GIB_PER_TRIAL["distributed"])
    assert ddp.head_cap == ddp.max_concurrent == expected < 256
    small = plan_resources([{**head, "memory": 0.7 * 8 * 2**30}] + [{"CPU": 8.0}] * 64, workers_per_trial=2)
    assert small.max_concurrent == max(1, int((0.7 * 8 - HEAD_BASE_GIB) / HEAD_GIB_PER_TRIAL["distributed"]))
    assert plan_resources([{"CPU": 8.0, "GPU": 1.0}], workers_per_trial=1).head_cap is None  # memory unknown
