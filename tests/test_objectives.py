"""Accuracy against cost, the logic: the Pareto arithmetic (trainables.objectives), MOASHA's rung rule, the latency
budget's constraint and stopper, Optuna told both objectives, and one network per shape for every family."""

import math
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution

from analysis.reading import front
from analysis.reading.runs import TrialRow
from search_spaces import FAMILIES
from search_spaces.space import SearchSpace
from sweep.moasha import MOASHA
from sweep.search import LatencyStopper, search_and_scheduler
from trainables import objectives
from trainables.objectives import Objectives

pytestmark = pytest.mark.unit
MODES = ("max", "min")  # val_macro_f1 up, latency_ms down
PARETO = Objectives(("val_macro_f1", "latency_ms"), MODES)


def brute_front(points) -> list[bool]:
    """On the front: no other point at least as good in both and better in one (written out, to check fronts)."""
    out = []
    for i, (a, la) in enumerate(points):
        beaten = any(b >= a and lb <= la and (b > a or lb < la) for j, (b, lb) in enumerate(points) if j != i)
        out.append(not beaten)
    return out


def test_the_front_is_what_no_other_point_beats_and_sorting_peels_it():
    rng = np.random.default_rng(0)
    for _ in range(50):
        pts = [tuple(p) for p in rng.random((int(rng.integers(1, 25)), 2)).round(2)]  # ties included
        assert list(objectives.on_front(pts, MODES)) == brute_front(pts)
        ranks = objectives.fronts(pts, MODES)
        rest = [p for p, r in zip(pts, ranks) if r > 0]
        if rest:  # the second front is the front of what is left
            assert list(objectives.fronts(rest, MODES) == 0) == [r == 1 for r in ranks if r > 0]
    # a point missing a value is never on the front, even with the best other value
    assert list(objectives.fronts([(0.5, 10), (math.nan, 1)], MODES)) == [0, 1]


def test_order_puts_the_front_first_and_its_ends_before_its_middle():
    pts = [(0.9, 100), (0.5, 10), (0.7, 50), (0.6, 60), (0.1, 1)]  # front: 0, 2, 1, 4; (0.6, 60) dominated by 2
    order = list(objectives.order(pts, MODES))
    assert set(order[:4]) == {0, 1, 2, 4} and order[4] == 3
    assert set(order[:2]) == {0, 4}  # the two ends (infinite crowding distance) first


def test_hypervolume_is_the_dominated_area():
    pts = [(0.5, 10), (0.6, 20), (0.4, 5), (0.45, 12)]  # front: (0.6, 20), (0.5, 10), (0.4, 5)
    # up to reference (0, 30): 0.6 x 10 + 0.5 x 10 + 0.4 x 5 = 13
    assert objectives.hypervolume(pts, MODES, (0.0, 30.0)) == pytest.approx(13.0)
    assert objectives.hypervolume(pts[:1], MODES, (0.0, 30.0)) == pytest.approx(0.5 * 20)
    assert objectives.hypervolume([(0.5, 40)], MODES, (0.0, 30.0)) == 0.0  # not better than the reference
    assert objectives.hypervolume(pts + [(0.3, 50)], MODES, (0.0, 30.0)) == pytest.approx(13.0)


def test_objectives_are_parsed_with_a_clear_refusal():
    assert objectives.parse("") == Objectives() and not Objectives().pareto
    goals = objectives.parse(" val_macro_f1 , latency_ms ")
    assert goals == PARETO and goals.pareto and str(goals) == "val_macro_f1,latency_ms"
    assert objectives.parse("val_macro_f1,throughput_img_s").modes == ("max", "max")
    for bad in ("latency_ms", "val_accuracy,latency_ms", "val_macro_f1,gflops", "val_macro_f1,latency_ms,x"):
        with pytest.raises(ValueError, match="val_macro_f1,latency_ms"):
            objectives.parse(bad)
    assert objectives.feasible(5.0, 0) and objectives.feasible(5.0, 5.0) and not objectives.feasible(5.1, 5.0)
    assert not objectives.feasible(math.nan, 5.0)


def report(scheduler, trial_id: str, epoch: int, f1: float, latency: float) -> str:
    result = {"epoch": epoch, "val_macro_f1": f1, "latency_ms": latency}
    return scheduler.on_trial_result(None, SimpleNamespace(trial_id=trial_id), result)


def test_moasha_keeps_the_first_quarter_of_each_rung_by_pareto_order():
    sched = MOASHA(PARETO.keys, MODES, max_t=16, grace_period=1, reduction_factor=4)
    assert sched.milestones == [1, 4]
    assert report(sched, "a", 1, 0.5, 10) == "CONTINUE"  # alone on the rung
    assert report(sched, "b", 1, 0.4, 20) == "STOP"  # dominated by a; 2 on the rung keep 1
    assert report(sched, "c", 1, 0.3, 5) == "STOP"  # on the front with a, but 3 keep 1: ties go to the first
    assert report(sched, "a", 2, 0.1, 10) == "CONTINUE"  # not a milestone: no decision
    for i in range(5):  # up to 8 on the rung keep 2 (a and c): dominated newcomers stop
        assert report(sched, f"d{i}", 1, 0.2, 30) == "STOP"
    assert report(sched, "e", 1, 0.9, 1) == "CONTINUE"  # dominates every one: first
    assert report(sched, "e", 16, 0.9, 1) == "CONTINUE"  # max_t: done, not judged
    assert sched.stopped == 7 and "1: 9" in sched.debug_string()


