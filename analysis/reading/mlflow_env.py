"""MLflow's fluent API pointed at one store for one block (loading or logging a model by URI)."""

from __future__ import annotations

import os
from contextlib import contextmanager

from mlflow.tracking._tracking_service.utils import _use_tracking_uri


@contextmanager
def using_tracking_uri(uri: str):
    """MLflow's fluent API (Model.log, pyfunc.load_model("models:/...")) reads the global tracking URI, and
    the registry URI follows it unless MLFLOW_REGISTRY_URI is set: point it at `uri` for this block only,
    so callers in the same process (tests, notebooks) keep theirs, MLFLOW_TRACKING_URI included."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with _use_tracking_uri(uri):
            yield
    finally:
        if env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = env
