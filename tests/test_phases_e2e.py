"""The study's later phases, for real, on the shared session study (tests/conftest.py: 6 trials, then
--confirm 2 --confirm-seeds 2 and --final-fit, after a 1-trial study with a final fit in the same experiment):
confirmation runs, the winner by mean, the final fit as the registered champion, and analysis.ensemble's top 2
served by the real `mlflow models serve` (registered on `study_copy`: the shared study is read-only).

python -m pytest tests/test_phases_e2e.py -x -q
"""

from __future__ import annotations

import base64
import json
import os
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from analysis import ensemble, leaderboard, predict
from analysis.publishing.models import CHAMPION, PREVIOUS, model_name
from analysis.reading.confirm import best_run, confirmed, finals, searched
from analysis.reading.ensemble import member_probabilities
from analysis.reading.ensemble import members as ensemble_members
from analysis.reading.evaluation import load_trial
from analysis.reading.runs import trial_rows
from analysis.scoring_server import scoring_server
from trainables import checkpoint
from trainables.tracking.mlflow_runs import latest_study

pytestmark = pytest.mark.e2e


def _study(study):
    exp, parent = latest_study(study.client, study.experiment)
    return exp, parent, trial_rows(study.client, exp.experiment_id, parent.info.run_id)


def test_the_two_best_configurations_are_confirmed_with_new_seeds_on_the_same_split(study):
    client = study.client
    exp, parent, rows = _study(study)
    confirm = [r for r in rows if r.phase == "confirm"]
    assert len(confirm) == 4
    runs = [client.get_run(r.run_id) for r in confirm]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert all(r.data.tags["stopped_early"] == "false" and r.data.tags["epochs_reached"] == "4" for r in runs)
    seeds = [r.data.params["seed"] for r in runs]
    assert len(set(seeds)) == 4 and "0" not in seeds  # distinct, and not the search's --seed 0
    top = [r.run_id for r in searched(rows) if r.epochs][:2]  # the smoke search's configs are distinct
    assert sorted({r.data.tags["source_run_id"] for r in runs}) == sorted(top)
    split = {(d.dataset.name, d.dataset.digest) for d in client.get_run(parent.info.run_id).inputs.dataset_inputs}
    manifest = {client.get_run(r.run_id).data.tags["split_manifest"] for r in rows if r.phase != "final"}
    assert len(manifest) == 1  # every run read the parent's split
    for r in runs:
        assert {(d.dataset.name, d.dataset.digest) for d in r.inputs.dataset_inputs} == split
        assert r.data.tags["trained_on"] == "train" and r.info.run_name.startswith("confirm-")
        source = client.get_run(r.data.tags["source_run_id"]).data.params
        assert {k: v for k, v in r.data.params.items() if k != "seed"} == source  # the same configuration


def test_the_winner_is_the_best_configuration_by_mean_and_the_leaderboard_shows_it(study, capsys):
    client = study.client
    _, _, rows = _study(study)
    conf = confirmed(rows)
    assert [c.rank for c in conf] == [1, 2] and conf[0].mean >= conf[1].mean
    winners = [r for r in rows if client.get_run(r.run_id).data.tags.get("winner") == "true"]
    assert [w.run_id for w in winners] == [best_run(rows).run_id] and winners[0] in conf[0].runs
    assert f"winner: {conf[0].source.name}'s configuration, mean {conf[0].mean:.4f} over 2 seeds" in study.out
    assert leaderboard.main(["--experiment", study.experiment, "--mlflow-uri", study.uri, "--no-log"]) == 0
    board = capsys.readouterr().out.split("confirmation:")[1]
    for c in conf:
        line = next(x for x in board.splitlines() if f" {c.source.name} " in x)
        assert f"{c.mean:.4f} ± {c.half_width:.4f}" in line and line.split()[0] == str(c.rank)


