"""ASHA whose rung records survive a resume.

Tune restores a study's trials and its searcher, not its scheduler (ray-project/ray#30838): a resumed ASHA would
start with empty rungs and judge the next trials against nothing. This one rebuilds its rungs, before its first
decision, from the study's record in MLflow (each trial's objective per epoch); in a new study the record is
empty and nothing changes.
"""

from __future__ import annotations

import logging
from typing import Callable, Mapping, Sequence

from ray.tune.schedulers import ASHAScheduler

log = logging.getLogger("artsweep")


class RecordedASHA(ASHAScheduler):
    def __init__(self, *args, record: Callable[[], Mapping[str, Sequence[float]]] | None = None, **kwargs):
        """record(): {trial_id: [objective per epoch]} of the study so far (read when the first trial arrives)."""
        super().__init__(*args, **kwargs)
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