def test_moasha_rebuilds_its_rungs_from_the_record_of_a_resumed_study():
    record = {"old": [(0.9, 1.0), (0.9, 1.0), (0.9, 1.0), (0.95, 1.0)], "short": [(0.2, 50.0)]}
    sched = MOASHA(PARETO.keys, MODES, max_t=16, record=lambda: record)
    sched.on_trial_add(None, SimpleNamespace(trial_id="new"))
    assert sched.rungs[1] == {"old": (0.9, 1.0), "short": (0.2, 50.0)} and sched.rungs[4] == {"old": (0.95, 1.0)}
    assert report(sched, "new", 1, 0.5, 10) == "STOP"  # dominated by `old`, 3 on the rung keep 1


def test_the_latency_budget_stops_a_trial_after_its_first_rung():
    stop = LatencyStopper(20.0, grace=2)
    assert not stop("t", {"epoch": 1, "latency_ms": 25.0})  # before its first rung
    assert stop("t", {"epoch": 2, "latency_ms": 25.0}) and not stop("t", {"epoch": 2, "latency_ms": 19.0})
    assert not stop("t", {"epoch": 2}) and not stop.stop_all()


def tell(search, trial_id: str, epochs: int, f1: float, latency: float) -> None:
    search.suggest(trial_id)
    search.on_trial_complete(trial_id, {"epoch": epochs, "val_macro_f1": f1, "latency_ms": latency})


def test_optuna_gets_both_objectives_of_a_full_trial_and_prunes_one_cut_short():
    space = {"x": FloatDistribution(0, 1)}
    search, sched = search_and_scheduler(space, seed=0, num_samples=8, max_t=4, grace=1, objectives=PARETO)
    assert isinstance(sched, MOASHA)
    tell(search, "full", 4, 0.7, 12.0)
    tell(search, "cut", 1, 0.2, 3.0)
    full, cut = search._ot_study.get_trials()
    assert search._ot_study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    assert full.state == optuna.trial.TrialState.COMPLETE and full.values == [0.7, 12.0]
    assert cut.state == optuna.trial.TrialState.PRUNED and cut.values is None


def test_a_budgeted_search_records_each_trials_constraint():
    space = {"x": FloatDistribution(0, 1)}
    search, _ = search_and_scheduler(space, seed=0, num_samples=8, max_t=4, grace=1, max_latency_ms=10.0)
    tell(search, "fast", 4, 0.5, 4.0)
    tell(search, "slow", 1, 0.6, 25.0)  # stopped at its first rung: PRUNED and infeasible
    fast, slow = search._ot_study.get_trials()
    assert fast.constraints == {"latency_ms": -6.0} and fast.state == optuna.trial.TrialState.COMPLETE
    assert slow.constraints == {"latency_ms": 15.0} and slow.state == optuna.trial.TrialState.PRUNED


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_network_of_a_family_has_one_shape(name):
    """A new family is covered here: every architecture x shape knob value is measured once, and every trial
    configuration maps onto one of those shapes (what a trial looks its latency up by)."""
    fam = FAMILIES[name]
    for standins in (True, False):
        space = SearchSpace((fam,), standins=standins)
        shapes = {cfg.shape(64) for cfg in space.shapes()}
        knobs = math.prod(
            len(fam.space[k].choices) if hasattr(fam.space[k], "choices") else 1 for k in fam.shape_params
        )
        assert len(shapes) == len(fam.arch_choices(standins)) * knobs
        sampler = optuna.samplers.RandomSampler(seed=1)
        study = optuna.create_study(sampler=sampler)
        for _ in range(10):
            cfg = space.trial_config(space(study.ask()))
            assert cfg.shape(64) in shapes


def row(name, best, latency, arch="a", feasible=True, phase="search", epochs=2) -> TrialRow:
    return TrialRow(
        name, name, "FINISHED", "scratch", arch, {}, best, 1, epochs, False, 1.0, phase=phase,
        latency_ms=latency, feasible=feasible,
    )  # fmt: skip


def test_the_studys_front_leaves_out_what_cannot_be_a_point(tmp_path):
    rows = [
        row("fast", 0.5, 2.0),
        row("slow", 0.8, 20.0),
        row("worse", 0.4, 20.0),
        row("over", 0.95, 50.0, feasible=False),  # over the budget: never a point
        row("unmeasured", 0.99, math.nan),
        row("silent", math.nan, 1.0, epochs=0),
        row("confirm", 0.99, 1.0, phase="confirm"),  # re-runs are not search points
    ]
    assert [r.name for r in front.front(rows, "latency_ms")] == ["fast", "slow"]
    assert "fast" in front.front_text(front.front(rows, "latency_ms"), "latency_ms")
    png = front.front_png(rows, "latency_ms", tmp_path / "p.png", max_latency_ms=30)
    assert png.stat().st_size > 10_000
