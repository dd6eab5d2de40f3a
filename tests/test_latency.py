"""The inference cost of a configuration (trainables.latency): FLOPs counted exactly, parameters, a latency and a
throughput measured with torch.utils.benchmark, each configuration measured once per machine and cached. No timing
is asserted against a bound (that is benchmarks' business): only that the figures are real and consistent."""

import json

import pytest
import torch
from torch import nn

from trainables import latency

pytestmark = pytest.mark.unit


def mlp(width: int) -> nn.Module:
    """Flatten -> Linear(3*8*8, width) -> ReLU -> Linear(width, 5): 2 * (192 * width + width * 5) FLOPs per image."""
    return nn.Sequential(nn.Flatten(), nn.Linear(192, width), nn.ReLU(), nn.Linear(width, 5))


def test_flops_and_parameters_are_counted_exactly():
    for width in (16, 64):
        model = mlp(width).eval()
        assert latency.count_gflops(model, 8, torch.device("cpu")) * 1e9 == pytest.approx(2 * (192 + 5) * width)
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False).eval()  # per image: 2 * 3*3*3 * 4 * 16*16 FLOPs
    assert latency.count_gflops(conv, 16, torch.device("cpu")) * 1e9 == pytest.approx(2 * 27 * 4 * 256)


def test_a_measurement_times_batch_1_and_the_serving_batch(monkeypatch):
    monkeypatch.setattr(latency, "MIN_RUN_S", 0.05)
    cost = latency.measure(mlp(64), 8, batch=8, threads=1)
    assert cost.params == 192 * 64 + 64 + 64 * 5 + 5 and cost.batch == 8 and cost.threads == 1
    assert cost.latency_ms > 0 and cost.throughput_img_s > 0 and cost.runtime == "torch-eager"
    assert cost.device.startswith("cpu: ") and cost.precision == "fp32"
    bf16 = latency.measure(mlp(64), 8, batch=8, threads=1, precision="bf16")
    assert bf16.precision == "bf16" and bf16.gflops == cost.gflops
    with pytest.raises(ValueError, match="fp32 or bf16"):
        latency.measure(mlp(8), 8, precision="int8")


def test_each_configuration_is_measured_once_per_machine(tmp_path, monkeypatch):
    monkeypatch.setattr(latency, "MIN_RUN_S", 0.05)
    built = []

    def build(width):
        def make():
            built.append(width)
            return mlp(width)

        return make

    table = tmp_path / "latency.json"
    first = latency.cached("mlp-16", build(16), 8, batch=4, cache=table)
    again = latency.cached("mlp-16", build(16), 8, batch=4, cache=table)
    other = latency.cached("mlp-64", build(64), 8, batch=4, cache=table)
    assert built == [16, 64] and first == again and other.params > first.params
    keys = sorted(json.loads(table.read_text()))
    assert len(keys) == 2 and all("|8px|fp32|torch-eager|cpu: " in k and k.endswith("|1t|b4") for k in keys)


def test_a_damaged_table_is_measured_again_and_rewritten(tmp_path, monkeypatch):
    """A cache that is not a JSON table (cut short, hand-edited) stops nothing: lookups miss, cached() measures and
    writes a whole table in its place."""
    monkeypatch.setattr(latency, "MIN_RUN_S", 0.05)
    table = tmp_path / "latency.json"
    for damaged in ('{"mlp-16|8px', "[1, 2]"):
        table.write_text(damaged)
        assert latency.lookup("mlp-16", 8, batch=4, cache=table) is None
        cost = latency.cached("mlp-16", lambda: mlp(16), 8, batch=4, cache=table)
        assert latency.lookup("mlp-16", 8, batch=4, cache=table) == cost and len(json.loads(table.read_text())) == 1
