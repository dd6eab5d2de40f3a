"""`tune.py --smoke --family all` on CPU-sized stand-ins: every family in one real study (real Ray, a real `mlflow
server`), the shared study's first. Follows the registry, so a new family gets its smoke run without a new test. A
single family's study is the shared study's (scratch) and tests/test_new_family.py's; one study per family cost 75 s
each and repeated them."""

import pytest
from ray.tune import ExperimentAnalysis
from ray.tune.search.optuna import OptunaSearch

from analysis.reading import optuna_study
from analysis.reading.confirm import searched
from analysis.reading.runs import trial_rows
from search_spaces import FAMILIES
from trainables.tracking.mlflow_runs import SETTINGS, read_artifact_json

pytestmark = pytest.mark.e2e


def test_all_runs_every_family_in_one_study_and_ranks_them(study):
    """One study over every family (one trial each: `--family all` starts with each family's defaults), so a new
    family gets its smoke run here without a new test: each trial trains that family's CPU stand-in and its run
    names the architecture it trained. It is the shared study's first (tests/conftest.py), with a final fit."""
    client, out = study.client, (study.work / "first.txt").read_text()
    parent = client.get_run(study.first)
    rows = searched(trial_rows(client, parent.info.experiment_id, study.first))
    assert len(rows) == len(FAMILIES)
    assert {r.family for r in rows} == set(FAMILIES)
    assert all(r.status == "FINISHED" and r.epochs == 1 for r in rows), rows
    for r in rows:  # a family with one stand-in has it fixed, not searched: then the arch is a tag only
        assert r.arch in FAMILIES[r.family].arch_choices(standins=True), (r.family, r.arch)
        assert r.params.get(f"{r.family}.arch", r.arch) == r.arch
    # one name per parameter: Optuna's study, Tune's results, the MLflow params and the importance plot
    experiment = str(study.work / "ray_results" / read_artifact_json(client, study.first, SETTINGS)["run_name"])
    searcher = OptunaSearch()
    searcher.restore_from_dir(experiment)
    optuna_names = sorted(sorted(t.params) for t in searcher._ot_study.trials)
    tune_names = sorted(sorted(c) for c in ExperimentAnalysis(experiment).get_all_configs().values())
    logged = optuna_study.read_space(client, parent.info.run_id)
    # MLflow's params are the searched ones, plus a family's architecture where it has one (fixed, not searched)
    mlflow_names = sorted(sorted(k for k in r.params if k in logged) for r in rows)
    assert optuna_names == tune_names == mlflow_names
    assert all(set(r.params) - logged.keys() <= {f"{r.family}.arch"} for r in rows)
    assert set().union(*map(set, mlflow_names)) <= set(logged)
    study, skipped = optuna_study.build_study(rows, logged)
    plotted = set(study.trials[0].distributions) if study.trials else set()
    assert plotted | set(skipped) == set(logged) and plotted <= set().union(*map(set, mlflow_names))
    # a family's own knobs are on its runs only
    assert all(k == "family" or k.startswith(f"{r.family}.") for r in rows for k in r.params)
    assert "families ranked by their best trial:" in out
    ranked = out.split("families ranked by their best trial:")[1]
    assert all(f in ranked for f in FAMILIES)
