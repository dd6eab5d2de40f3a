"""Checks for studies on a multi-machine Ray cluster: every node must reach the same tracking server
and storage, so node-local ones are refused before anything starts, and run the head's Ray and torch."""

from __future__ import annotations

from pathlib import Path

import ray
import yaml
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from trainables.paths import local_path
from trainables.tracking.mlflow_runs import is_local_uri

NETWORK_FS = ("nfs", "nfs4", "cifs", "smb3", "lustre", "gpfs", "ceph", "glusterfs", "beegfs", "fuse.")


def on_network_fs(path: str, mounts: str = "/proc/mounts") -> bool:
    """Whether `path` lies on a network filesystem (longest matching mount point in /proc/mounts)."""
    try:
        table = [line.split()[1:3] for line in Path(mounts).read_text().splitlines()]
    except OSError:
        return False
    target = str(Path(path).resolve())
    best = max(
        (m for m in table if target == m[0] or target.startswith(m[0].rstrip("/") + "/")),
        key=lambda m: len(m[0]),
        default=None,
    )
    return bool(best) and best[1].startswith(NETWORK_FS)


def shared_storage(storage: str) -> bool:
    """Whether every node reaches `storage`: an object-store URI (s3://, gs://...) or a network filesystem."""
    local = local_path(storage)
    return local is None or on_network_fs(local)


def shared_storage_problems(machines: int, mlflow_uri: str, storage: str) -> list[str]:
    """What stops a study on `machines` distinct hosts (empty when fine or on one machine)."""
    if machines <= 1:
        return []
    problems = []
    if is_local_uri(mlflow_uri):
        problems.append(
            f"--mlflow-uri {mlflow_uri} is a node-local store, but the cluster spans {machines} machines: "
            "start `mlflow server --host 0.0.0.0 --port 5000` on the head (cluster/gpu.yaml does) and "
            "pass --mlflow-uri http://HEAD_IP:5000"
        )
    if not shared_storage(storage):
        problems.append(
            f"--storage {storage} is on this node's local disk, but the cluster spans {machines} machines: "
            "pass s3://BUCKET/path, gs://BUCKET/path or a folder on a shared (NFS) mount"
        )
    return problems


# a node's first task starts a worker process that imports torch: seconds on an idle node, but Ray runs its
# workers at a low priority (nice), so on a node whose CPUs other programs keep busy it can take minutes (a 60 s
# limit ran out on a 1-CPU test node while another study shared the machine's 2 cores, 2026-12-04)
VERSIONS_TIMEOUT_S = 180.0
HEAD_RESOURCE = "node:__internal_head__"  # what Ray gives the head node alone


@ray.remote(num_cpus=0)
def _versions() -> dict[str, str]:
    import torch  # noqa: PLC0415 (on the node that runs the task, not in the driver's import)

    return {"ray": ray.__version__, "torch": torch.__version__}


def node_versions(alive: list[dict], timeout_s: float = VERSIONS_TIMEOUT_S) -> dict[str, dict[str, str] | None]:
    """Ray's and torch's versions on each node in `alive` (ray.nodes() entries), each from a task pinned to that
    node; None for a node that did not answer within `timeout_s`. Keys: "IP (node id prefix)", the head's first."""
    alive = sorted(alive, key=lambda n: HEAD_RESOURCE not in n["Resources"])
    refs = {
        f"{n['NodeManagerAddress']} ({n['NodeID'][:8]})": _versions.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
        ).remote()
        for n in alive
    }
    ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s)
    return {name: _answer(ref) if ref in set(ready) else None for name, ref in refs.items()}


def _answer(ref: ray.ObjectRef) -> dict[str, str] | None:
    """A finished version task's result; None when it failed (its node died, torch did not import)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayError:
        return None


def version_problems(versions: dict[str, dict[str, str] | None]) -> list[str]:
    """One line per node whose Ray or torch differs from the head's (the first entry), or that did not answer."""
    (head, want), *others = versions.items()
    if want is None:
        return [f"the head {head} did not report its Ray and torch versions within {VERSIONS_TIMEOUT_S:.0f} s"]
    problems = []
    for node, got in others:
        if got is None:
            problems.append(f"node {node} did not report its Ray and torch versions within {VERSIONS_TIMEOUT_S:.0f} s")
        elif got != want:
            problems.append(
                f"node {node} runs Ray {got['ray']} and torch {got['torch']}, the head {head} Ray {want['ray']} "
                f"and torch {want['torch']}: install every node with `pip install -c constraints.txt -e .`"
            )
    return problems


def cluster_problems(alive: list[dict], mlflow_uri: str, storage: str) -> list[str]:
    """What stops a study on the cluster of `alive` nodes (ray.nodes() entries): node-local stores on several
    machines, nodes whose Ray or torch is not the head's. Empty when fine; one machine needs no task."""
    machines = len({n["NodeManagerAddress"] for n in alive})
    problems = shared_storage_problems(machines, mlflow_uri, storage)
    return problems + (version_problems(node_versions(alive)) if len(alive) > 1 else [])


BOOTSTRAP = Path.home() / "ray_bootstrap_config.yaml"  # what `ray up` gives the head's autoscaler


def node_capacity(alive: list[dict], bootstrap: Path = BOOTSTRAP) -> list[dict]:
    """Resources per node the study can count on: the nodes alive now, and on an autoscaling cluster
    every worker the autoscaler may add (node types x max_workers), so concurrency covers GPU nodes that
    do not exist yet; their trials' pending placement groups are what makes the autoscaler add them."""
    if not bootstrap.is_file():
        return alive
    config = yaml.safe_load(bootstrap.read_text())
    types = config.get("available_node_types", {})
    head = [n for n in alive if n.get("artsweep_driver")] or alive[:1]
    workers = [
        dict(t.get("resources", {}))
        for name, t in types.items()
        if name != config.get("head_node_type")
        for _ in range(int(t.get("max_workers", 0)))
    ]
    return head + workers
