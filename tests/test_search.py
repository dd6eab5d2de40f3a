"""What Optuna learns from a study: trials ASHA stopped are PRUNED with their per-epoch values, not COMPLETE
with a 1-epoch score (Ray's OptunaSearch does the latter); failed trials are FAIL. Searcher calls as Tune makes
them, no cluster needed."""

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from search_spaces import search_space
from sweep.search import HonestOptunaSearch
from trainables.metrics import OBJECTIVE, OBJECTIVE_KEY

pytestmark = pytest.mark.unit

MAX_T = 4


def run(searcher, trials):
    """trials: {trial_id: ([objective per epoch], error)} fed as Tune feeds a searcher."""
    for trial_id, (values, error) in trials.items():
        assert searcher.suggest(trial_id)
        result = None
        for epoch, v in enumerate(values, 1):
            result = {OBJECTIVE_KEY: v, "training_iteration": epoch}
            searcher.on_trial_result(trial_id, result)
        searcher.on_trial_complete(trial_id, result, error=error)
    return {t.number: t for t in searcher._ot_study.trials}


TRIALS = {
    "full": ([0.2, 0.4, 0.5, 0.6], False),
    "asha": ([0.1], False),
    "asha2": ([0.3, 0.35], False),
    "crash": ([0.2, 0.3], True),
}


def searchers():
    kw = dict(
        space=search_space("scratch"),
        metric=OBJECTIVE_KEY,
        mode=OBJECTIVE.mode,
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    return HonestOptunaSearch(max_t=MAX_T, **kw), OptunaSearch(**kw)


def test_asha_stopped_trials_are_pruned_with_their_epochs():
    ours, _ = searchers()
    t = run(ours, TRIALS)
    assert t[0].state == TrialState.COMPLETE and t[0].value == pytest.approx(0.6)
    assert t[1].state == t[2].state == TrialState.PRUNED  # Optuna keeps the last step's value with it
    assert t[2].intermediate_values == {1: 0.3, 2: 0.35}
    assert t[3].state == TrialState.FAIL
    assert [x.number for x in ours._ot_study.get_trials(states=(TrialState.COMPLETE,))] == [0]


def test_rays_own_searcher_would_call_them_complete():
    """The behaviour HonestOptunaSearch replaces: if this starts failing, Ray fixed it upstream."""
    _, ray_own = searchers()
    t = run(ray_own, TRIALS)
    assert t[1].state == TrialState.COMPLETE and t[1].value == pytest.approx(0.1)


def test_asha_rungs_are_rebuilt_from_the_record_of_a_resumed_study():
    """Tune restores trials, not the scheduler (ray#30838): RecordedASHA refills its rungs from the record,
    so a resumed study judges its next trials against the same field as before the stop."""
    import pickle

    from sweep.scheduler import RecordedASHA

    record = {"a": [0.2, 0.5, 0.6, 0.7], "b": [0.1, 0.2], "c": [0.4]}
    asha = RecordedASHA(
        metric=OBJECTIVE_KEY,
        mode=OBJECTIVE.mode,
        max_t=MAX_T,
        grace_period=1,
        reduction_factor=2,
        record=lambda: record,
    )
    restored = pickle.loads(
        pickle.dumps(
            RecordedASHA(
                metric=OBJECTIVE_KEY,
                mode=OBJECTIVE.mode,
                max_t=MAX_T,
                grace_period=1,
                reduction_factor=2,
            )
        )
    )
    assert all(not recorded for _, recorded in restored._brackets[0]._rungs)  # what Ray's own restore gives
    assert asha.rebuild(record) == 3 + 2 + 1  # milestones 1 (a, b, c), 2 (a, b) and max_t 4 (a)
    rungs = {milestone: recorded for milestone, recorded in asha._brackets[0]._rungs}
    assert rungs[1] == {"a": 0.2, "b": 0.1, "c": 0.4} and rungs[2] == {"a": 0.5, "b": 0.2} and rungs[4] == {"a": 0.7}
    assert asha.rebuild(record) == 0  # idempotent
