"""Study budgets: wall time (--time-budget) and accelerator-hours (--gpu-hours), and the rule that keeps to them.

The rule, checked by the study's driver as Tune runs:
- a new trial starts only if it can reach its first ASHA rung inside the budget: wall now + its expected
  start-up and grace epochs <= the deadline; hours spent + what the running trials will still use (each to
  max_t: ASHA may stop them early, but a trial started now must not be the one the budget cuts) + the new
  trial's cost <= the budget;
- a running trial stops at an epoch boundary (when it reports) once its next epoch would pass the budget.
So a study ends inside its budget plus one trial's teardown, and no trial is cut off mid-epoch. Estimates come
from the study's own trials (start-up to first report, seconds per epoch); before the first report, from the
last study of the same shape on this machine (family, image size, workers, device, data: `trial_costs.json` in
the artsweep cache, written when a study ends), so a budget too short for the first trials' first epoch starts
none of them. Without such a study the first trials always start.

`--gpu-hours` counts GPU-seconds reserved (workers x 1 GPU x wall); on a CPU-only cluster the same flag counts
CPU-hours (workers x CPUs per worker x wall). A study's spend so far (`spend_*` metrics on its parent run) is
carried into --resume, so a resumed study continues the same budget.

One study per driver process: Tune pickles its searcher, callbacks and scheduler separately (and restores the
searcher from its own checkpoint), so they would not share one object across --resume; they read the study's
budget here, set by sweep.study when it starts or resumes.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from ray import tune

from sweep.scheduler import epochs_done
from trainables.paths import cache_root

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
CLOSE_S = 10.0  # wall seconds a time budget keeps for the study's end: Ray's shutdown, closing the record and the
# summary take 5-10 s on 2 busy cores
WALL, CPU, GPU, COST = "spend_wall_s", "spend_cpu_s", "spend_gpu_s", "spend_cost"  # MLflow metric names


def parse_duration(text: str) -> float:
    """'90s', '20m', '2h', '1h30m' or plain seconds ('600') -> seconds > 0; ValueError otherwise."""
    t = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        seconds = float(t)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", t)
        if not parts or "".join(n + u for n, u in parts) != t:
            raise ValueError(f"not a duration: {text!r} (examples: 90s, 20m, 2h, 1h30m)")
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"a budget must be positive, got {text!r}")
    return seconds


@dataclass
class _Trial:
    started: float  # clock when Tune started it
    epochs: int = 0  # epochs done (sweep.scheduler.epochs_done): a trial started again continues its count
    first: Optional[float] = None  # clock at its first report since Tune started it
    first_epoch: int = 0  # epochs done at that report
    last: Optional[float] = None  # clock at its latest report

    def epoch_s(self) -> Optional[float]:
        """Seconds per epoch after the first one reported (which also paid start-up)."""
        if self.epochs > self.first_epoch:
            return (self.last - self.first) / (self.epochs - self.first_epoch)
        return None


@dataclass
class Budget:
    wall_s: Optional[float] = None  # --time-budget, seconds from the study's start (None: no limit)
    hours: Optional[float] = None  # --gpu-hours (CPU-hours on a CPU-only cluster)
    per_trial: float = 1.0  # accelerators (or CPUs) one trial reserves
    max_t: int = 1  # epochs of a trial that runs its budget (ASHA's max_t)
    grace: int = 1  # epochs before ASHA's first decision
    spent_wall_s: float = 0.0  # carried over from earlier runs of this study (--resume)
    spent_resource_s: float = 0.0  # accelerator- (or CPU-) seconds of ended trials, incl. earlier runs
    clock: Callable[[], float] = time.monotonic
    trials: dict = field(default_factory=dict)  # running trial_id -> _Trial
    _first_s: list = field(default_factory=list)  # start-up + first epoch of every trial that reported
    _epoch_s: list = field(default_factory=list)  # seconds per epoch of every trial with >= 2 epochs
    cut: set = field(default_factory=set)  # trial ids the budget stopped (BudgetStopper)
    prior_first_s: float = 0.0  # start-up + first epoch of a trial, before this study measured one (trial_costs)
    prior_epoch_s: float = 0.0  # seconds per later epoch, likewise

    def __post_init__(self):
        self.t0 = self.clock() - self.spent_wall_s

    @property
    def limited(self) -> bool:
        return self.wall_s is not None or self.hours is not None

    # --- what Tune tells us
    def started(self, trial_id: str) -> None:
        self.trials[trial_id] = _Trial(self.clock())

    def reported(self, trial_id: str, epochs: int) -> None:
        t = self.trials.get(trial_id)
        if t is None:
            return
        now = self.clock()
        if t.first is None:
            t.first, t.first_epoch = now, epochs
            self._first_s.append(now - t.started)
        t.epochs, t.last = epochs, now

    def ended(self, trial_id: str) -> float:
        """Forget a trial; returns its wall seconds since Tune started it (x per_trial is now spent)."""
        t = self.trials.pop(trial_id, None)
        if t is None:
            return 0.0
        if t.epoch_s() is not None:
            self._epoch_s.append(t.epoch_s())
        wall = self.clock() - t.started
        self.spent_resource_s += wall * self.per_trial
        return wall

    # --- estimates (means of the latest 20 trials)
    @staticmethod
    def _mean(xs: list) -> float:
        return sum(xs[-20:]) / len(xs[-20:]) if xs else 0.0

    def epoch_s(self, trial_id: Optional[str] = None) -> float:
        own = self.trials[trial_id].epoch_s() if trial_id in self.trials else None
        if own is not None:
            return own
        running = [e for e in (t.epoch_s() for t in self.trials.values()) if e is not None]
        if self._epoch_s or running:
            return self._mean(self._epoch_s + running)
        t = self.trials.get(
            trial_id
        )  # nothing measured but its first epoch: that, start-up included (an over-estimate)
        return t.first - t.started if t is not None and t.first is not None else self.prior_epoch_s

    def new_trial_s(self) -> float:
        """Wall seconds a new trial needs to reach ASHA's first decision: start-up + grace epochs."""
        first = self._mean(self._first_s) if self._first_s else self.prior_first_s
        return first + max(0, self.grace - 1) * (self._mean(self._epoch_s) if self._epoch_s else self.prior_epoch_s)

    def measured(self) -> dict:
        """This study's estimates, for trial_costs: {} before any trial reported."""
        if not self._first_s:
            return {}
        return {"first_s": round(self._mean(self._first_s), 2), "epoch_s": round(self._mean(self._epoch_s), 2)}

    def elapsed_s(self) -> float:
        return self.clock() - self.t0

    def resource_s(self) -> float:
        """Spent so far: ended trials plus the running ones up to now."""
        now = self.clock()
        return self.spent_resource_s + sum((now - t.started) * self.per_trial for t in self.trials.values())

    def _still_needed_s(self) -> float:
        return sum(max(0, self.max_t - t.epochs) * self.epoch_s(tid) * self.per_trial for tid, t in self.trials.items())

    # --- the rule
    def can_start(self) -> bool:
        if self.wall_s is not None and self.elapsed_s() + self.new_trial_s() > self.wall_s - CLOSE_S:
            return False
        if self.hours is not None and (
            self.resource_s() + self._still_needed_s() + self.new_trial_s() * self.per_trial > self.hours * 3600
        ):
            return False
        return True

    def should_stop(self, trial_id: str) -> bool:
        """At a trial's report: would its next epoch pass the budget?"""
        if trial_id not in self.trials:
            return False
        if self.wall_s is not None and self.elapsed_s() + self.epoch_s(trial_id) > self.wall_s - CLOSE_S:
            return True
        if self.hours is not None:
            next_epochs = sum(self.epoch_s(tid) * self.per_trial for tid in self.trials)
            return self.resource_s() + next_epochs > self.hours * 3600
        return False

    def exhausted(self) -> bool:
        """No trial may start now and none runs that could free budget: the searcher is done."""
        return not self.trials and not self.can_start()


