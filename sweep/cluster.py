"""Checks for studies on a multi-machine Ray cluster: every node must reach the same tracking server
and storage, so node-local ones are refused before anything starts."""

from __future__ import annotations

from pathlib import Path

import yaml

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
