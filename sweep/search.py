"""The study's searcher: Ray's OptunaSearch, told the truth about trials that did not run their budget.

Ray 2.60's OptunaSearch tells Optuna that a trial ASHA stopped COMPLETEd with its last (low-budget) score, so
TPE would model 1-epoch scores as if they were final. Here a trial that ends before `max_t` is PRUNED (its
per-epoch values stay as Optuna intermediate values; TPE ranks pruned trials below complete ones, deeper
ones first), and a trial that failed is FAIL even when it had reported: TPE models full-budget results only.
It also stops proposing once the study's budget (sweep.budget) has no room for another trial.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional, Sequence

import optuna
from optuna.trial import TrialState
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from sweep import budget
from sweep.scheduler import RecordedASHA, epochs_done
from trainables.metrics import OBJECTIVE, OBJECTIVE_KEY

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
    record: Optional[Callable[[], Mapping[str, Sequence[float]]]] = None,
):
    """The study's searcher (TPE, told the truth about stopped trials) and scheduler (ASHA on the objective,
    or FIFO with early stopping off). Also what benchmarks/search.py measures: one construction for both."""
    search = HonestOptunaSearch(
        space=space,
        metric=OBJECTIVE_KEY,
        mode=OBJECTIVE.mode,
        points_to_evaluate=first_points or None,
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials(num_samples)),
        max_t=max_t,
    )
    if not early_stopping:
        return search, FIFOScheduler()
    return search, RecordedASHA(max_t=max_t, reduction_factor=reduction_factor, grace_period=grace, record=record)


class HonestOptunaSearch(OptunaSearch):
    def __init__(self, *args, max_t: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_t = max_t  # epochs a trial that ran its budget reports (ASHA's max_t)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
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
