"""A study's winner as a registered MLflow model that `mlflow models serve` answers.

python -m analysis.registry --experiment NAME [--mlflow-uri sqlite:///mlflow.db] [--name MODEL_NAME] [--trial RUN_ID]
                           [--alias champion]

Registers the winner of the latest study (or --trial: any run, a confirmation run too; analysis.publishing.models)
and prints the serve command and a curl example. The served model itself (analysis.serving.ImageClassifier, a
pyfunc wrapping the trial's checkpoint) and its request / response format are described in analysis/serving.py;
analysis.scoring_server runs it.
"""

from __future__ import annotations

import argparse

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from analysis.publishing.models import model_name, promote, register, registered_report
from analysis.reading.confirm import best_run
from analysis.reading.runs import trial_rows
from trainables.process import run_and_exit
from trainables.tracking.mlflow_runs import check_reachable, latest_study


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", required=True, help="MLflow experiment of the study (tune.py --experiment)")
    p.add_argument("--mlflow-uri", default="sqlite:///mlflow.db", help="tracking URI (default: %(default)s)")
    p.add_argument("--name", help="registered model name (default: <experiment>-classifier)")
    p.add_argument(
        "--trial",
        metavar="RUN_ID",
        help="register this run (any trial, confirmation or final run) instead "
        "of the study's winner (with confirmation: the best run of the best configuration by mean)",
    )
    p.add_argument(
        "--alias",
        help="also point this alias at the new version; `champion` moves the old champion to `previous`",
    )
    a = p.parse_args(argv)
    name = a.name or model_name(a.experiment)
    try:
        check_reachable(a.mlflow_uri, must_exist=True)  # before MlflowClient, which creates a missing SQLite file
        client = MlflowClient(a.mlflow_uri)
        run_id = a.trial
        if not run_id:
            exp, study = latest_study(client, a.experiment)
            best = best_run(trial_rows(client, exp.experiment_id, study.info.run_id))
            if best is None:
                raise LookupError(f"no trial of study {study.info.run_id} reported a result")
            run_id = best.run_id
        mv = register(client, run_id, name)
        moved = promote(client, name, mv.version, a.alias) if a.alias else None
    except (LookupError, OSError, MlflowException) as e:  # no store / study / run / checkpoint: one line, exit 2
        p.exit(2, f"analysis.registry: error: {e}\n")
    print(registered_report(a.mlflow_uri, mv, client.get_run(run_id).info.run_name, a.alias, moved))
    return 0


if __name__ == "__main__":
    # ImageClassifier comes from analysis.serving, so cloudpickle stores it by reference to that module
    # (what the model's code/ folder provides) even when this file runs as __main__.
    run_and_exit(main)
