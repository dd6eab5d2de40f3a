"""Cluster planning: node-local stores refused on several machines, and nodes whose Ray or torch is not the
head's; concurrency from the nodes, including those the autoscaler may add."""

import shutil
from pathlib import Path

import pytest

from sweep.cluster import node_capacity, on_network_fs, shared_storage_problems, version_problems
from sweep.resources import DRIVER_CPUS, DRIVER_RESOURCE, plan_resources

pytestmark = pytest.mark.unit


def test_one_machine_accepts_local_everything():
    assert shared_storage_problems(1, "sqlite:///mlflow.db", "/tmp/ray_results") == []


def test_several_machines_refuse_node_local_stores(tmp_path):
    problems = shared_storage_problems(3, "sqlite:///mlflow.db", str(tmp_path))
    assert len(problems) == 2 and "mlflow server" in problems[0] and "s3://" in problems[1]
    assert shared_storage_problems(3, "http://10.0.0.10:5000", "s3://bucket/artsweep") == []


def test_network_mounts_count_as_shared(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/vda / ext4 rw 0 0\nserver:/export /mnt/shared nfs4 rw 0 0\n")
    assert on_network_fs("/mnt/shared/artsweep", str(mounts))
    assert not on_network_fs("/home/me/artsweep", str(mounts))
    assert not on_network_fs("/mnt/sharedish", str(mounts))


def test_concurrency_counts_gpu_nodes_the_autoscaler_may_add(tmp_path):
    bootstrap = tmp_path / "ray_bootstrap_config.yaml"
    shutil.copy(Path(__file__).resolve().parents[1] / "cluster" / "gpu.yaml", bootstrap)
    head_only = [{"CPU": 8.0, DRIVER_RESOURCE: 1000.0}]  # no GPU worker up yet
    nodes = node_capacity(head_only, bootstrap)
    assert len(nodes) == 1 + 8 and sum(n.get("GPU", 0) for n in nodes) == 8
    plan = plan_resources(nodes, workers_per_trial=2)
    assert plan.use_gpu and plan.max_concurrent == 4 and plan.cpus_per_worker == 4
    assert plan.driver[DRIVER_RESOURCE] > 0  # drivers stay on the head
    assert node_capacity(head_only, tmp_path / "absent.yaml") == head_only


def test_local_cpu_plan_leaves_room_for_every_driver():
    plan = plan_resources([{"CPU": 2.0}], workers_per_trial=1)
    assert plan.max_concurrent == 2 and not plan.use_gpu and "artsweep_driver" not in plan.driver
    assert 2 * DRIVER_CPUS + 2 * plan.cpus_per_worker <= 2.0


HEAD = {"ray": "2.60.0", "torch": "2.14.1+cu130"}


def test_nodes_running_the_heads_versions_pass():
    assert version_problems({"10.0.0.10 (aaaa)": HEAD, "10.0.0.11 (bbbb)": dict(HEAD)}) == []
    assert version_problems({"10.0.0.10 (aaaa)": HEAD}) == []


def test_a_node_with_another_ray_or_torch_is_named_with_both_versions():
    versions = {
        "10.0.0.10 (aaaa)": HEAD,
        "10.0.0.11 (bbbb)": {"ray": "2.61.0", "torch": "2.14.1+cu130"},
        "10.0.0.12 (cccc)": {"ray": "2.60.0", "torch": "2.14.1+cpu"},  # same release, another build: refused
        "10.0.0.13 (dddd)": dict(HEAD),
        "10.0.0.14 (eeee)": None,  # no answer within the timeout
    }
    problems = version_problems(versions)
    assert len(problems) == 3 and all("\n" not in p for p in problems)
    assert problems[0].startswith("node 10.0.0.11 (bbbb) runs Ray 2.61.0 and torch 2.14.1+cu130, the head ")
    assert "10.0.0.10 (aaaa) Ray 2.60.0 and torch 2.14.1+cu130" in problems[0]
    assert "torch 2.14.1+cpu" in problems[1] and "pip install -c constraints.txt -e ." in problems[1]
    assert problems[2].startswith("node 10.0.0.14 (eeee) did not report")
    assert version_problems({"10.0.0.10 (aaaa)": None, "10.0.0.11 (bbbb)": HEAD})[0].startswith("the head 10.0.0.10")
