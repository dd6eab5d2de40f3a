"""The served model the serving tests share (tests/test_serving.py, tests/test_serving_limits.py): one REAL
`mlflow models serve` per session, which tests/conftest.py's `served` fixture runs with serve().

A checkpoint is written as a trial would (no Ray), logged to a fresh SQLite store, registered with
analysis.publishing.models.register, and served by analysis.scoring_server from another cwd with the project
importable only from the model's own code/ folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from mlflow.tracking import MlflowClient

from analysis.publishing import models
from analysis.scoring_server import scoring_server
from search_spaces import get_family
from trainables import checkpoint
from trainables.pretrained import Weights

NORM = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
NAME = "painter"

NO_PROJECT = """
import os, sys
from importlib.machinery import PathFinder


class OnlyModelCode:
    def find_spec(self, name, path=None, target=None):
        if name not in ("trainables", "search_spaces", "analysis", "sweep", "tune"):
            return None
        spec = PathFinder.find_spec(name, [p for p in sys.path if os.path.basename(p) == "code"])
        if spec is None:
            raise ModuleNotFoundError(f"{name}: only a model's code/ folder may provide it here")
        return spec


sys.meta_path.insert(0, OnlyModelCode())
"""


@dataclass
class Served:
    url: str  # the model's POST /invocations
    ckpt: Path
    clf: checkpoint.Classifier  # the same checkpoint loaded in the test's process
    uri: str  # the SQLite store holding the registered model

    @property
    def port(self) -> int:
        return urlparse(self.url).port


def write_checkpoint(folder: Path, classes: list[str]) -> Path:
    """A scratch simple_cnn at 32 px, random weights, as a trial's model.pt."""
    torch.manual_seed(0)
    cfg = get_family("scratch").config("simple_cnn", width=0.25)
    model = cfg.family.build(cfg, len(classes), 32, Weights("none"))
    with torch.no_grad():  # spread the classes' logits: top-k order must not hinge on float noise between processes
        cfg.family.head(model).bias.copy_(torch.arange(len(classes), dtype=torch.float32) * 1.5)
    return checkpoint.save(folder, model, classes, cfg, 32, NORM, "crop", 1, {"val_macro_f1": 0.5})


@contextmanager
def serve(tmp_path_factory, classes: list[str]):
    """The checkpoint registered as models:/painter/1 and served until the block ends; yields Served."""
    tmp = tmp_path_factory.mktemp("serving")
    ckpt = write_checkpoint(tmp, classes)
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("serving", artifact_location=(tmp / "artifacts").as_uri())
    run = client.create_run(exp, run_name="trial")  # a trial's child run, as the study leaves it
    client.log_artifact(run.info.run_id, str(ckpt), "checkpoint")
    client.set_terminated(run.info.run_id)
    mv = models.register(client, run.info.run_id, NAME)
    assert (mv.name, str(mv.version)) == (NAME, "1") and mv.tags["trial_run_id"] == run.info.run_id
    assert client.get_run(run.info.run_id).info.status == "FINISHED"  # the trial run was not reopened

    # Serve as on a machine without this project: another cwd, and a sitecustomize (run by every Python the
    # server starts, uvicorn's too) that lets only a model's code/ folder provide the project's packages.
    cwd = tmp_path_factory.mktemp("elsewhere")
    (cwd / "sitecustomize.py").write_text(NO_PROJECT)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "PYTHONPATH": os.pathsep.join([str(cwd), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    blocked = subprocess.run(
        [sys.executable, "-c", "import trainables"], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert blocked.returncode != 0 and "only a model's code/" in blocked.stderr, blocked.stderr
    with scoring_server(f"models:/{NAME}/1", env, cwd, tmp / "serve.log", timeout_s=120) as (base, up_s):
        print(f"mlflow models serve answered /ping after {up_s:.1f} s")
        yield Served(f"{base}/invocations", ckpt, checkpoint.load(ckpt), uri)