def cost_key(s, plan) -> str:
    """A study's shape as far as a trial's cost goes: family, input size, workers, device, data, concurrency."""
    where = f"gpu{plan.gpu_gib:g}" if plan.use_gpu else f"cpu{plan.cpus_per_worker:g}"
    data = f"{s.data_dir}@{s.max_train_images or 'all'}"
    return f"{s.family}|{s.image_size or 'family'}px|{s.workers_per_trial}w|{where}|{plan.max_concurrent}x|{data}"


def _costs_file() -> Path:
    return cache_root() / "trial_costs.json"


def remembered(s, plan) -> dict:
    """The trial costs the last study of this shape measured on this machine ({} if none, or unreadable)."""
    try:
        return json.loads(_costs_file().read_text()).get(cost_key(s, plan), {})
    except (OSError, ValueError):
        return {}


def remember(s, plan, b: Budget) -> None:
    """Keep this study's trial costs for the next study of its shape (best effort: a cache)."""
    measured = b.measured()
    if not measured:
        return
    try:
        path = _costs_file()
        costs = json.loads(path.read_text()) if path.is_file() else {}
        costs[cost_key(s, plan)] = measured
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(costs, indent=1, sort_keys=True))
        tmp.replace(path)  # atomic: two studies ending at once leave one whole file
    except (OSError, ValueError):
        pass


