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


TRIALS = {"full": ([0.2, 0.4, 0.5, 0.6], False), "asha": ([0.1], False), "asha2": ([0.3, 0.35], False),
          "crash": ([0.2, 0.3], True)}


def searchers():
    kw = dict(space=search_space("scratch"), metric=OBJECTIVE_KEY, mode=OBJECTIVE.mode,
              sampler=optuna.samplers.RandomSampler(seed=0))
    return HonestOptunaSearch(max_t=MAX_T, **kw), OptunaSearch(**kw)


def test_asha_stopped_trials_are_pruned_with_their_epochs():
    ours, _ = searchers()
    t = run(ours, TRIALS)
    assert t[0].state == TrialState.COMPLETE and t[0].value == pytest.approx(0.6)
    assert t[1].state == t[2].state == TrialState.PRUNED      # Optuna keeps the last step's value with it
    assert t[2].intermediate_values == {1: 0.3, 2: 0.35}
    assert t[3].state == TrialState.FAIL
    assert [x.number for x in ours._ot_study.get_trials(states=(TrialState.COMPLETE,))] == [0]


def test_rays_own_searcher_would_call_them_complete():
    """The behaviour HonestOptunaSearch replaces: if this starts failing, Ray fixed it upstream."""
    _, ray_own = searchers()
    t = run(ray_own, TRIALS)
    assert t[1].state == TrialState.COMPLETE and t[1].value == pytest.approx(0.1)
