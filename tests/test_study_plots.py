"""analysis.study_plots: the in-memory Optuna study is built from the distributions the study logged
(study/space.json), never guessed from the values; fANOVA finds the param the objective depends on; the CLI on
a hand-made MLflow study (SQLite, no Ray) writes three readable PNGs and logs them under plots/ of the parent
run; too few trials give a PNG that says why; a study without a logged space exits 2."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from optuna.distributions import CategoricalDistribution, FloatDistribution, distribution_to_json
from PIL import Image

from analysis import study_plots
from analysis.publishing.artifacts import PLOTS
from analysis.reading import optuna_study, plot_figures, plots
from analysis.reading.runs import TrialRow
from trainables.metrics import OBJECTIVE, OBJECTIVE_KEY
from trainables.tracking.mlflow_runs import SPACE, STUDY_TAG

pytestmark = pytest.mark.unit

PNGS = (plots.LEARNING_CURVES, plots.IMPORTANCE, plots.PARALLEL)
MAX_EPOCHS = 5
SPACE_DISTS = {  # what a scratch study would log; width searched but every trial below got 1.0
    "arch": CategoricalDistribution(["simple_cnn", "deep_cnn"]),
    "lr": FloatDistribution(1e-5, 1e-1, log=True),
    "batch_size": CategoricalDistribution([32, 64, 128]),
    "aug_strength": FloatDistribution(0.0, 1.0),
    "sampler_power": FloatDistribution(0.0, 1.0),
    "weight_decay": FloatDistribution(1e-5, 1e-2, log=True),
    "dropout": FloatDistribution(0.1, 0.6),
    "width": CategoricalDistribution([0.25, 0.5, 1.0]),
}


def trials(n: int, seed: int = 0) -> list[dict]:
    """n trials as (MLflow param strings, final val_macro_f1, stopped by ASHA): the value rises with
    log10(lr) (1e-5..1e-1); the other params are random and do not matter; the worst third is stopped."""
    rng = np.random.default_rng(seed)
    lrs = np.clip(np.logspace(-5, -1, n), 1e-5, 1e-1)  # logspace's 1e-5 is 9.999999999999999e-06
    rng.shuffle(lrs)
    finals = [0.2 + 0.12 * (math.log10(lr) + 5) + rng.normal(0, 0.01) for lr in lrs]
    stop_below = np.quantile(finals, 0.35) if n > 2 else -1
    out = []
    for i, (lr, final) in enumerate(zip(lrs, finals)):
        params = {
            "family": "scratch",
            "arch": ["simple_cnn", "deep_cnn"][i % 2],
            "lr": repr(float(lr)),
            "batch_size": str([32, 64, 128][i % 3]),
            "aug_strength": repr(float(rng.uniform(0, 1))),
            "sampler_power": repr(float(rng.uniform(0, 1))),
            "weight_decay": repr(float(10 ** rng.uniform(-5, -2))),
            "dropout": repr(float(rng.uniform(0.1, 0.6))),
            "width": "1.0",
            "grad_clip": "1.0",
        }
        stopped = bool(final < stop_below)
        epochs = 1 + i % 2 if stopped else MAX_EPOCHS
        history = [max(0.01, final * (1 - 0.6**e)) for e in range(1, epochs + 1)]
        out.append({"params": params, "stopped": stopped, "history": history})
    return out


def rows_of(ts: list[dict]) -> list[TrialRow]:
    """TrialRows as analysis.reading.runs.trial_rows makes them, best first."""
    rows = [
        TrialRow(
            run_id=f"run{i}",
            name=f"trial_{i}",
            status="FINISHED",
            family="scratch",
            arch=t["params"].get("arch", "?"),
            params=dict(t["params"]),
            best=max(t["history"]),
            best_epoch=int(np.argmax(t["history"])) + 1,
            epochs=len(t["history"]),
            stopped_early=t["stopped"],
            wall_s=1.0,
            history=list(t["history"]),
        )
        for i, t in enumerate(ts)
    ]
    return sorted(rows, key=lambda r: OBJECTIVE.sort_key(r.best))


def assert_readable_png(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.width > 200 and im.height > 200, im.size
        pixels = np.asarray(im.convert("L"), dtype=float)
        description = im.info.get("Description", "")
    assert pixels.std() > 10, f"{path.name} is (almost) one flat colour"
    return description


# ---------------------------------------------------------------- the study from logged distributions


def test_fanova_ranks_the_driving_param_first():
    """16 trials over 7 varying params: fANOVA puts lr first (with 8 it ranks noise first about as often)."""
    study, skipped = optuna_study.build_study(rows_of(trials(16, seed=1)), SPACE_DISTS)
    assert len(study.trials) == 16  # ASHA-stopped trials count, at their best
    assert study.direction.name.lower() == {"max": "maximize", "min": "minimize"}[OBJECTIVE.mode]
    assert study.metric_names == [OBJECTIVE_KEY]
    assert skipped == {"width": "constant"}  # family, grad_clip: not searched, not listed
    assert study.trials[0].distributions == {k: d for k, d in SPACE_DISTS.items() if k != "width"}
    importances = plot_figures.param_importances(study)
    assert next(iter(importances)) == "lr", importances
    assert importances["lr"] > 0.4, importances


def test_the_log_axis_comes_from_the_distribution():
    """Evenly spread values get a log axis when the space says log, and log-spread ones a linear axis when it
    does not: nothing is guessed from the values."""
    ts = trials(6)
    for i, t in enumerate(ts):
        t["params"]["dropout"] = repr(0.1 + 0.1 * i)  # 0.1 .. 0.6, even
    for log in (True, False):
        space = {"lr": FloatDistribution(1e-5, 1e-1, log=not log), "dropout": FloatDistribution(0.1, 0.6, log=log)}
        study, _ = optuna_study.build_study(rows_of(ts), space)
        dists = study.trials[0].distributions
        assert dists["dropout"].log is log and dists["lr"].log is (not log)
        with pytest.warns(optuna.exceptions.ExperimentalWarning):
            ax = optuna.visualization.matplotlib.plot_parallel_coordinate(study, params=["dropout"])
        scales = [a.get_yscale() for a in ax.figure.axes if a is not ax and a.get_ylabel() == ""]
        assert ("log" in scales) is log, scales
        ax.figure.clf()


def test_categorical_numbers_round_trip():
    """MLflow hands back strings: a categorical's choice comes back as the choice itself (32, 0.25)."""
    batch, width = CategoricalDistribution([16, 32, 64]), CategoricalDistribution([0.25, 0.5, 1.0])
    assert optuna_study.param_value(batch, "32") == 32 and type(optuna_study.param_value(batch, "32")) is int
    assert optuna_study.param_value(width, "0.25") == 0.25
    assert optuna_study.param_value(batch, "32.0") == 32  # written as a float somewhere
    assert optuna_study.param_value(CategoricalDistribution([True, False]), "False") is False
    with pytest.raises(ValueError):
        optuna_study.param_value(batch, "48")
    with pytest.raises(ValueError):
        optuna_study.param_value(FloatDistribution(1e-5, 1e-2, log=True), "0.5")
    ts = trials(4)
    for i, t in enumerate(ts):
        t["params"]["width"] = ["0.25", "0.5", "1.0", "0.5"][i]
        t["params"]["batch_size"] = ["16", "32", "64", "32"][i]
    study, skipped = optuna_study.build_study(rows_of(ts), {"width": width, "batch_size": batch})
    assert skipped == {}
    got = sorted((t.params["width"], t.params["batch_size"]) for t in study.trials)
    assert got == [(0.25, 16), (0.5, 32), (0.5, 32), (1.0, 64)]
    assert all(type(t.params["batch_size"]) is int for t in study.trials)


