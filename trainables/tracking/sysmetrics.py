"""CPU, memory and GPU use of a trial's node, sampled by MLflow's own system-metrics monitors.

One sampler per node of a trial (its local rank 0 runs it) reads MLflow's CPUMonitor and GPUMonitor (psutil,
nvidia-ml-py) every SAMPLE_S seconds in a thread; each epoch's report carries the averages since the last one
(SYSTEM_KEY) and trainables.tracking.recorder logs them to the child run as `system/<name>` (`system/node<k>/<name>` for
a trial's k-th node), the names MLflow's UI shows under "System metrics". They travel with the report rather
than from a monitor thread writing to MLflow itself, so a tracking-server outage delays them (trainables.tracking.outbox)
and never loses them, and a worker never talks to the server.
"""

from __future__ import annotations

import threading

SAMPLE_S = 5.0  # seconds between samples (MLflow's default is 10; epochs of small trials are shorter)
PREFIX = "system/"


class Sampler:
    """Starts sampling in a thread (MLflow imports there, off the setup's critical path); take() averages."""

    def __init__(self, interval_s: float = SAMPLE_S):
        import psutil

        psutil.cpu_percent()  # CPU use is measured between calls of one thread: this one's origin (take)
        self.interval_s, self.monitors = interval_s, []
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="artsweep-system-metrics", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        psutil.cpu_percent()  # the sampling thread's origin
        try:  # a monitor that cannot start costs its metrics, never a trial (nor a wait per epoch: _ready)
            from mlflow.system_metrics.metrics.cpu_monitor import CPUMonitor

            self.monitors = [CPUMonitor()]
            from mlflow.system_metrics.metrics.gpu_monitor import GPUMonitor

            self.monitors.append(GPUMonitor())  # raises without an NVIDIA driver (CPU nodes)
        except Exception:  # noqa: BLE001 - no GPU, or no nvidia-ml-py: CPU and memory only
            pass
        finally:
            self._ready.set()
        while not self._stop.wait(self.interval_s):
            self._collect()

    def _collect(self) -> None:
        with self._lock:
            for m in self.monitors:
                m.collect_metrics()

    def take(self) -> dict[str, float]:
        """Averages of the samples since the last take (one fresh sample at least), unprefixed names."""
        if not self._ready.wait(timeout=30):
            return {}
        self._collect()
        out = {}
        with self._lock:
            for m in self.monitors:
                out.update(m.aggregate_metrics())
                m.clear_metrics()
        return {k: float(v) for k, v in out.items()}

    def close(self) -> None:
        self._stop.set()


def metric_names(values: dict[str, float], node_rank: int) -> dict[str, float]:
    """`system/<name>` for a trial's first node, `system/node<k>/<name>` for the others."""
    prefix = PREFIX + (f"node{node_rank}/" if node_rank else "")
    return {prefix + k: v for k, v in values.items()}
