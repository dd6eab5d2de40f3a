"""Where artsweep keeps things: the study's storage (a path on this machine, or a remote filesystem's URI) and
this machine's cache folder (`ARTSWEEP_CACHE`, default ~/.cache/artsweep)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """This machine's artsweep cache: the built-in data set, decode caches, memory probes, latency figures, pending
    MLflow writes, MLflow's empty SQLite store and Ray's log of a study whose storage is remote. Read at each call,
    so a changed `ARTSWEEP_CACHE` counts."""
    return Path(os.environ.get("ARTSWEEP_CACHE", Path.home() / ".cache" / "artsweep"))


def remote(storage: str) -> bool:
    """Whether a Ray storage path is a remote filesystem's URI (s3://, gs://, ...) rather than a folder this
    machine writes to (a plain path or file://..., which may be a shared NFS mount)."""
    return "://" in storage and not storage.startswith("file://")


def sqlite_file(uri: str) -> Path | None:
    """The file of a SQLite tracking URI (sqlite:///path); None for any other store (a server, PostgreSQL)."""
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def local_path(storage: str) -> str | None:
    """The folder a Ray storage path names on this machine (file:// removed); None when it is remote."""
    return None if remote(storage) else storage.removeprefix("file://")
