"""benchmarks/pareto.py: its stand-in latency (a cost of the inputs that conflicts with accuracy), its anytime
hypervolume bookkeeping, the study's own Pareto construction it measures, and a tiny run of the whole benchmark.
The full run is `python benchmarks/pareto.py --plot benchmarks/pareto.png` (about a minute on 2 cores)."""

import json
import subprocess
import sys

import numpy as np
import pytest
from optuna.distributions import FloatDistribution

from benchmarks import pareto
from benchmarks.search import BENCHES
from sweep.moasha import MOASHA
from tests.conftest import ROOT
from trainables.objectives import hypervolume, on_front


@pytest.mark.unit
def test_latency_rises_with_every_input_from_10_to_100_ms():
    assert pareto.latency_ms({"X_0": 0.0, "X_1": 0.0, "X_2": 0.0}) == pytest.approx(10.0)
    assert pareto.latency_ms({f"X_{i}": 1.0 for i in range(6)}) == pytest.approx(100.0)
    base = {f"X_{i}": 0.3 for i in range(6)}
    for i in range(6):
        assert pareto.latency_ms({**base, f"X_{i}": 0.4}) > pareto.latency_ms(base)
    assert pareto.REFERENCE == (0.0, 100.0)  # Hartmann's floor, the slowest configuration


@pytest.mark.unit
def test_scalarised_takes_lambda_per_90_ms_above_the_fastest():
    assert pareto.scalarised(2.0, 10.0) == pytest.approx(2.0)
    assert pareto.scalarised(2.0, 100.0) == pytest.approx(2.0 - pareto.LAMBDA)


@pytest.mark.unit
def test_front_counts_each_trials_best_and_full_fidelity_apart():
    front = pareto.Front(max_t=4)
    assert front.add("a", 1.0, 50.0, epoch=1) == (pytest.approx(50.0), 0.0)  # (100 - 50) x 1.0, nothing at max_t
    assert front.add("a", 0.5, 50.0, epoch=2)[0] == pytest.approx(50.0)  # a worse epoch keeps the trial's best
    front.add("b", 2.0, 80.0, epoch=1)  # stopped after one epoch: counts as trained, not at full fidelity
    trained, full = front.add("a", 1.5, 50.0, epoch=4)
    assert trained == pytest.approx(hypervolume([(1.5, 50.0), (2.0, 80.0)], ("max", "min"), pareto.REFERENCE))
    assert full == pytest.approx(1.5 * 50.0)


@pytest.mark.unit
def test_ours_is_the_studys_pareto_construction():
    space = {"X_0": FloatDistribution(0.0, 1.0)}
    make, scalar = pareto.configurations(max_t=16)[pareto.OURS]
    search, sched = make(0, space)
    assert not scalar and isinstance(sched, MOASHA) and sched.metrics == pareto.GOALS.keys
    assert search.metric == list(pareto.GOALS.keys) and search.mode == ["max", "min"]
    assert {pareto.OURS, pareto.RANDOM} <= set(pareto.configurations(max_t=16))


@pytest.mark.integration  # installs mf-prior-bench on first use (pip)
def test_latency_conflicts_with_accuracy_on_both_benchmarks():
    m = pareto.mfpbench()
    for name in BENCHES:
        bench = m.get(name, seed=0)
        keys = list(bench.space.keys())
        optimum = {k: getattr(bench.optimum, k) for k in keys}
        cheapest = dict.fromkeys(keys, 0.0)
        top, floor = (pareto.hartmann(bench, c, 16, 16) for c in (optimum, cheapest))
        assert pareto.latency_ms(optimum) > 40 and floor < 0.1 * top, name  # the best is slow, the fastest poor
        rng = np.random.default_rng(0)
        sample = [dict(zip(keys, x)) for x in rng.random((300, len(keys)))]
        points = [(pareto.hartmann(bench, c, 16, 16), pareto.latency_ms(c)) for c in sample]
        assert on_front(points, ("max", "min")).sum() >= 5, name  # a front, not one point


@pytest.mark.integration  # runs the benchmark in a subprocess
def test_tiny_run_ends_with_json_for_both_benchmarks():
    proc = subprocess.run(
        [sys.executable, "benchmarks/pareto.py", "--seeds", "2", "--budget-trials", "3", "--max-t", "4"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert pareto.OURS in proc.stdout and pareto.RANDOM in proc.stdout
    assert set(json.loads(lines[-1])) == set(BENCHES)
