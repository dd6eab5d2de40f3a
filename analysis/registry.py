"""A study's winner as a registered MLflow model that `mlflow models serve` answers.

python -m analysis.registry --experiment NAME [--mlflow-uri sqlite:///mlflow.db] [--name MODEL_NAME] [--trial RUN_ID]

Registers the best trial of the latest study (or --trial) and prints the serve command and a curl example.
The model is a pyfunc wrapping the trial's checkpoint (checkpoint/model.pt); predictions go through
trainables.checkpoint.Classifier, so they apply training's exact validation preprocessing.

Request (JSON, POST /invocations; the image file's bytes base64-encoded; `params` optional, k defaults to 5):
    {"dataframe_split": {"columns": ["image"], "data": [["<base64>"], ...]}, "params": {"k": 3}}
    {"dataframe_records": [{"image": "<base64>"}, ...]}   or   {"inputs": {"image": ["<base64>", ...]}}
Response: {"predictions": [{"classes": ["cubism", ...], "probabilities": [0.81, ...]}]}, most probable first.
A file that is not a decodable image -> HTTP 400 naming the row and the reason.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import io
import os
import shutil
import signal
import sys
import tempfile
from contextlib import contextmanager
from importlib import metadata as importlib_metadata
from numbers import Real
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
from mlflow.types.schema import Array

ROOT = Path(__file__).resolve().parents[1]
MODEL_NAME = "classifier"     # the logged model's name inside its run
DEFAULT_K = 5
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec(DataType.binary, "image")]),
    outputs=Schema([ColSpec(Array(DataType.string), "classes"), ColSpec(Array(DataType.double), "probabilities")]),
    params=ParamSchema([ParamSpec("k", DataType.long, DEFAULT_K)]),
)
# Installed into the model's environment only with --env-manager virtualenv/uv/conda; `local` uses this one.
REQUIREMENTS = ("mlflow", "torch", "torchvision", "timm", "optuna", "numpy", "pandas", "Pillow")


def _raw_bytes(value) -> bytes:
    """The image file's bytes from a cell of the `image` column.

    dataframe_split / dataframe_records requests arrive already base64-decoded (the signature's binary
    column); an `inputs` request reaches predict() still base64 text (MLflow casts it to bytes without
    decoding), and a str may come from a caller that skipped the signature. Real image files are never
    pure base64 text (their headers hold non-ASCII bytes), so strict base64 means "encoded"."""
    if isinstance(value, str):
        value = value.encode("ascii", "replace")
    value = bytes(value)
    try:
        return base64.b64decode(b"".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        return value


class ImageClassifier(mlflow.pyfunc.PythonModel):
    """pyfunc around a checkpoint: DataFrame `image` (file bytes) -> `classes`, `probabilities` (top k)."""

    def load_context(self, context):
        from trainables import checkpoint
        self.clf = checkpoint.load(context.artifacts["checkpoint"])

    # pd.DataFrame hint: no type-hint schema (the explicit SIGNATURE rules); it only silences MLflow's advice
    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from trainables.decode import BadImage
        k = int((params or {}).get("k", DEFAULT_K))
        if k < 1:
            raise MlflowException(f"params.k must be >= 1, got {k}", error_code=INVALID_PARAMETER_VALUE)
        if "image" not in model_input:
            raise MlflowException("input needs an `image` column of image file bytes",
                                  error_code=INVALID_PARAMETER_VALUE)
        fitted, bad = [], []
        for row, value in enumerate(model_input["image"]):
            try:   # decode every row first, so one error names all bad rows and nothing is computed for them
                fitted.append(self.clf.fit(_raw_bytes(value)).copy())   # writable: torch warns on read-only arrays
            except BadImage as e:
                bad.append(f"row {row}: {e}")
        if bad:  # INVALID_PARAMETER_VALUE: the scoring server answers 400, not 500
            raise MlflowException(f"not a usable image: {'; '.join(bad)}", error_code=INVALID_PARAMETER_VALUE)
        # fit() output is already at the cached side, where fitting again is the identity (Pillow's resize
        # returns a copy at the same size), so top_k on the arrays equals top_k on the bytes.
        top = self.clf.top_k(fitted, k)
        return pd.DataFrame({"classes": [[c for c, _ in t] for t in top],
                             "probabilities": [[p for _, p in t] for t in top]})


def example_image() -> bytes:
    """A small real JPEG (one of the built-in dataset's renders) as the logged input example."""
    import numpy as np

    from trainables.builtin_dataset import STYLES, render
    buf = io.BytesIO()
    render(next(iter(STYLES)), np.random.default_rng(0)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _requirements() -> list[str]:
    out = []
    for dist in REQUIREMENTS:
        try:   # "2.15.0+cpu" -> "2.15.0": local version labels are not on PyPI
            out.append(f"{dist}=={importlib_metadata.version(dist).split('+')[0]}")
        except importlib_metadata.PackageNotFoundError:
            out.append(dist)
    return out


def _code_paths(tmp: Path) -> list[str]:
    """Copies of the packages the served model imports, without __pycache__: logged with the model (code/,
    put on sys.path when it loads) so `mlflow models serve` works from any cwd without this checkout.
    analysis/ gets only this module: the pickled ImageClassifier refers to analysis.registry.ImageClassifier."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for pkg in ("trainables", "search_spaces"):
        shutil.copytree(ROOT / pkg, tmp / pkg, ignore=ignore)
    (tmp / "analysis").mkdir()
    for f in ("__init__.py", "registry.py"):
        shutil.copy2(ROOT / "analysis" / f, tmp / "analysis" / f)
    return [str(tmp / p) for p in ("trainables", "search_spaces", "analysis")]


@contextmanager
def using_tracking_uri(uri: str):
    """MLflow's fluent API (Model.log, pyfunc.load_model("models:/...")) reads the global tracking URI, and
    the registry URI follows it unless MLFLOW_REGISTRY_URI is set: point it at `uri` for this block only,
    so callers in the same process (tests, notebooks) keep theirs, MLFLOW_TRACKING_URI included."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri
    env = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with _use_tracking_uri(uri):
            yield
    finally:
        if env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = env


def register(client_or_uri: MlflowClient | str, run_id: str, model_name: str,
             parent_run_id: str | None = None) -> ModelVersion:
    """Log the checkpoint of trial run `run_id` as a pyfunc model (under that run, or under `parent_run_id`)
    and register it as a new version of `model_name`. Existing runs are not reopened or ended."""
    from trainables import checkpoint
    client = MlflowClient(client_or_uri) if isinstance(client_or_uri, str) else client_or_uri
    uri = client.tracking_uri
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        try:
            ckpt = client.download_artifacts(run_id, checkpoint.ARTIFACT, str(tmp))
        except (OSError, MlflowException) as e:
            raise LookupError(f"run {run_id} has no {checkpoint.ARTIFACT} to register ({e})") from None
        clf = checkpoint.load(ckpt)
        (tmp / "code").mkdir()
        owner = parent_run_id or run_id
        # Model.log is what mlflow.pyfunc.log_model calls; it takes run_id, whereas pyfunc.log_model logs to the
        # active run, and start_run(run_id=...) would reopen the finished trial and rewrite its end time.
        # The LoggedModel is created here because Model.log would put it in the active (else Default)
        # experiment, not the run's.
        logged = client.create_logged_model(client.get_run(owner).info.experiment_id, MODEL_NAME, owner,
                                            params=client.get_run(run_id).data.params)
        with using_tracking_uri(uri):
            info = Model.log(
                artifact_path=None, name=MODEL_NAME, flavor=mlflow.pyfunc, run_id=owner, model_id=logged.model_id,
                python_model=ImageClassifier(), artifacts={"checkpoint": ckpt}, code_paths=_code_paths(tmp / "code"),
                signature=SIGNATURE, input_example=(pd.DataFrame({"image": [example_image()]}), {"k": DEFAULT_K}),
                pip_requirements=_requirements(),   # explicit: inferring them loads the model in a subprocess
                metadata={"classes": clf.classes, "image_size": clf.image_size, "resize_policy": clf.resize_policy,
                          "trial_run_id": run_id, "checkpoint_epoch": clf.epoch},
                registered_model_name=model_name)
    version = str(info.registered_model_version)
    tags = {"trial_run_id": run_id, "family": clf.trial_config.get("family", "?"),
            "arch": clf.trial_config.get("arch", "?"), "checkpoint_epoch": str(clf.epoch),
            **{k: f"{float(v):.4f}" for k, v in clf.metrics.items() if k.startswith("val_") and isinstance(v, Real)}}
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, value)
    return client.get_model_version(model_name, version)


@contextmanager
def scoring_server(model_uri: str, env: dict, cwd: Path, log_path: Path, timeout_s: float = 180.0):
    """Run the real `mlflow models serve -m MODEL_URI --env-manager local` on a free loopback port until the
    block ends; yields (base URL, start-up seconds = launch to the first 200 on /ping). `env` must carry
    MLFLOW_TRACKING_URI for a models:/ URI. The server runs in its own process group, so uvicorn's workers
    stop with it."""
    import subprocess
    import time
    import urllib.request

    from trainables.cluster import free_port
    port = free_port()
    with open(log_path, "w") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri,
                                 "--env-manager", "local", "--host", "127.0.0.1", "-p", str(port)],
                                cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.perf_counter() - t0 > timeout_s:
                    log.flush()
                    raise RuntimeError(f"mlflow models serve not up (rc {proc.poll()}):\n"
                                       f"{Path(log_path).read_text()[-3000:]}")
                time.sleep(0.1)
            yield f"http://127.0.0.1:{port}", time.perf_counter() - t0
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", required=True, help="MLflow experiment of the study (tune.py --experiment)")
    p.add_argument("--mlflow-uri", default="sqlite:///mlflow.db", help="tracking URI (default: %(default)s)")
    p.add_argument("--name", help="registered model name (default: <experiment>-classifier)")
    p.add_argument("--trial", metavar="RUN_ID", help="register this trial run instead of the study's best")
    a = p.parse_args(argv)
    from analysis.runs import latest_study, trial_rows   # here: the served model never needs them
    from trainables.tracking import check_reachable
    name = a.name or f"{a.experiment}-classifier"
    try:
        check_reachable(a.mlflow_uri, must_exist=True)   # before MlflowClient, which creates a missing SQLite file
        client = MlflowClient(a.mlflow_uri)
        run_id = a.trial
        if not run_id:
            exp, study = latest_study(client, a.experiment)
            rows = [r for r in trial_rows(client, exp.experiment_id, study.info.run_id) if r.epochs]
            if not rows:
                raise LookupError(f"no trial of study {study.info.run_id} reported a result")
            run_id = rows[0].run_id
        mv = register(client, run_id, name)
    except (LookupError, OSError, MlflowException) as e:   # no store / study / run / checkpoint: one line, exit 2
        p.exit(2, f"analysis.registry: error: {e}\n")
    t = mv.tags
    print(f"registered models:/{mv.name}/{mv.version}: trial {client.get_run(run_id).info.run_name} "
          f"({t['family']}/{t['arch']}, val_macro_f1 {t.get('val_macro_f1', '?')} at epoch {t['checkpoint_epoch']}), "
          f"logged model {mv.source}")
    print("serve it:")
    print(f"  MLFLOW_TRACKING_URI={a.mlflow_uri} mlflow models serve -m models:/{mv.name}/{mv.version} "
          f"--env-manager local -p 5001")
    print("ask it (top 3 of one image; any size, the body goes through stdin):")
    print("  (printf '{\"dataframe_split\": {\"columns\": [\"image\"], \"data\": [[\"'; base64 < painting.jpg | "
          "tr -d '\\n'; printf '\"]]}, \"params\": {\"k\": 3}}') | curl -s http://127.0.0.1:5001/invocations "
          "-H 'Content-Type: application/json' --data-binary @-")
    print(f"or locally:  python -m analysis.predict painting.jpg --model models:/{mv.name}/{mv.version} "
          f"--mlflow-uri {a.mlflow_uri}")
    return 0


if __name__ == "__main__":
    # Run through the package module, not __main__: cloudpickle stores ImageClassifier by reference to its
    # module, and a class from __main__ would be pickled by value instead.
    from analysis import registry
    sys.exit(registry.main())
