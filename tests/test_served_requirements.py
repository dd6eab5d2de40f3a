"""The served model runs with nothing but what it declares: its requirements.txt, their dependencies, the
standard library and its own code/ folder.

python -m pytest tests/test_served_requirements.py -q

A checkpoint is logged as a model by analysis.publishing.models.log_model (SQLite store, no server), then loaded with
`mlflow.pyfunc.load_model` and asked for a prediction in a fresh Python whose import system refuses every other
top-level module, as a virtualenv built from the model's requirements would (`mlflow models serve
--env-manager virtualenv`). A requirement the served code imports but the model does not declare fails here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch
from mlflow.tracking import MlflowClient
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from analysis import serving
from analysis.publishing import models
from search_spaces import get_family
from trainables import checkpoint
from trainables.pretrained import Weights

pytestmark = pytest.mark.integration

CLASSES = ["cubism", "impressionism", "pointillism"]
NORM = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}

# Runs in the fresh process: argv = model folder, image file, JSON list of the top-level modules the declared
# requirements provide. The project's packages may come only from the model's code/ folder.
ONLY_DECLARED = """
import json, site, sys
from importlib.machinery import BuiltinImporter, FrozenImporter, PathFinder

model, image, allowed = sys.argv[1], sys.argv[2], set(json.loads(sys.argv[3]))
installed = {*site.getsitepackages(), site.getusersitepackages()}
refused = set()  # installed here, but not declared: absent in the model's own environment


class OnlyDeclared:
    \"\"\"Every finder but the built-in and frozen ones: a top-level module outside `allowed` comes from the
    standard library's folders or the model's code/ folder (on sys.path once MLflow loads the model), or is
    absent, as in a virtualenv holding only the requirements (find_spec answers None, import fails).\"\"\"

    def __init__(self, finders):
        self.finders = finders

    def find_spec(self, name, path=None, target=None):
        if "." in name or name in allowed:
            return next(filter(None, (f.find_spec(name, path, target) for f in self.finders)), None)
        spec = PathFinder.find_spec(name, [p for p in sys.path if p not in installed])
        if spec is None and any(f.find_spec(name, path, target) for f in self.finders):
            refused.add(name)
        return spec

    def find_distributions(self, *args, **kwargs):  # importlib.metadata's question (mlflow asks it)
        return [d for f in self.finders if hasattr(f, "find_distributions") for d in f.find_distributions(*args, **kwargs)]

    def invalidate_caches(self):
        for f in self.finders:
            getattr(f, "invalidate_caches", lambda: None)()


others = [f for f in sys.meta_path if f not in (BuiltinImporter, FrozenImporter)]
sys.meta_path = [BuiltinImporter, FrozenImporter, OnlyDeclared(others)]
import mlflow.pyfunc
import pandas as pd

try:
    loaded = mlflow.pyfunc.load_model(model)
    out = loaded.predict(pd.DataFrame({"image": [open(image, "rb").read()]}), params={"k": 2})
finally:
    print("refused:", sorted(refused), file=sys.stderr)
print(json.dumps(out.to_dict("records")))
"""


def _declared_modules(requirements_txt: Path) -> set[str]:
    """Top-level modules installed here by the requirements in the file and, recursively, by what they require
    (markers evaluated for this machine, extras followed): what pip would install from them."""
    todo = [Requirement(line) for line in requirements_txt.read_text().split() if line and not line.startswith("-")]
    dists, seen = set(), set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if (name, frozenset(req.extras)) in seen:
            continue
        seen.add((name, frozenset(req.extras)))
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # required only on another platform, or optional
        dists.add(name)
        for dep in map(Requirement, requires):
            if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in {"", *req.extras}):
                todo.append(dep)
    return {mod for mod, ds in metadata.packages_distributions().items() if dists & {canonicalize_name(d) for d in ds}}


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """(model folder, image file, the predictions of the checkpoint's Classifier here)."""
    tmp = tmp_path_factory.mktemp("served_requirements")
    torch.manual_seed(0)
    cfg = get_family("scratch").config("simple_cnn", width=0.25)
    model = cfg.family.build(cfg, len(CLASSES), 32, Weights("none"))
    ckpt = checkpoint.save(tmp, model, CLASSES, cfg, 32, NORM, "crop", 1, {"val_macro_f1": 0.5})
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("served", artifact_location=(tmp / "artifacts").as_uri())
    run = client.create_run(exp, run_name="trial")
    client.log_artifact(run.info.run_id, str(ckpt), "checkpoint")
    client.set_terminated(run.info.run_id)
    info, clf = models.log_model(client, run.info.run_id)
    folder = Path(urlparse(client.get_logged_model(info.model_id).artifact_location).path)  # a local file: store
    image = tmp / "image.jpg"
    image.write_bytes(serving.example_image())
    return folder, image, clf.top_k([image.read_bytes()], 2)


def test_the_served_model_loads_and_predicts_with_only_its_declared_requirements(logged, tmp_path):
    folder, image, expected = logged
    allowed = _declared_modules(folder / "requirements.txt")
    assert "torch" in allowed and "trainables" not in allowed  # the project comes from code/ alone
    proc = subprocess.run(
        [sys.executable, "-c", ONLY_DECLARED, str(folder), str(image), json.dumps(sorted(allowed))],
        cwd=tmp_path,  # not the checkout: the project is importable only from the model's code/ folder
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = json.loads(proc.stdout.strip().splitlines()[-1])
    assert row["classes"] == [c for c, _ in expected[0]]
    assert row["probabilities"] == pytest.approx([p for _, p in expected[0]], abs=1e-5)
