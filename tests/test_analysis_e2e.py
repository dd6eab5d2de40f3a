"""analysis/ on the session's real smoke study: leaderboard, test-set evaluation, reports.

Every check reads MLflow through MlflowClient, independently of the code under test. These commands write (the
leaderboard and the evaluation log artifacts to the parent run, the evaluation crowns the winner): they run on
`study_copy`, the study on a server of its own, so the shared study stays as tune.py left it.
"""

import json

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import accuracy_score, f1_score, top_k_accuracy_score

from analysis import evaluate, leaderboard
from analysis.reading import evaluation
from analysis.reading.confirm import best_run
from analysis.reading.runs import trial_rows
from trainables.metrics import BEST_KEY as BEST
from trainables.metrics import OBJECTIVE_KEY as OBJECTIVE
from trainables.tracking.mlflow_runs import latest_study

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


def _printed_board(out: str, n: int) -> tuple[list[list[str]], list[list[str]]]:
    """The default view's trials table (n rows, split into cells) and its best-per-family rows (no rank)."""
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.split()[:2] == ["rank", "trial"])
    assert lines[head].split()[:7] == ["rank", "trial", "family", "arch", OBJECTIVE, "epoch", "state"], lines[head]
    family_rows = lines[lines.index("best per family:") + 2 :]  # past its header
    ends = [i for i, line in enumerate(family_rows) if not line.strip() or line.startswith("confirmation:")]
    families = family_rows[: ends[0]] if ends else family_rows  # the confirmation table may follow directly
    return [line.split() for line in lines[head + 1 : head + 1 + n]], [line.split() for line in families]


def test_the_printed_leaderboard_is_the_studys_record(study_copy, capsys, tmp_path):
    """Each printed row is a trial of the search as MLflow holds it: its best val_macro_f1 over its history, the
    first epoch that reached it, its epochs and whether ASHA stopped it; best first, every trial once; the
    family's best is the top row; the full table is logged to the parent run."""
    study = study_copy
    assert leaderboard.main(["--experiment", study.experiment, "--mlflow-uri", study.uri]) == 0
    out = capsys.readouterr().out
    exp, parent, children = _children(study)
    trials = {r.info.run_name: r for r in children if r.data.tags["phase"] in ("recipe", "search")}
    printed, families = _printed_board(out, len(trials))
    assert len(trials) == 6 and sorted(row[1] for row in printed) == sorted(trials)  # ASHA-stopped ones included
    scores = []
    for rank, row in enumerate(printed, 1):
        run = trials[row[1]]
        values = [
            m.value for m in sorted(study.client.get_metric_history(run.info.run_id, OBJECTIVE), key=lambda m: m.step)
        ]
        best = max(values)
        assert row[0] == str(rank) and row[4] == f"{best:.4f}", row
        assert row[5] == f"{values.index(best) + 1}/{len(values)}", (row, values)
        stopped = run.data.tags["stopped_early"] == "true"
        assert ("ASHA" in row[6:8]) == stopped and (row[6] == "recipe") == (run.data.tags["phase"] == "recipe"), row
        assert run.data.metrics[BEST] == pytest.approx(best)  # the running best the UI sorts by
        scores.append(best)
    assert scores == sorted(scores, reverse=True) and scores[0] == max(r.data.metrics[BEST] for r in trials.values())
    assert any(r.data.tags["stopped_early"] == "true" for r in trials.values())  # the ASHA column was exercised
    assert [(f[0], f[1], f[3]) for f in families] == [(printed[0][1], "scratch", printed[0][4])]
    csv = study.client.download_artifacts(parent.info.run_id, "leaderboard/leaderboard.csv", str(tmp_path))
    assert len(open(csv).read().strip().splitlines()) == 1 + len(children)  # header + every run (+ confirm, final)


@pytest.fixture(scope="module")
def evaluated(study_copy, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    assert (
        evaluate.main(
            [
                "--experiment",
                study_copy.experiment,
                "--mlflow-uri",
                study_copy.uri,
                "--out",
                str(out),
                "--bootstrap",
                "200",
            ]
        )
        == 0
    )
    return out


def _winner(study):
    """The study's winning run: with confirmation, the best seed of the best configuration by mean."""
    exp, parent, runs = _children(study)
    won = best_run(trial_rows(study.client, exp.experiment_id, parent.info.run_id))
    return exp, parent, next(r for r in runs if r.info.run_id == won.run_id)


def test_evaluation_metrics_are_sklearns_on_the_test_split(study_copy, evaluated, tmp_path):
    study = study_copy
    exp, parent, winner = _winner(study)
    folder = evaluated / winner.info.run_name
    summary = json.loads((folder / "metrics.json").read_text())
    assert summary["run_id"] == winner.info.run_id
    row = next(
        r for r in trial_rows(study.client, exp.experiment_id, parent.info.run_id) if r.run_id == winner.info.run_id
    )
    clf, splits = evaluation.load_trial(study.client, row, parent.info.run_id, tmp_path)
    pred = evaluation.predict_split(clf, splits)
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


def test_reports_render_and_are_logged_to_the_parent_run(study_copy, evaluated):
    exp, parent, winner = _winner(study_copy)
    name = winner.info.run_name
    logged = {a.path.split("/")[-1] for a in study_copy.client.list_artifacts(parent.info.run_id, f"evaluation/{name}")}
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
