"""A trial that Tune starts again continues from its checkpoint: its worker's epoch goes on (3, 4, ...) while Tune's
training_iteration starts again at 1. ASHA, the honest searcher and the budget count the epoch.

python -m pytest tests/test_resumed_iteration.py -q

The real scheduler, searcher and stopper objects get results as such a trial reports them (real ray.tune Trial
objects; no Ray cluster is started).
"""

from __future__ import annotations

import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from sweep import budget
from sweep.search import search_and_scheduler
from trainables.metrics import OBJECTIVE, OBJECTIVE_KEY

pytestmark = pytest.mark.unit

MAX_T, GRACE = 16, 1  # ASHA's rungs at epochs 1 and 4 (reduction factor 4)


def resumed(epoch: int, iteration: int, value: float) -> dict:
    """A report of a trial Tune started again: the worker's epoch, Tune's count since the restart."""
    return {OBJECTIVE_KEY: value, "epoch": epoch, "training_iteration": iteration}


def study(record=None):
    space = {"lr": FloatDistribution(1e-4, 1e-2, log=True)}
    search, asha = search_and_scheduler(space, seed=0, num_samples=8, max_t=MAX_T, grace=GRACE, record=record)
    asha.set_search_properties(OBJECTIVE_KEY, OBJECTIVE.mode)  # as tune.Tuner does with its TuneConfig
    return search, asha


def test_asha_judges_a_resumed_trial_at_the_rung_of_its_epoch():
    # four trials already passed epoch 4 with 0.8-0.9; the resumed one trained epochs 1-3 before the restart
    record = {f"t{i}": [0.5, 0.6, 0.7, 0.8 + i / 40] for i in range(4)} | {"late": [0.3, 0.3, 0.3]}
    _, asha = study(lambda: record)
    trial = Trial("trainable", stub=True, trial_id="late")
    asha.on_trial_add(None, trial)
    rung4 = dict(asha._brackets[0]._rungs)[4]
    assert "late" not in rung4

    # its first report since the restart: epoch 4, Tune's iteration 1, far below the rung's top quarter
    assert asha.on_trial_result(None, trial, resumed(epoch=4, iteration=1, value=0.31)) == TrialScheduler.STOP
    assert rung4["late"] == pytest.approx(0.31)


def test_asha_judges_a_resumed_trial_once_per_rung_at_its_epoch_not_when_tunes_count_gets_there():
    record = {f"t{i}": [0.5, 0.6, 0.7, 0.8] for i in range(4)} | {"back": [0.6, 0.7, 0.8]}
    _, asha = study(lambda: record)
    trial = Trial("trainable", stub=True, trial_id="back")
    asha.on_trial_add(None, trial)
    # epoch 4 (Tune's iteration 1) is its rung-4 result, in the top quarter; later epochs are no rung's
    assert asha.on_trial_result(None, trial, resumed(epoch=4, iteration=1, value=0.95)) == TrialScheduler.CONTINUE
    for iteration in (2, 3, 4):
        action = asha.on_trial_result(None, trial, resumed(epoch=3 + iteration, iteration=iteration, value=0.1))
        assert action == TrialScheduler.CONTINUE
    assert dict(asha._brackets[0]._rungs)[4]["back"] == pytest.approx(0.95)


def test_the_searcher_tells_optuna_complete_for_a_resumed_trial_that_ran_its_budget():
    search, _ = study()
    search.suggest("done")
    search.suggest("cut")
    # "done" restarted at epoch 13 and reached MAX_T in Tune's 4th iteration; "cut" stopped at epoch 4
    search.on_trial_complete("done", resumed(epoch=MAX_T, iteration=4, value=0.9))
    search.on_trial_complete("cut", resumed(epoch=4, iteration=4, value=0.5))
    states = {t.number: t.state for t in search._ot_study.trials}
    assert states == {0: TrialState.COMPLETE, 1: TrialState.PRUNED}


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def active_budget():
    clock = Clock()
    b = budget.Budget(hours=1.0, max_t=10, grace=1, clock=clock)
    budget.activate(b)
    yield b, clock
    budget.activate(None)


def test_the_budget_counts_a_resumed_trials_epochs_from_the_worker(active_budget):
    b, clock = active_budget
    stopper = budget.BudgetStopper()
    b.started("x")
    clock.now = 100.0  # start-up, restore and epoch 3
    assert not stopper("x", resumed(epoch=3, iteration=1, value=0.5))
    clock.now = 110.0  # epoch 4: 10 s
    assert not stopper("x", resumed(epoch=4, iteration=2, value=0.5))
    assert b.trials["x"].epochs == 4
    assert b.epoch_s("x") == pytest.approx(10.0)  # one epoch between its two reports, not three
    # what it still needs to reach max_t: epochs 5-10 at 10 s each
    assert b._still_needed_s() == pytest.approx(60.0)
