"""A family and a searched knob added exactly as docs/extending.md tells a newcomer, then a real study with them.

The page shows `search_spaces/toy_convnext.py` twice: the family, then the family with its knob. These tests read
both from the page (so the page cannot drift from what works), check that the knob is one line in the space plus
the line that uses it and that the registry entry is one addition to the real registry, then load the newcomer's
file, register it as the page says a plugin does, and run a smoke study on the built-in data (real Ray, real
MLflow), its best checkpoint reloaded by analysis.predict, a Grad-CAM map and the leaderboard. Nothing in the
repository knows `toy_convnext`."""

import difflib
import re
import runpy
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import tune
from analysis import leaderboard, predict
from analysis.reading import saliency
from analysis.reading.runs import trial_rows
from search_spaces import FAMILIES, register
from trainables import checkpoint
from trainables.data.builtin_dataset import ensure_builtin_dataset
from trainables.pretrained import Weights
from trainables.tracking.artifacts import ARTIFACT
from trainables.tracking.mlflow_runs import latest_study

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "extending.md"
FAMILY_FILE = "search_spaces/toy_convnext.py"
REGISTRY_FILE = "search_spaces/__init__.py"


def page_blocks(title: str) -> list[str]:
    """The page's Python code blocks titled `title`, in page order."""
    return re.findall(rf'```python title="{re.escape(title)}"[^\n]*\n(.*?)\n```', PAGE.read_text(), re.S)


def knob_edit() -> tuple[str, str]:
    """(the space's new line, the line that uses it): the only lines the knob adds to the family's file."""
    family, with_knob = page_blocks(FAMILY_FILE)
    diff = [d for d in difflib.ndiff(family.splitlines(), with_knob.splitlines()) if d[:2] in ("- ", "+ ")]
    removed, added = [d[2:] for d in diff if d[0] == "-"], [d[2:] for d in diff if d[0] == "+"]
    assert len(removed) == 1 and len(added) == 2, f"the knob must be 2 lines of the family's file, not:\n{diff}"
    space_line = next(line for line in added if re.match(r'\s*"\w+": ', line))
    use_line = next(line for line in added if line is not space_line)
    return space_line, use_line


def test_the_knob_is_one_line_in_the_space_and_the_line_that_uses_it():
    space_line, use_line = knob_edit()
    name = re.match(r'\s*"(\w+)": ', space_line).group(1)
    assert f"cfg.{name}" in use_line
    family, _ = page_blocks(FAMILY_FILE)
    assert name not in family  # the family had no such knob before


def test_the_registry_entry_is_one_addition_to_the_real_registry():
    (entry,) = page_blocks(REGISTRY_FILE)
    real = (ROOT / REGISTRY_FILE).read_text().splitlines()
    lines = [line for line in entry.splitlines() if line.strip()]
    assert lines and all("toy_convnext" in line for line in lines)
    for line in lines:
        assert line.replace("toy_convnext, ", "").replace(", toy_convnext.FAMILY", "") in real, line


@pytest.fixture
def family(tmp_path):
    _, with_knob = page_blocks(FAMILY_FILE)
    path = tmp_path / "plugin" / Path(FAMILY_FILE).name
    path.parent.mkdir()
    path.write_text(with_knob + "\n")  # the newcomer's file, as the page shows it
    fam = register(runpy.run_path(str(path))["FAMILY"])  # what the page says a plugin does
    yield fam
    FAMILIES.pop(fam.name)


def test_a_family_and_its_knob_added_as_the_docs_say_run_end_to_end(family, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    flags = ["--family", family.name, "--smoke", "--num-samples", "2", "--max-epochs", "1"]
    code = tune.main([*flags, "--experiment", "toy", "--mlflow-uri", uri, "--no-dashboard"])
    assert code == 0, capsys.readouterr().out[-3000:]
    client = MlflowClient(uri)
    exp, parent = latest_study(client, "toy")
    rows = trial_rows(client, exp.experiment_id, parent.info.run_id)
    assert len(rows) == 2 and all(r.status == "FINISHED" and r.family == "toy_convnext" for r in rows)
    assert all("layer_scale" in r.params and "width" not in r.params for r in rows)  # its knob, no other's

    ckpt = client.download_artifacts(rows[0].run_id, ARTIFACT, str(tmp_path))
    image = next((ensure_builtin_dataset() / "cubism").iterdir())
    capsys.readouterr()
    assert predict.main([str(image), "--checkpoint", ckpt, "-k", "3"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 1
    clf = checkpoint.load(ckpt)
    cfg = clf.trial_config
    assert cfg.family.name == "toy_convnext"
    assert cfg.layer_scale == pytest.approx(float(rows[0].params["layer_scale"]))
    # the line that uses the knob: every ConvNeXt block of the built model starts at the drawn layer scale
    gammas = [p for n, p in family.build(cfg, 3, 32, Weights("none")).named_parameters() if n.endswith("gamma")]
    assert gammas and all(g.detach().eq(cfg.layer_scale).all() for g in gammas)
    png, maps, _ = saliency.overlays(clf, [image], None, tmp_path / "cam", return_cams=True)
    assert png.exists() and maps.shape[0] == 1

    assert leaderboard.main(["--experiment", "toy", "--mlflow-uri", uri, "--columns", "trial,layer_scale"]) == 0
    board = capsys.readouterr().out
    assert rows[0].name in board and "layer_scale" in board
