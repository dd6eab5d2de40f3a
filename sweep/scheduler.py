"""ASHA whose rung records survive a resume, and the study's one count of a trial's epochs.

Tune restores a study's trials and its searcher, not its scheduler (ray-project/ray#30838): a resumed ASHA would
start with empty rungs and judge the next trials against nothing. This one rebuilds its rungs, before its first
decision, from the study's record in MLflow (each trial's objective per epoch); in a new study the record is
empty and nothing changes.

Its time is epochs_done(), the worker's own epoch: Tune's training_iteration starts again at 1 when Tune starts a
trial again (a resumed study, a retried trial) and its workers continue from their checkpoint at epoch 3, 4, ...;
counted that way a trial would be judged at the wrong rung. The searcher (COMPLETE or PRUNED), the budget and the
console count the same way.
"""

from __future__ import annotations

import logging
from typing import Callable, Mapping, Sequence

from ray.tune.schedulers import ASHAScheduler

log = logging.getLogger("artsweep")
EPOCH_KEY = "epoch"  # in every report of a trial's worker (trainables.trial.worker): its epoch, 1-based


def epochs_done(result: Mapping) -> int:
    """The epochs a trial has trained, from its latest result: the worker's own epoch number (a trial whose workers
    restarted from a checkpoint counts its earlier epochs, which Tune's training_iteration does not); Tune's count
    for a record handed back on --resume (it reports every epoch again, from the first)."""
    return int(result.get(EPOCH_KEY) or result.get("training_iteration", 0))


class RecordedASHA(ASHAScheduler):
    def __init__(self, *args, record: Callable[[], Mapping[str, Sequence[float]]] | None = None, **kwargs):
        """record(): {trial_id: [objective per epoch]} of the study so far (read when the first trial arrives).
        Its time_attr is EPOCH_KEY, read through epochs_done()."""
        super().__init__(*args, time_attr=EPOCH_KEY, **kwargs)
        self._record, self._rebuilt = record, False

    def rebuild(self, histories: Mapping[str, Sequence[float]]) -> int:
        """Put each trial's value at each rung milestone it reached into the rungs; returns how many went in."""
        n = 0
        for bracket in self._brackets:
            for milestone, recorded in bracket._rungs:
                for trial_id, values in histories.items():
                    if len(values) >= milestone and trial_id not in recorded:
                        recorded[trial_id] = values[int(milestone) - 1]
                        n += 1
        return n

    def on_trial_add(self, tune_controller, trial):
        if not self._rebuilt and self._record is not None:
            try:
                self.rebuild(self._record())
                self._rebuilt = True
            except Exception as e:  # noqa: BLE001 - MLflow away: decide without the record, retry at the next trial
                log.warning("artsweep: ASHA's rungs not rebuilt yet (%s); retrying at the next trial", type(e).__name__)
        super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result):
        return super().on_trial_result(tune_controller, trial, {**result, EPOCH_KEY: epochs_done(result)})

    def on_trial_complete(self, tune_controller, trial, result):
        super().on_trial_complete(tune_controller, trial, {**result, EPOCH_KEY: epochs_done(result)})
