"""Loopback networking shared by the serving launcher, the multi-node set-up and the tests."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for loopback servers: mlflow, Ray nodes, torch.distributed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