def test_params_not_in_every_trial_or_outside_the_space_are_left_out():
    """A `--family all` study: `family` and each family's qualified knobs; only what every trial has is used."""
    ts = trials(6)
    for i, t in enumerate(ts):
        fam = ["cnn", "scratch"][i % 2]
        t["params"] = {
            "family": fam,
            f"{fam}.lr": t["params"]["lr"],
            "seed": str(i),
            "shared.dropout": "0.9" if i == 0 else "0.2",
        }  # 0.9 is outside the logged range
    space = {
        "family": CategoricalDistribution(["cnn", "scratch"]),
        "cnn.lr": FloatDistribution(1e-5, 1e-1, log=True),
        "scratch.lr": FloatDistribution(1e-5, 1e-1, log=True),
        "shared.dropout": FloatDistribution(0.0, 0.6),
    }
    study, skipped = optuna_study.build_study(rows_of(ts), space)
    assert skipped == {
        "cnn.lr": "not in every trial",
        "scratch.lr": "not in every trial",
        "shared.dropout": "outside its logged distribution",
    }
    assert list(study.trials[0].distributions) == ["family"]  # seed: no distribution, not plotted


def test_too_few_trials_give_a_png_that_says_why(tmp_path):
    paths = plots.plot_study(rows_of(trials(1)), tmp_path, SPACE_DISTS, max_epochs=MAX_EPOCHS)
    assert [p.name for p in paths] == list(PNGS)
    assert assert_readable_png(tmp_path / plots.LEARNING_CURVES) == ""
    for name in (plots.IMPORTANCE, plots.PARALLEL):
        why = assert_readable_png(tmp_path / name)
        assert why.startswith("not drawn: 1 finished trial") and "at least 2" in why, why