def test_the_final_fit_is_the_champion_and_the_first_studys_is_previous(study):
    client = study.client
    _, parent, rows = _study(study)
    [final] = finals(rows)
    run = client.get_run(final.run_id)
    assert run.data.tags["trained_on"] == "train+val" and run.data.tags["phase"] == "final"
    assert {"test_macro_f1", "test_accuracy", "test_macro_f1_ci_low"} <= set(run.data.metrics)
    assert not any(k.startswith("val_") for k in run.data.metrics)  # nothing was held out to validate on
    source = confirmed(rows)[0]
    peaks = sorted(r.best_epoch for r in source.runs)
    assert int(run.data.tags["epochs_reached"]) == round(float(np.median(peaks)))
    name = model_name(study.experiment)
    champion = client.get_model_version_by_alias(name, CHAMPION)
    assert champion.tags["trial_run_id"] == final.run_id and champion.tags["trained_on"] == "train+val"
    assert champion.tags["source_run_id"] == source.source.run_id
    previous = client.get_model_version_by_alias(name, PREVIOUS)
    assert int(previous.version) < int(champion.version)
    first = client.get_run(previous.tags["trial_run_id"])
    assert first.data.tags["phase"] == "final" and first.data.tags["mlflow.parentRunId"] != parent.info.run_id
    assert (
        f"registered models:/{name}/{champion.version} as @{CHAMPION} (version {previous.version} is now "
        f"@{PREVIOUS})" in study.out
    )


def _hand_macro_f1(pred: np.ndarray, targets: np.ndarray, n: int) -> float:
    f1 = []
    for c in range(n):
        tp, fp, fn = (
            np.sum((pred == c) & (targets == c)),
            np.sum((pred == c) & (targets != c)),
            np.sum((pred != c) & (targets == c)),
        )
        f1.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1))


def test_the_ensemble_of_the_top_two_is_scored_from_averaged_probabilities_and_served(study_copy, tmp_path, capsys):
    """Registers the ensemble and logs its metrics to the parent run: on `study_copy`, not the shared study."""
    study = study_copy
    client = study.client
    _, parent, rows = _study(study)
    assert (
        ensemble.main(
            [
                "--experiment",
                study.experiment,
                "--mlflow-uri",
                study.uri,
                "--top",
                "2",
                "--register",
                "e2e-ensemble",
                "--bootstrap",
                "50",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    members = ensemble_members(rows, 2)
    assert [r.phase for r in members] == ["confirm", "confirm"]
    probs, targets = member_probabilities(client, members, parent.info.run_id)
    mean = (probs[members[0].name] + probs[members[1].name]) / 2  # by hand, on the same predictions
    pred, n = mean.argmax(1), mean.shape[1]
    logged = json.loads(
        Path(client.download_artifacts(parent.info.run_id, "ensemble/metrics.json", str(tmp_path))).read_text()
    )
    ens = next(m for m in logged["metrics"] if m["model"] == "ensemble of 2")
    assert ens["test_accuracy"] == pytest.approx(float(np.mean(pred == targets)))
    assert ens["test_macro_f1"] == pytest.approx(_hand_macro_f1(pred, targets, n))
    assert (
        next(x for x in out.splitlines() if x.startswith("ensemble of 2 ")).split()[3] == f"{ens['test_macro_f1']:.4f}"
    )  # what it prints is what it logged

    # served like a single model: the same request and response, the members' mean
    clfs, splits = [], None
    for r in members:
        clf, splits = load_trial(client, r, parent.info.run_id, tmp_path / r.name)
        clfs.append(clf)
    local = checkpoint.Ensemble(clfs)
    files = [splits.paths[i] for i in splits.test[:2]]
    body = {
        "dataframe_split": {
            "columns": ["image"],
            "data": [[base64.b64encode(Path(f).read_bytes()).decode()] for f in files],
        },
        "params": {"k": 3},
    }
    env = {**os.environ, "MLFLOW_TRACKING_URI": study.uri}
    with scoring_server("models:/e2e-ensemble/1", env, tmp_path, tmp_path / "serve.log", timeout_s=120) as (base, _):
        req = urllib.request.Request(
            f"{base}/invocations", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            answer = json.loads(resp.read())["predictions"]
    for got, ref in zip(answer, local.top_k(files, 3)):
        assert got["classes"] == [c for c, _ in ref]
        assert got["probabilities"] == pytest.approx([p for _, p in ref], abs=1e-4)
    version = client.get_model_version("e2e-ensemble", "1")
    assert version.tags["members"] == ",".join(r.run_id for r in members)
    assert (
        predict.main([*map(str, files), "--model", "models:/e2e-ensemble/1", "--mlflow-uri", study.uri, "-k", "3"]) == 0
    )  # analysis.predict takes it unchanged
    lines = capsys.readouterr().out.splitlines()
    expected = [f"{f}: " + ", ".join(f"{c} {p:.3f}" for c, p in ref) for f, ref in zip(files, local.top_k(files, 3))]
    assert lines == expected
