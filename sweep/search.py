"""The study's searcher: Ray's OptunaSearch, told the truth about trials that did not run their budget.

Ray 2.60's OptunaSearch tells Optuna that a trial ASHA stopped COMPLETEd with its last (low-budget) score, so
TPE would model 1-epoch scores as if they were final. Here a trial that ends before `max_t` is PRUNED (its
per-epoch values stay as Optuna intermediate values; TPE ranks pruned trials below complete ones, deeper
ones first), and a trial that failed is FAIL even when it had reported: TPE models full-budget results only.
It also stops proposing once the study's budget (sweep.budget) has no room for another trial.
A Pareto search tells Optuna both objectives of a trial that ran its budget; a trial cut short is PRUNED with no
values (Optuna takes no intermediate values with several objectives: TPE ranks it below every complete one).
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional, Sequence

import optuna
from optuna.trial import TrialState
from ray import tune
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from sweep import budget
from sweep.moasha import MOASHA
from sweep.scheduler import RecordedASHA, epochs_done
from trainables.metrics import OBJECTIVE, OBJECTIVE_KEY
from trainables.objectives import Objectives

LATENCY_KEY = "latency_ms"  # in every report (trainables.trial.worker.serving_costs): the budget's measure

# ASHA keeps the top 1/4 of each rung (rungs at 1, 4, 16 epochs with grace 1). benchmarks/search.py (docs/benchmarks.md)
# measured it against factors 2 and 3 and grace 2 on mfh3/mfh6 at max_t 5, 15 and 16 (20 seeds each): factor 4
# reached random search's final best in as few or fewer epochs in every case and found the best configurations
# on mfh6 (median 2.07-2.39 vs 1.78-2.00 for factor 2), so it replaced factor 2 (more rungs, slower to cut).
REDUCTION_FACTOR = 4


def startup_trials(num_samples: int) -> int:
    """TPE's random start: half the budget, at least 3 (TPE needs a few points to split good from bad) and
    at most 10 (Optuna's default; more only delays the model-based proposals). 0 (a budget): 5."""
    return max(3, min(10, (num_samples or 10) // 2))


def search_and_scheduler(
    space,
    seed: int,
    num_samples: int,
    max_t: int,
    grace: int,
    early_stopping: bool = True,
    reduction_factor: float = REDUCTION_FACTOR,
    first_points: Optional[Sequence[dict]] = None,
    record: Optional[Callable[[], Mapping[str, Sequence]]] = None,
    objectives: Objectives = Objectives(),
    max_latency_ms: float = 0.0,
):
    """The study's searcher (TPE, told the truth about stopped trials) and scheduler (ASHA on the objective,
    or FIFO with early stopping off). Also what benchmarks/search.py measures: one construction for both.
    A Pareto search (`objectives` of two): Optuna's multi-objective TPE and MOASHA over both. A latency budget
    (`max_latency_ms`): Optuna's constrained TPE (each trial's constraint is latency_ms - max_latency_ms, feasible
    at <= 0: TPE ranks infeasible trials below every feasible one), so proposals learn where the budget holds. record(): {trial_id: [objective values per epoch]} (one
    value per epoch, a tuple per epoch for a Pareto search), what a resumed study's rungs held."""
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials(num_samples))
    many = objectives.pareto
    search = HonestOptunaSearch(
        space=space,
        metric=list(objectives.keys) if many else OBJECTIVE_KEY,
        mode=list(objectives.modes) if many else OBJECTIVE.mode,
        points_to_evaluate=first_points or None,
        sampler=sampler,
        max_t=max_t,
        max_latency_ms=max_latency_ms,
    )
    if not early_stopping:
        return search, FIFOScheduler()
    if many:
        return search, MOASHA(objectives.keys, objectives.modes, max_t, grace, reduction_factor, record=record)
    return search, RecordedASHA(max_t=max_t, reduction_factor=reduction_factor, grace_period=grace, record=record)


class LatencyStopper(tune.Stopper):
    """Stops a trial that cannot meet the latency budget once it has reported its first rung (`grace` epochs): TPE
    and the rung then know how well it learns, and no more epochs go to a model that cannot be served."""

    def __init__(self, max_latency_ms: float, grace: int):
        self.max_latency_ms, self.grace = max_latency_ms, grace

    def __call__(self, trial_id, result) -> bool:
        latency = result.get(LATENCY_KEY)
        return latency is not None and latency > self.max_latency_ms and epochs_done(result) >= self.grace

    def stop_all(self) -> bool:
        return False


class HonestOptunaSearch(OptunaSearch):
    def __init__(self, *args, max_t: int, max_latency_ms: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_t = max_t  # epochs a trial that ran its budget reports (ASHA's max_t)
        self.max_latency_ms = max_latency_ms  # the study's latency budget, ms (0: none)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if self.max_latency_ms and result and LATENCY_KEY in result and trial_id not in self._completed_trials:
            self._ot_trials[trial_id].set_constraint(LATENCY_KEY, float(result[LATENCY_KEY]) - self.max_latency_ms)
        cut_short = bool(result) and epochs_done(result) < self.max_t
        if trial_id in self._completed_trials or not (error or cut_short):
            return super().on_trial_complete(trial_id, result, error)
        self._ot_study.tell(self._ot_trials[trial_id], state=TrialState.FAIL if error else TrialState.PRUNED)
        self._completed_trials.add(trial_id)

    def suggest(self, trial_id: str):
        b = budget.active()
        if b is not None and b.limited and not b.can_start():
            # done for good when nothing runs that could still end early and leave room; else ask again later
            return Searcher.FINISHED if b.exhausted() else None
        return super().suggest(trial_id)
