"""analysis/ on the session's real smoke study: leaderboard, test-set evaluation, reports.

Every check reads MLflow through MlflowClient, independently of the code under test.
"""

import json

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import accuracy_score, f1_score, top_k_accuracy_score

from analysis import evaluate, leaderboard
from analysis.confirm import best_run
from analysis.runs import latest_study, trial_rows
from trainables.metrics import BEST_KEY as BEST
from trainables.metrics import OBJECTIVE_KEY as OBJECTIVE

pytestmark = pytest.mark.e2e


def _children(study):
    exp, parent = latest_study(study.client, study.experiment)
    runs = study.client.search_runs(
        [exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'", order_by=[f"metrics.{BEST} DESC"]
    )
    return exp, parent, runs


def assert_png(path, min_side=200):
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.float32)
    assert min(arr.shape[:2]) >= min_side, (path, arr.shape)
    assert arr.std() > 10, f"{path} is (nearly) one flat colour"


def test_leaderboard_lists_every_trial_and_its_best_row_is_mlflows(study, capsys, tmp_path):
    assert leaderboard.main(["--experiment", study.experiment, "--mlflow-uri", study.uri]) == 0
    out = capsys.readouterr().out
    exp, parent, children = _children(study)
    runs = [r for r in children if r.data.tags["phase"] in ("recipe", "search")]  # the trials table
    names = [r.info.run_name for r in runs]
    assert len(names) == 6 and all(n in out for n in names)  # ASHA-stopped trials included
    assert "ASHA" in out and "best per family" in out
    best = runs[0]  # MLflow's own ranking by the running-best metric
    history = [m.value for m in study.client.get_metric_history(best.info.run_id, OBJECTIVE)]
    assert best.data.metrics[BEST] == pytest.approx(max(history))
    rows = leaderboard.table(trial_rows(study.client, exp.experiment_id, parent.info.run_id))
    rows = rows[rows["phase"].isin(["recipe", "search"])]
    assert rows.iloc[0]["run_id"] == best.info.run_id
    assert rows.iloc[0][OBJECTIVE] == pytest.approx(max(history))
    assert set(rows["stopped_early"]) == {True, False}
    csv = study.client.download_artifacts(parent.info.run_id, "leaderboard/leaderboard.csv", str(tmp_path))
    assert len(open(csv).read().strip().splitlines()) == 1 + len(children)  # header + every run (+ confirm, final)


@pytest.fixture(scope="module")
def evaluated(study, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    assert (
        evaluate.main(
            ["--experiment", study.experiment, "--mlflow-uri", study.uri, "--out", str(out), "--bootstrap", "200"]
        )
        == 0
    )
    return out


def _winner(study):
    """The study's winning run: with confirmation, the best seed of the best configuration by mean."""
    exp, parent, runs = _children(study)
    won = best_run(trial_rows(study.client, exp.experiment_id, parent.info.run_id))
    return exp, parent, next(r for r in runs if r.info.run_id == won.run_id)


def test_evaluation_metrics_are_sklearns_on_the_test_split(study, evaluated, tmp_path):
    exp, parent, winner = _winner(study)
    folder = evaluated / winner.info.run_name
    summary = json.loads((folder / "metrics.json").read_text())
    assert summary["run_id"] == winner.info.run_id
    row = next(
        r for r in trial_rows(study.client, exp.experiment_id, parent.info.run_id) if r.run_id == winner.info.run_id
    )
    clf, splits = evaluate.load_trial(study.client, row, parent.info.run_id, tmp_path)
    pred = evaluate.predict_split(clf, splits)
    assert sorted(pred.paths) == sorted(splits.paths[i] for i in splits.test)  # the test split, all of it
    p = pred.logits.argmax(1)
    expected = {
        "test_accuracy": accuracy_score(pred.targets, p),
        "test_macro_f1": f1_score(pred.targets, p, average="macro", labels=range(len(clf.classes)), zero_division=0),
        "test_weighted_f1": f1_score(pred.targets, p, average="weighted", zero_division=0),
        "test_top5": top_k_accuracy_score(pred.targets, pred.logits, k=5, labels=range(len(clf.classes))),
    }
    logged = study.client.get_run(winner.info.run_id).data.metrics  # on the winning trial's own run
    assert study.client.get_run(winner.info.run_id).data.tags["winner"] == "true"
    assert not any(k.startswith("test_") for k in study.client.get_run(parent.info.run_id).data.metrics)
    for k, v in expected.items():
        m = summary["metrics"][k]
        assert m["value"] == pytest.approx(v), k
        assert m["ci_low"] <= m["value"] <= m["ci_high"], k
        assert logged[k] == pytest.approx(v) and logged[f"{k}_ci_low"] == pytest.approx(m["ci_low"])
    assert 0 <= logged["test_ece"] <= 1


def test_reports_render_and_are_logged_to_the_parent_run(study, evaluated):
    exp, parent, winner = _winner(study)
    name = winner.info.run_name
    logged = {a.path.split("/")[-1] for a in study.client.list_artifacts(parent.info.run_id, f"evaluation/{name}")}
    assert {
        "confusion_matrix.png",
        "reliability.png",
        "gradcam.png",
        "report.html",
        "per_class.csv",
        "confused_pairs.csv",
        "outliers.csv",
        "metrics.json",
    } <= logged
    for png in ("confusion_matrix.png", "reliability.png", "gradcam.png"):
        assert_png(evaluated / name / png)
    html = (evaluated / name / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "95 % CI" in html
