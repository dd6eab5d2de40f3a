"""The study's searcher: Ray's OptunaSearch, told the truth about trials that did not run their budget.

Ray 2.60's OptunaSearch tells Optuna that a trial ASHA stopped COMPLETEd with its last (low-budget) score, so
TPE would model 1-epoch scores as if they were final. Here a trial that ends before `max_t` is PRUNED (its
per-epoch values stay as Optuna intermediate values; TPE ranks pruned trials below complete ones, deeper
ones first), and a trial that failed is FAIL even when it had reported: TPE models full-budget results only.
It also stops proposing once the study's budget (sweep.budget) has no room for another trial.
"""
from __future__ import annotations

from optuna.trial import TrialState
from ray.tune.result import TRAINING_ITERATION
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from sweep import budget


class HonestOptunaSearch(OptunaSearch):
    def __init__(self, *args, max_t: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_t = max_t            # epochs a trial that ran its budget reports (ASHA's max_t)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        cut_short = bool(result) and result.get(TRAINING_ITERATION, 0) < self.max_t
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