def test_parse_space_reads_optuna_json():
    searched = {k: distribution_to_json(d) for k, d in SPACE_DISTS.items()}
    assert optuna_study.parse_space(searched) == SPACE_DISTS


# ---------------------------------------------------------------- the CLI on an MLflow study


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    return root, f"sqlite:///{root / 'mlflow.db'}"


def make_study(uri: str, root, name: str, n_trials: int, with_space: bool = True) -> str:
    """An artsweep-shaped study: parent run tagged as a study with study/space.json, child runs with their
    params (strings), per-epoch val_macro_f1 / val_loss at steps 1..n."""
    client = MlflowClient(uri)
    exp_id = client.create_experiment(name, artifact_location=(root / "artifacts" / name).as_uri())
    parent = client.create_run(exp_id, run_name="study-test", tags={STUDY_TAG: "1"})
    client.log_batch(parent.info.run_id, params=[Param("max_epochs", str(MAX_EPOCHS)), Param("family", "scratch")])
    if with_space:
        client.log_dict(
            parent.info.run_id,
            {
                "searched": {k: distribution_to_json(d) for k, d in SPACE_DISTS.items()},
                "fixed": {"scratch": {"grad_clip": 1.0}},
            },
            SPACE,
        )
    for i, t in enumerate(trials(n_trials)):
        run = client.create_run(
            exp_id,
            tags={
                MLFLOW_PARENT_RUN_ID: parent.info.run_id,
                MLFLOW_RUN_NAME: f"trial_{i}",
                "family": "scratch",
                "arch": t["params"]["arch"],
                "stopped_early": str(t["stopped"]).lower(),
            },
        )
        metrics = []
        for e, f1 in enumerate(t["history"], 1):
            metrics += [Metric(OBJECTIVE_KEY, f1, 0, e), Metric("val_loss", 2.1 - 1.5 * f1 + 0.02 * e, 0, e)]
        client.log_batch(
            run.info.run_id,
            metrics=metrics,
            params=[Param(k, v) for k, v in t["params"].items()],
            tags=[RunTag("epochs_reached", str(len(t["history"])))],
        )
        client.set_terminated(run.info.run_id, "FINISHED")
    client.set_terminated(parent.info.run_id, "FINISHED")
    return parent.info.run_id


def test_cli_writes_and_logs_plots(store, tmp_path, capsys):
    root, uri = store
    parent_id = make_study(uri, root, "plots8", n_trials=8)
    out = tmp_path / "png"
    assert study_plots.main(["--experiment", "plots8", "--mlflow-uri", uri, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in PNGS:
        assert str(out / name) in printed
        assert assert_readable_png(out / name) == "", f"{name} was not drawn"
    logged = {a.path for a in MlflowClient(uri).list_artifacts(parent_id, PLOTS)}
    assert logged == {f"{PLOTS}/{name}" for name in PNGS}


def test_a_study_without_a_logged_space_exits_2(store, tmp_path, capsys):
    root, uri = store
    make_study(uri, root, "old", n_trials=3, with_space=False)
    with pytest.raises(SystemExit) as e:
        study_plots.main(["--experiment", "old", "--mlflow-uri", uri, "--out", str(tmp_path), "--no-log"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert SPACE in err and len(err.strip().splitlines()) == 1, err
    assert not any(tmp_path.iterdir())


def test_unknown_experiment_exits_2(store, capsys):
    _, uri = store
    with pytest.raises(SystemExit) as e:
        study_plots.main(["--experiment", "nope", "--mlflow-uri", uri])
    assert e.value.code == 2
    assert "no MLflow experiment named 'nope'" in capsys.readouterr().err
