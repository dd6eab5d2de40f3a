"""What the MLflow UI shows of a study beside its runs: a saved view of the runs table, and the study's split as
an MLflow dataset that every trial run takes as its input ("Datasets used")."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Mapping, Sequence

from mlflow.tracking import MlflowClient

from trainables.metrics import BEST_KEY, OBJECTIVE_KEY

# A saved runs-table view of the experiment (MLflow UI 3.x: "Views", or the URL below): the trials sorted by their
# best objective, best first, with that column and the ones that tell trials apart. The UI keeps column choices
# in each browser; a shared view is the only server-side way to open a table that shows best_val_macro_f1.
VIEW_KEY = "best-trials"
VIEW_METRICS = (BEST_KEY, OBJECTIVE_KEY, "val_accuracy", "test_macro_f1")
VIEW_TAGS = ("phase", "epochs_reached", "stopped_early", "winner")


def runs_view(params: Sequence[str], name: str = "Best trials") -> tuple[str, str]:
    """(experiment tag key, value) of the saved view; `params`: the param columns (the study's own names).
    The value is the UI's envelope {name, createdAt, updatedAt, state}, state being the view as a JSON string."""
    columns = [
        "attributes.`Models`",
        *(f"metrics.`{m}`" for m in VIEW_METRICS),
        *(f"params.`{p}`" for p in params),
        *(f"tags.`{t}`" for t in VIEW_TAGS),
    ]
    state = {
        "orderByKey": f"metrics.`{BEST_KEY}`",
        "orderByAsc": False,
        "selectedColumns": columns,
        # the table's own column ids first; widths apply only with an order, and keep the header unclipped
        "columnOrder": ["attributes.`Run Name`", "runDateAndNestInfo", "duration", *columns],
        "columnWidths": {f"metrics.`{BEST_KEY}`": 160},
    }
    now = int(time.time() * 1000)
    return (
        f"mlflow.sharedViewState.{VIEW_KEY}",
        json.dumps({"name": name, "createdAt": now, "updatedAt": now, "state": json.dumps(state)}),
    )


def runs_page(experiment_id: str) -> str:
    """The UI page (after the server's address) of the experiment's trials in the saved view."""
    return f"#/experiments/{experiment_id}/runs?viewStateShareKey={VIEW_KEY}&workflowType=machine_learning"


def dataset_input(manifest: Path, data_dir: str) -> dict:
    """The study's split as an MLflow dataset (the manifest path,label,split: every trial reads it): the fields of
    mlflow.entities.Dataset, which the study keeps in its settings and every trial run logs as its input."""
    import mlflow.data
    import pandas as pd

    df = pd.read_csv(manifest)
    with warnings.catch_warnings():  # "can be interpreted in multiple ways": two local sources, same meaning
        warnings.simplefilter("ignore", UserWarning)
        ds = mlflow.data.from_pandas(df, source=data_dir, targets="label", name=f"{Path(data_dir).name}-splits")
    e = ds._to_mlflow_entity()
    return {
        "name": e.name,
        "digest": e.digest,
        "source_type": e.source_type,
        "source": e.source,
        "schema": e.schema,
        "profile": e.profile,
    }


def log_input(client: MlflowClient, run_id: str, dataset: Mapping, context: str) -> None:
    """`dataset` (dataset_input's fields) as an input of the run, shown in the UI's "Datasets used"."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    if dataset:
        client.log_inputs(run_id, [DatasetInput(Dataset(**dataset), [InputTag("mlflow.data.context", context)])])