def for_study(s, plan, grace: int, started: float, spent: Optional[dict] = None) -> Budget:
    """The Budget of a study (s: RunSettings, plan: sweep.resources.ResourcePlan) whose command started at
    time.monotonic() `started`; `spent`: the parent run's spend metrics when the study is resumed."""
    spent = spent or {}
    prior = remembered(s, plan)
    return Budget(
        prior_first_s=float(prior.get("first_s", 0.0)),
        prior_epoch_s=float(prior.get("epoch_s", 0.0)),
        wall_s=s.time_budget_s or None,
        hours=s.gpu_hours or None,
        per_trial=s.workers_per_trial * (1.0 if plan.use_gpu else plan.cpus_per_worker),
        max_t=s.max_epochs,
        grace=grace,
        spent_wall_s=spent.get(WALL, 0.0) + time.monotonic() - started,
        spent_resource_s=spent.get(GPU if plan.use_gpu else CPU, 0.0),
    )


def trial_spend(wall_s: float, s) -> dict:
    """What one trial reserved: wall seconds from Tune starting it to its end, and CPU- and GPU-seconds."""
    workers = s.workers_per_trial
    return {WALL: wall_s, CPU: wall_s * workers * s.cpus_per_worker, GPU: wall_s * workers if s.use_gpu else 0.0}


def study_spend(b: Budget, s) -> dict:
    """The study's spend so far (its parent run's metrics): wall since it started (earlier runs included),
    the trials' GPU- or CPU-seconds, and with --price-per-gpu-hour the cost of the GPU-hours."""
    out = {WALL: b.elapsed_s(), GPU if s.use_gpu else CPU: b.resource_s()}
    if s.price_per_gpu_hour and s.use_gpu:
        out[COST] = b.resource_s() / 3600 * s.price_per_gpu_hour
    return out


_ACTIVE: Optional[Budget] = None


def activate(budget: Optional[Budget]) -> None:
    global _ACTIVE
    _ACTIVE = budget


def active() -> Optional[Budget]:
    return _ACTIVE


class BudgetStopper(tune.Stopper):
    """Stops a trial at an epoch boundary (its report) when its next epoch would pass the budget. Tune asks the
    stopper first of all about each report, so the report is recorded here (trial starts and ends are recorded
    by sweep.callbacks.CloseTrialRuns, which also logs each trial's spend)."""

    def __call__(self, trial_id, result) -> bool:
        b = active()
        if b is None:
            return False
        b.reported(trial_id, epochs_done(result))
        if b.limited and b.should_stop(trial_id):
            b.cut.add(trial_id)
            return True
        return False

    def stop_all(self) -> bool:
        return False  # never cut running trials mid-epoch: the searcher stops proposing instead
