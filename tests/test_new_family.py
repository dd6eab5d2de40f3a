"""A family defined at run time, in this file only, goes through the real path: a smoke study on the built-in
data (real Ray, real MLflow), its best checkpoint reloaded by analysis.predict, a Grad-CAM map, the leaderboard.
This is the README's promise that a family is one file: nothing else in the repo knows `toy_convnext`."""

import pytest
from mlflow.tracking import MlflowClient

import tune
from analysis import leaderboard, predict, saliency
from analysis.runs import latest_study, trial_rows
from search_spaces import FAMILIES, register
from trainables import checkpoint
from trainables.data.builtin_dataset import ensure_builtin_dataset

pytestmark = pytest.mark.e2e


def define_toy_family():
    # --- the whole family: a timm test model with one extra searched knob (24 lines with this comment) ---
    from search_spaces.space import Choice, Family, Float

    def build(cfg, num_classes, image_size, weights):
        return weights.create(cfg.timm_name, num_classes, drop_rate=cfg.dropout, ls_init_value=cfg.layer_scale)

    return Family(
        name="toy_convnext",
        archs={"convnext_tiny": "convnext_tiny.in12k_ft_in1k"},
        standins={"test_convnext": "test_convnext"},
        build=build,
        space={
            "lr": Float(3e-4, 3e-3, log=True),
            "batch_size": Choice([32, 64]),
            "layer_scale": Float(1e-3, 1.0, log=True),  # ConvNeXt layer-scale init (timm ls_init_value)
        },
        image_size=32,
        pretrained=False,
    )


@pytest.fixture
def family():
    fam = register(define_toy_family())  # a plugin would do this when its file is imported
    yield fam
    FAMILIES.pop(fam.name)


def test_a_family_defined_at_run_time_runs_end_to_end(family, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = tune.main(
        [
            "--family",
            family.name,
            "--smoke",
            "--num-samples",
            "2",
            "--max-epochs",
            "1",
            "--experiment",
            "toy",
            "--mlflow-uri",
            uri,
            "--no-dashboard",
        ]
    )
    assert code == 0, capsys.readouterr().out[-3000:]
    client = MlflowClient(uri)
    exp, parent = latest_study(client, "toy")
    rows = trial_rows(client, exp.experiment_id, parent.info.run_id)
    assert len(rows) == 2 and all(r.status == "FINISHED" and r.family == "toy_convnext" for r in rows)
    assert all("layer_scale" in r.params and "width" not in r.params for r in rows)  # its knob, no other's

    ckpt = client.download_artifacts(rows[0].run_id, checkpoint.ARTIFACT, str(tmp_path))
    image = next((ensure_builtin_dataset() / "cubism").iterdir())
    capsys.readouterr()
    assert predict.main([str(image), "--checkpoint", ckpt, "-k", "3"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 1
    clf = checkpoint.load(ckpt)
    assert clf.trial_config.family.name == "toy_convnext"
    assert clf.trial_config.layer_scale == pytest.approx(float(rows[0].params["layer_scale"]))
    png, maps, _ = saliency.overlays(clf, [image], None, tmp_path / "cam", return_cams=True)
    assert png.exists() and maps.shape[0] == 1

    assert leaderboard.main(["--experiment", "toy", "--mlflow-uri", uri]) == 0
    assert rows[0].name in capsys.readouterr().out
