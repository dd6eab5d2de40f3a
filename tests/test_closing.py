"""The study's closing steps (analysis.publishing.closing) and its summary (sweep.summary), without Ray or a server:
a step that fails leaves its warning and the rest still runs; the summary prints what closing returned, in place."""

import pytest
from mlflow.entities.model_registry import ModelVersion, ModelVersionTag

from analysis.publishing import closing, winner
from analysis.reading.runs import TrialRow
from sweep import summary
from trainables.config import RunSettings
from trainables.data.dataset import DataError

pytestmark = pytest.mark.unit

SETTINGS = RunSettings(
    family="scratch",
    data_dir="-",
    num_samples=2,
    max_epochs=4,
    workers_per_trial=1,
    experiment="e",
    mlflow_uri="http://127.0.0.1:9",  # never reached: the tests stand in for every MLflow call
    storage="/tmp/x",
    parent_run_id="parent",
)


def row(name: str, best: float, phase: str = "search") -> TrialRow:
    return TrialRow(
        name, name, "FINISHED", "scratch", "deep_cnn", {"scratch.lr": "0.01"}, best, 2, 4, False, 1.0, phase=phase
    )


def test_mlflow_gone_leaves_the_record_as_it_is_and_the_summary_says_so(monkeypatch, capsys):
    def gone(*_):
        raise ConnectionError("refused")

    monkeypatch.setattr(closing, "trial_rows", gone)
    monkeypatch.setattr(closing, "RETRY_S", 0)  # the first failure is the last
    closed = closing.close(SETTINGS)
    assert closed.unreachable == "ConnectionError" and closed.best is None and not closed.champions
    assert summary.print_summary(SETTINGS, closed, 12.0) == 0
    assert "no summary: MLflow does not answer (ConnectionError)" in capsys.readouterr().out


def test_a_failed_step_is_a_warning_and_the_others_still_run(monkeypatch, capsys):
    rows = [row("run_trial_a", 0.8), row("run_trial_b", 0.6), row("final-run_trial_a", float("nan"), "final")]
    crowned = []

    def no_data(*_):
        raise DataError("the images are elsewhere")

    def register_fails(*_, **__):
        raise ConnectionError("gone")

    monkeypatch.setattr(closing, "trial_rows", lambda *_: rows)
    monkeypatch.setattr(closing, "test_scores", no_data)
    monkeypatch.setattr(winner, "crown", lambda client, exp, parent, best, test, dataset: crowned.append(best) or "m-1")
    monkeypatch.setattr(closing, "crown_final", register_fails)
    closed = closing.close(SETTINGS)
    assert crowned == [rows[0]] and closed.crowned == closing.Crowned({}, 0, "m-1")  # crowned without test metrics
    assert closed.warnings == [
        "warning: no test metrics for the winner here (the images are elsewhere); python -m analysis.evaluate "
        "scores it where the data is"
    ]
    assert closed.champions[0].warning == (
        "warning: could not score and register the final fit final-run_trial_a (ConnectionError: gone); "
        "python -m analysis.registry --experiment e --trial final-run_trial_a --alias champion registers it"
    )

    said = []
    monkeypatch.setattr(summary, "say", said.append)
    monkeypatch.setattr(summary, "spend_line", lambda s: "spend")
    assert summary.print_summary(SETTINGS, closed, 12.0) == 0
    out = capsys.readouterr().out.splitlines()
    assert said == closed.warnings
    config = out.index("  config: lr=0.01")
    assert out[config + 1 : config + 3] == [
        "  tagged winner=true in MLflow with its checkpoint as logged model m-1",
        closed.champions[0].warning,
    ]


def test_the_champions_line():
    version = ModelVersion("e-classifier", "3", 0, tags=[ModelVersionTag("epochs", "4")])
    test = {"test_macro_f1": 0.5, "test_macro_f1_ci_low": 0.4, "test_macro_f1_ci_high": 0.6, "test_accuracy": 0.7}
    champion = closing.Champion(row("final-run_trial_a", float("nan"), "final"), version, test, previous="2")
    assert summary.champion_line(champion) == (
        "final fit final-run_trial_a: 4 epochs on train + val; test_macro_f1 0.5000 [0.4000, 0.6000], test_accuracy "
        "0.7000; registered models:/e-classifier/3 as @champion (version 2 is now @previous)"
    )
