"""Multi-objective ASHA: early stopping that ranks a rung by Pareto dominance, for a search of accuracy against cost.

ASHA (Li et al. 2020) keeps the top 1/reduction_factor of the trials that reached each rung; with two objectives
there is no "top", so MOASHA (Schmucker et al. 2021, "Multi-objective Asynchronous Successive Halving") orders a
rung by non-dominated sorting: the trials on the rung's Pareto front first, then the next front, ...; within one
front, NSGA-II's crowding distance puts the ends and the sparse stretches first, so the kept set spreads along the
front instead of bunching at one end (Syne Tune's MOASHA orders fronts the same way and breaks ties by an
epsilon-net; trainables.objectives holds the arithmetic). Like Ray's ASHA it decides when a trial's result reaches a
rung milestone, from the results that reached that rung before it (asynchronous: no trial waits for a rung to fill):
it goes on when it is among the first ceil(n / reduction_factor) of the n trials recorded there, itself included.

Its time is the worker's epoch (sweep.scheduler.epochs_done), as RecordedASHA's, and like it the rungs are rebuilt
from the study's MLflow record before the first decision of a resumed study.
"""

from __future__ import annotations

import logging
import math
from typing import Callable, Mapping, Sequence

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from sweep.events import rungs
from sweep.scheduler import epochs_done
from trainables import objectives

log = logging.getLogger("artsweep")


class MOASHA(FIFOScheduler):
    def __init__(
        self,
        metrics: Sequence[str],
        modes: Sequence[str],
        max_t: int,
        grace_period: int = 1,
        reduction_factor: float = 4,
        record: Callable[[], Mapping[str, Sequence[Sequence[float]]]] | None = None,
    ):
        """`metrics`/`modes`: the objectives and their directions ("max" | "min"), read from each result.
        record(): {trial_id: [objective values per epoch, in `metrics` order]} of the study so far (a resumed study),
        read when the first trial arrives."""
        super().__init__()
        if len(metrics) != len(modes) or len(metrics) < 2:
            raise ValueError("MOASHA needs two or more metrics, each with a mode")
        self.metrics, self.modes, self.max_t, self.rf = tuple(metrics), tuple(modes), max_t, reduction_factor
        self.milestones = rungs(max_t, grace_period, reduction_factor)  # epochs, lowest first
        self.rungs: dict[int, dict[str, tuple]] = {m: {} for m in self.milestones}  # milestone -> trial -> values
        self._record, self._rebuilt = record, record is None
        self.stopped = 0

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True  # its own metrics and modes; TuneConfig's single metric is for the result grid only

    def rebuild(self, histories: Mapping[str, Sequence[Sequence[float]]]) -> int:
        """Put each trial's values at each milestone it reached into the rungs; returns how many went in."""
        n = 0
        for milestone, recorded in self.rungs.items():
            for trial_id, values in histories.items():
                if len(values) >= milestone and trial_id not in recorded:
                    recorded[trial_id] = tuple(values[milestone - 1])
                    n += 1
        return n

    def keeps(self, milestone: int, trial_id: str, values: Sequence[float]) -> bool:
        """Record `values` at the rung and say whether the trial is among its first ceil(n / reduction_factor)."""
        recorded = self.rungs[milestone]
        recorded.setdefault(trial_id, tuple(values))  # a result seen again (a restarted trial) keeps its first
        ids = list(recorded)
        ranked = objectives.order([recorded[i] for i in ids], self.modes)
        position = int(list(ranked).index(ids.index(trial_id)))
        return position < max(1, math.ceil(len(ids) / self.rf))

    def on_trial_add(self, tune_controller, trial: Trial):
        if not self._rebuilt:
            try:
                n = self.rebuild(self._record())
                self._rebuilt = True
                log.info("artsweep: MOASHA's rungs rebuilt from the record (%d values)", n)
            except Exception as e:  # noqa: BLE001 - MLflow away: decide without the record, retry at the next trial
                log.warning(
                    "artsweep: MOASHA's rungs not rebuilt yet (%s); retrying at the next trial", type(e).__name__
                )

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        epoch = epochs_done(result)
        if epoch >= self.max_t or epoch not in self.rungs:
            return TrialScheduler.CONTINUE
        values = [float(result.get(k, math.nan)) for k in self.metrics]
        if self.keeps(epoch, trial.trial_id, values):
            return TrialScheduler.CONTINUE
        self.stopped += 1
        return TrialScheduler.STOP

    def debug_string(self) -> str:
        sizes = ", ".join(f"{m}: {len(r)}" for m, r in self.rungs.items())
        return f"MOASHA over {', '.join(self.metrics)}: trials per rung (epoch: n) {sizes}; stopped {self.stopped}"
