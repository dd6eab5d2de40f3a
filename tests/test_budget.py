"""The budget's stop rule with a fake clock: when a new trial may start, when a running one stops (at an
epoch boundary only), the parse of --time-budget, and one real budgeted study."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from analysis.reading.runs import trial_rows, with_histories
from sweep.budget import CLOSE_S, Budget, for_study, parse_duration, remember, remembered
from sweep.resources import plan_resources
from tests.test_packing import settings
from trainables.tracking.mlflow_runs import latest_study

ROOT = Path(__file__).resolve().parents[1]


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t

    def tick(self, s):
        self.t += s


def run_epochs(b, clock, trial, startup_s, epoch_s, epochs):
    """A trial that starts, pays start-up, then reports `epochs` epochs of epoch_s each; returns the epoch at
    which the rule stopped it (None: it ran them all)."""
    b.started(trial)
    clock.tick(startup_s)
    for e in range(1, epochs + 1):
        clock.tick(epoch_s)
        b.reported(trial, e)
        if b.should_stop(trial):
            return e
    return None


@pytest.mark.unit
@pytest.mark.parametrize(
    "text, seconds", [("90s", 90), ("20m", 1200), ("2h", 7200), ("1h30m", 5400), ("600", 600), ("1.5h", 5400)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.unit
@pytest.mark.parametrize("text", ["", "5x", "m", "10m5", "0", "-5m", "1h 30m"])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.unit
def test_no_budget_never_stops_anything():
    clock = Clock()
    b = Budget(max_t=5, clock=clock)
    assert not b.limited
    assert run_epochs(b, clock, "a", 10, 100, 5) is None
    assert b.can_start()


@pytest.mark.unit
def test_a_trial_stops_at_the_epoch_whose_successor_would_pass_the_wall_budget():
    clock = Clock()
    b = Budget(wall_s=100 + CLOSE_S, max_t=10, clock=clock)  # 100 s for trials, CLOSE_S to close
    # start-up 10 s, then 20 s epochs: reports at 30, 50, 70, 90; after 70 the next would end at 90 (fits),
    # after 90 it would end at 110 > 100
    assert run_epochs(b, clock, "a", 10, 20, 10) == 4
    assert b.elapsed_s() == 90
    b.ended("a")
    assert not b.can_start() and b.exhausted()  # 10 s left; a new trial needs 30 s to its first report


@pytest.mark.unit
def test_new_trials_start_only_while_they_can_reach_their_first_rung():
    clock = Clock()
    b = Budget(wall_s=300 + CLOSE_S, max_t=4, grace=2, clock=clock)
    assert b.can_start()  # nothing measured yet: the first trials always start
    run_epochs(b, clock, "a", 20, 10, 4)  # 60 s: start-up + first epoch 30 s, 10 s per epoch after
    b.ended("a")
    assert b.new_trial_s() == pytest.approx(40)  # 30 + (grace 2 - 1) x 10
    clock.t = b.t0 + 259
    assert b.can_start()
    clock.t = b.t0 + 261
    assert not b.can_start()


@pytest.mark.unit
def test_a_remembered_cost_keeps_the_budget_before_any_trial_reported(tmp_path, monkeypatch):
    """The last study of the same shape on this machine measured 50 s to a first report and 10 s per epoch: a
    study with 45 s left starts no trial (its first epoch would pass the budget), one with 80 s does; a study of
    another shape knows nothing and starts its first trials."""
    monkeypatch.setenv("ARTSWEEP_CACHE", str(tmp_path))
    s = settings(family="scratch", data_dir="/data/a")
    plan = plan_resources([{"CPU": 2.0}], workers_per_trial=1)
    clock = Clock()
    before = Budget(wall_s=600, max_t=4, grace=1, clock=clock)
    run_epochs(before, clock, "a", 40, 10, 4)
    before.ended("a")
    remember(s, plan, before)
    assert remembered(s, plan) == {"first_s": 50.0, "epoch_s": 10.0}
    b = for_study(s.replace(time_budget_s=45 + CLOSE_S), plan, grace=1, started=time.monotonic())
    assert b.new_trial_s() == pytest.approx(50) and not b.can_start() and b.exhausted()
    b = for_study(s.replace(time_budget_s=80 + CLOSE_S), plan, grace=1, started=time.monotonic())
    assert b.can_start()
    other = for_study(s.replace(data_dir="/data/b", time_budget_s=45 + CLOSE_S), plan, 1, started=time.monotonic())
    assert other.new_trial_s() == 0 and other.can_start()


@pytest.mark.unit
def test_gpu_hours_count_every_running_trial_and_what_it_will_still_use():
    clock = Clock()
    b = Budget(hours=0.6, per_trial=2.0, max_t=10, clock=clock)  # 2160 GPU-s; 2 GPUs per trial
    for t in ("a", "b"):
        b.started(t)
    for epoch in (1, 2):
        clock.tick(60)
        for t in ("a", "b"):
            b.reported(t, epoch)  # start-up + first epoch 60 s, then 60 s per epoch
    assert b.resource_s() == pytest.approx(480)
    # spent 480 + still needed 2 trials x 8 epochs x 60 s x 2 GPUs (1920) + a new trial's 60 s x 2 > 2160
    assert not b.can_start() and not b.exhausted()
    assert not b.should_stop("a")
    stops = {}
    for epoch in range(3, 11):
        clock.tick(60)
        for t in ("a", "b"):
            b.reported(t, epoch)
            if t not in stops and b.should_stop(t):
                stops[t] = epoch
    # at epoch 9 both have spent 2 x 540 x 2 = 2160 - another epoch each would pass the budget
    assert stops == {"a": 9, "b": 9}


@pytest.mark.unit
def test_gpu_hours_stop_running_trials_before_the_budget_is_passed():
    clock = Clock()
    b = Budget(hours=0.1, per_trial=1.0, max_t=100, clock=clock)  # 360 GPU-s
    stopped = run_epochs(b, clock, "a", 0, 50, 100)
    # reports at 50, 100, ... ; after 300 s the next epoch would reach 350 (fits), after 350 -> 400 > 360
    assert stopped == 7
    assert b.resource_s() <= 360


@pytest.mark.unit
def test_resume_carries_the_spend_over():
    clock = Clock()
    b = Budget(wall_s=100 + CLOSE_S, spent_wall_s=95, max_t=5, clock=clock)
    assert b.elapsed_s() == 95
    assert run_epochs(b, clock, "a", 0, 3, 5) == 1  # 98 s, the next epoch would end at 101


@pytest.mark.e2e
@pytest.mark.alone  # its wall time is the claim: no other worker's study shares the CPUs meanwhile
def test_a_time_budgeted_study_ends_inside_it_and_records_its_spend(tmp_path):
    """A real smoke study with --time-budget and no --num-samples: as many trials as fit, every one ended at an
    epoch boundary (its logged epochs are the epochs it reached), within 10 % of the budget from the command's
    start to its exit, and the spend on the parent and on every trial run."""
    budget_s = 90  # about 20 s of start-up, then two trials at a time: at least 2 trials on a 2-core box
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [
        sys.executable,
        str(ROOT / "tune.py"),
        "--smoke",
        "--max-epochs",
        "3",
        "--time-budget",
        f"{budget_s}s",
        "--experiment",
        "budget",
        "--mlflow-uri",
        uri,
        "--storage",
        str(tmp_path / "ray"),
        "--no-dashboard",
    ]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    wall = time.monotonic() - t0
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert wall <= 1.1 * budget_s, f"{wall:.0f} s for a {budget_s} s budget"
    assert "trials while the budget lasts" in out and f"of a {budget_s} s budget" in out
    client = MlflowClient(uri)
    exp, parent = latest_study(client, "budget")
    assert parent.info.status == "FINISHED"
    assert 0 < parent.data.metrics["spend_wall_s"] <= 1.1 * budget_s
    rows = with_histories(client, trial_rows(client, exp.experiment_id, parent.info.run_id))
    assert len(rows) >= 2
    cpu_s = 0.0
    for r in rows:
        run = client.get_run(r.run_id)
        assert run.info.status == "FINISHED"
        assert int(run.data.tags["epochs_reached"]) == r.epochs == len(r.history) >= 1
        assert 0 < run.data.metrics["spend_wall_s"] < wall
        cpu_s += run.data.metrics["spend_cpu_s"]
    assert parent.data.metrics["spend_cpu_s"] == pytest.approx(cpu_s, rel=0.05)
