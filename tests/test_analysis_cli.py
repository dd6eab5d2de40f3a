"""Every analysis command fails on bad input with one line and exit code 2, before any work."""

import importlib
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from analysis.reading import evaluation
from search_spaces import get_family
from trainables import checkpoint
from trainables.data import augment, dataset
from trainables.pretrained import Weights

pytestmark = pytest.mark.unit

COMMANDS = ("leaderboard", "study_plots", "evaluate", "registry")


def _run(capsys, name, *argv):
    with pytest.raises(SystemExit) as e:
        importlib.import_module(f"analysis.{name}").main(list(argv))
    return e.value.code, capsys.readouterr().err.strip()


@pytest.mark.parametrize("name", COMMANDS)
def test_unreachable_tracking_server(capsys, monkeypatch, name):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail at once; the message is what is tested
    code, err = _run(capsys, name, "--experiment", "x", "--mlflow-uri", "http://127.0.0.1:9")
    assert code == 2 and "127.0.0.1:9" in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("name", COMMANDS)
def test_missing_store_is_not_created(capsys, name, tmp_path):
    code, err = _run(capsys, name, "--experiment", "x", "--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert code == 2 and "no MLflow store at" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("name", COMMANDS)
def test_unknown_experiment(capsys, name, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()  # an existing store without that experiment
    capsys.readouterr()
    code, err = _run(capsys, name, "--experiment", "nope", "--mlflow-uri", uri)
    assert code == 2 and "no MLflow experiment named 'nope'" in err and len(err.splitlines()) == 1, err


def test_export_refuses_an_unreachable_store_a_missing_one_and_an_unknown_run(capsys, monkeypatch, tmp_path):
    """analysis.export names a run, not an experiment: the same refusals, each one line and exit code 2."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    code, err = _run(capsys, "export", "--run", "x", "--format", "onnx", "--mlflow-uri", "http://127.0.0.1:9")
    assert code == 2 and "127.0.0.1:9" in err and len(err.splitlines()) == 1, err
    code, err = _run(
        capsys, "export", "--run", "x", "--format", "onnx", "--mlflow-uri", f"sqlite:///{tmp_path / 'none.db'}"
    )
    assert code == 2 and "no MLflow store at" in err and not (tmp_path / "none.db").exists(), err
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()
    capsys.readouterr()
    code, err = _run(capsys, "export", "--run", "0123", "--format", "onnx", "--mlflow-uri", uri)
    assert code == 2 and "0123" in err and len(err.splitlines()) == 1, err


def test_evaluation_names_images_missing_on_this_machine(tmp_path):
    cfg = get_family("scratch").config("simple_cnn", width=0.25)
    model = cfg.family.build(cfg, 2, 32, Weights("none"))
    norm = {"mean": augment.IMAGENET_MEAN, "std": augment.IMAGENET_STD}
    clf = checkpoint.load(checkpoint.save(tmp_path, model, ["a", "b"], cfg, 32, norm, "crop", 1, {}))
    gone = [str(tmp_path / "elsewhere" / f"{i}.jpg") for i in range(4)]
    splits = dataset.Splits(["a", "b"], gone, np.array([0, 1, 0, 1]), np.array([0, 1]), np.array([2]), np.array([3]))
    with pytest.raises(dataset.DataError, match="not on this machine"):
        evaluation.predict_split(clf, splits)
    assert not Path(tmp_path / "elsewhere").exists()
