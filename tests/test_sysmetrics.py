"""System metrics: MLflow's monitors, sampled in a thread and averaged per epoch (trainables.tracking.sysmetrics)."""

import time

import pytest

from trainables.tracking import sysmetrics

pytestmark = pytest.mark.unit


def _busy(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sum(range(10_000))


def test_every_take_averages_real_use_since_the_last_one_the_first_included():
    sampler = sysmetrics.Sampler(interval_s=0.5)
    try:
        for _ in range(2):
            _busy(1.5)
            values = sampler.take()
            assert 0 < values["cpu_utilization_percentage"] <= 100  # a busy core shows, from the first epoch on
            assert values["system_memory_usage_megabytes"] > 0
    finally:
        sampler.close()


def test_names_are_mlflows_with_the_node_for_later_nodes():
    assert sysmetrics.metric_names({"cpu_utilization_percentage": 5.0}, 0) == {"system/cpu_utilization_percentage": 5.0}
    assert list(sysmetrics.metric_names({"gpu_0_utilization_percentage": 1.0}, 2)) == [
        "system/node2/gpu_0_utilization_percentage"
    ]
