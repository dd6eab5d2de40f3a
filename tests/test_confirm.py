"""Confirmation, final fit and ensemble logic without Ray: the interval, the ranking by mean, which configurations
and seeds are re-trained, the final fit's epochs, re-run configs, the flags' defaults and the averaged ensemble.

python -m pytest tests/test_confirm.py -q
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from scipy import stats

import tune
from analysis.reading import ensemble
from analysis.reading.confirm import best_run, candidates, confirmed, interval, searched
from analysis.reading.runs import TrialRow
from sweep.phases import CONFIRM, confirm_points, final_epochs
from sweep.settings import DEMO, UsageError, from_flags
from trainables import checkpoint
from trainables.config import RunSettings
from trainables.trial.rerun import RERUN_KEY, Rerun, split

pytestmark = pytest.mark.unit


def row(name, best, phase="search", source="", best_epoch=2, epochs=4) -> TrialRow:
    return TrialRow(
        run_id=name,
        name=name,
        status="FINISHED",
        family="scratch",
        arch="deep_cnn",
        params={},
        best=best,
        best_epoch=best_epoch,
        epochs=epochs,
        stopped_early=False,
        wall_s=1.0,
        phase=phase,
        source=source,
    )


def test_interval_is_students_t_as_scipy_computes_it():
    values = [0.612, 0.641, 0.655]
    mean, low, high = interval(values)
    ref = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert (mean, low, high) == pytest.approx((np.mean(values), *ref), abs=1e-12)
    # by hand: mean 2, sd 1, t(0.975, 2) = 4.302653 -> 2 ± 4.302653 / sqrt(3)
    assert interval([1.0, 2.0, 3.0]) == pytest.approx((2.0, 2 - 2.484138, 2 + 2.484138), abs=1e-6)
    one = interval([0.5])
    assert one[0] == 0.5 and math.isnan(one[1]) and math.isnan(one[2])  # one seed: no interval
    assert interval([0.4, float("nan"), 0.6])[0] == pytest.approx(0.5)  # a seed with no result is left out


def test_configurations_are_ranked_by_their_mean_and_the_winner_follows():
    rows = [
        row("a", 0.60),
        row("b", 0.50),
        row("c", 0.40, phase="recipe"),
        row("a1", 0.46, "confirm", "a"),
        row("a2", 0.44, "confirm", "a"),
        row("b1", 0.57, "confirm", "b"),
        row("b2", 0.53, "confirm", "b"),
        row("f", math.nan, "final", "b"),
    ]
    rows.sort(key=lambda r: (math.isnan(r.best), -r.best if r.best == r.best else 0))  # trial_rows' order
    assert [r.name for r in searched(rows)] == ["a", "b", "c"]
    conf = confirmed(rows)
    assert [(c.source.name, c.rank, c.search_rank, c.change) for c in conf] == [("b", 1, 2, 1), ("a", 2, 1, -1)]
    assert conf[0].mean == pytest.approx(0.55) and conf[0].sd == pytest.approx(np.std([0.57, 0.53], ddof=1))
    assert conf[0].half_width == pytest.approx(stats.t.ppf(0.975, 1) * 0.02 / math.sqrt(2) * math.sqrt(2))
    assert best_run(rows).name == "b1"  # the best mean's best seed, not the search's best
    assert [r.name for r in candidates(rows)][:2] == ["b1", "a"]
    assert "f" not in [r.name for r in candidates(rows)]  # the final fit has no validation to rank by
    assert best_run([row("a", 0.6), row("b", 0.5)]).name == "a"  # no confirmation: the search's best


def test_confirm_points_take_the_best_distinct_configurations_with_new_distinct_seeds():
    rows = [row("a", 0.6), row("dup", 0.55), row("none", 0.5, epochs=0), row("b", 0.45), row("c", 0.4)]
    known = {"a": {"lr": 0.1}, "dup": {"lr": 0.1}, "none": {"lr": 0.3}, "b": {"lr": 0.2}, "c": {"lr": 0.4}}
    points = confirm_points(rows, known, k=2, seeds=3, base_seed=7, epochs=5)
    reruns = [split({RERUN_KEY: p})[1] for p in points]
    assert [(r.source_name, r.config) for r in reruns] == [("a", {"lr": 0.1})] * 3 + [("b", {"lr": 0.2})] * 3
    seeds = [r.seed for r in reruns]
    assert len(set(seeds)) == 6 and 7 not in seeds  # new seeds, each once: never the search's
    assert {r.phase for r in reruns} == {CONFIRM} and {r.epochs for r in reruns} == {5}


def test_a_trial_over_the_latency_budget_is_never_confirmed_nor_the_winner():
    over = dataclasses.replace(row("over", 0.9), feasible=False)  # the most accurate, but too slow to serve
    rows = [over, row("a", 0.6), row("b", 0.5)]
    known = {"over": {"lr": 0.3}, "a": {"lr": 0.1}, "b": {"lr": 0.2}}
    points = confirm_points(rows, known, k=2, seeds=1, base_seed=0, epochs=4)
    assert [split({RERUN_KEY: p})[1].source_name for p in points] == ["a", "b"]
    assert best_run(rows).name == "a" and best_run([over]) is None


def test_the_final_fit_trains_for_the_median_peak_epoch_of_the_winner():
    rows = [
        row("a", 0.6),
        row("a1", 0.5, "confirm", "a", best_epoch=3),
        row("a2", 0.52, "confirm", "a", best_epoch=5),
        row("a3", 0.51, "confirm", "a", best_epoch=4),
    ]
    source, epochs = final_epochs(rows)
    assert (source.name, epochs) == ("a", 4)
    assert final_epochs([row("a", 0.6, best_epoch=3)])[1] == 3  # no confirmation: the trial's own peak


def test_a_rerun_trains_its_config_with_its_seed_and_epochs():
    again = Rerun("final", 11, 3, "rid", "run_trial_x", {"lr": 0.01})
    values, back = split({RERUN_KEY: again.to_dict()})
    assert values == {"lr": 0.01} and back == again and back.name == "final-run_trial_x"
    s = RunSettings(
        family="scratch",
        data_dir="-",
        num_samples=8,
        max_epochs=10,
        workers_per_trial=1,
        experiment="e",
        mlflow_uri="sqlite:///x.db",
        storage="/tmp/x",
    )
    t = again.settings(s)
    assert (t.seed, t.max_epochs, t.early_stopping, t.train_on_val) == (11, 3, False, True)
    assert split({"lr": 0.01}) == ({"lr": 0.01}, None)
    assert again.tags()["trained_on"] == "train+val"


@pytest.mark.parametrize(
    "flags, confirm",
    [
        ([], 3),
        (["--num-samples", "7"], 0),
        (["--num-samples", "8"], 3),
        (["--confirm", "0"], 0),
        (["--num-samples", "4", "--confirm", "2"], 2),
        (["--smoke"], 0),
        (["--time-budget", "5m"], 0),
    ],
)
def test_confirmation_is_on_by_default_from_eight_trials(tmp_path, tiny_folder, flags, confirm):
    a = tune.parse_args(["--data", str(tiny_folder), "--mlflow-uri", f"sqlite:///{tmp_path / 'm.db'}", *flags])
    assert from_flags(a, tmp_path)[0].confirm == confirm


@pytest.mark.parametrize(
    "flags, message",
    [(["--confirm", "-1"], "--confirm must be 0"), (["--confirm-seeds", "0"], "--confirm-seeds must be at least 1")],
)
def test_bad_confirmation_flags_are_refused(tmp_path, tiny_folder, flags, message):
    a = tune.parse_args(["--data", str(tiny_folder), *flags])
    with pytest.raises(UsageError, match=message):
        from_flags(a, tmp_path)


def test_ensemble_metrics_come_from_the_averaged_probabilities():
    p1 = np.array([[0.7, 0.2, 0.1], [0.4, 0.5, 0.1], [0.1, 0.3, 0.6], [0.3, 0.3, 0.4]])
    p2 = np.array([[0.5, 0.4, 0.1], [0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]])
    targets = np.array([0, 0, 1, 2])
    avg = checkpoint.average([p1, p2])
    assert avg == pytest.approx((p1 + p2) / 2)
    df = ensemble.table({"one": p1, "ens": avg}, targets, n_boot=0)
    # by hand: the mean predicts 0, 0, 1, 2 -> all right; member one predicts 0, 1, 2, 2 -> 2 of 4 right
    assert df.loc["ens", "test_accuracy"] == 1.0 and df.loc["ens", "test_macro_f1"] == 1.0
    assert df.loc["one", "test_accuracy"] == 0.5
    # member one, per class: 0: tp 1 fp 0 fn 1 -> F1 2/3; 1: tp 0 -> 0; 2: tp 1 fp 1 fn 0 -> 2/3
    assert df.loc["one", "test_macro_f1"] == pytest.approx((2 / 3 + 0 + 2 / 3) / 3)


def test_the_demo_runs_its_own_trials_from_its_half_width_deepcnn(tmp_path, monkeypatch):
    """`python tune.py` as it comes: 4 trials within a 4-minute cap, no recipes, its first trial the DeepCNN at
    half width (sweep.settings.DEMO); any flag that sets the work (a budget, a count, --smoke) leaves the demo."""
    monkeypatch.setenv("ARTSWEEP_CACHE", str(tmp_path / "cache"))  # the built-in data is written here
    s, space, _ = from_flags(tune.parse_args(["--mlflow-uri", f"sqlite:///{tmp_path / 'm.db'}"]), tmp_path)
    assert (s.num_samples, s.time_budget_s, s.recipes, s.confirm) == (4, 240.0, False, 0)
    first = space.first_points(s.recipes, s.starts)
    assert first == [{k: v for k, v in DEMO["builtin_starts"]["scratch"].items()}]
    assert RunSettings.from_dict(json.loads(json.dumps(s.to_dict()))) == s  # --resume reads it back
    budgeted = from_flags(
        tune.parse_args(["--time-budget", "5m", "--mlflow-uri", f"sqlite:///{tmp_path / 'b.db'}"]), tmp_path
    )[0]
    assert (budgeted.num_samples, budgeted.starts, budgeted.recipes) == (0, {}, True)
