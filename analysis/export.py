"""A trial's model exported to ONNX, checked against PyTorch on the study's validation split, then registered.

python -m analysis.export --run RUN_ID --format onnx [--mlflow-uri sqlite:///mlflow.db] [--experiment NAME]
                          [--name MODEL_NAME] [--alias ALIAS] [--min-agreement 0.99] [--max-prob-diff 0.001]

The run's best checkpoint goes through torch.onnx.export (the dynamo exporter, else the TorchScript one); every
image of the run's validation split is then classified by PyTorch and by ONNX Runtime from the same preprocessed
tensors. The export passes the gate when the two agree on the top class for at least --min-agreement of the images
and no class probability differs by more than --max-prob-diff; the figures go to the run (onnx/gate.json, tags
onnx_*) either way. A passing export is logged as the same pyfunc as the PyTorch model (same request, same
response; MLflow's onnx flavour in the same MLmodel) and registered as a new version of the study's model
(<experiment>-classifier), tagged format=onnx: `mlflow models serve` and analysis.predict take it as they take the
PyTorch one. analysis.publishing.onnx_model does the work.

Exit codes: 0 registered; 1 refused: the export failed the gate, or neither exporter could write it (nothing is
logged or registered; one line on stderr says why, with the figures and thresholds); 2 bad input (an unknown run,
a run without a checkpoint or split manifest, images not on this machine, an unreachable store, a bad flag).
"""

from __future__ import annotations

import argparse

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from analysis.publishing.models import model_name, promote, registered_report
from analysis.publishing.onnx_model import (
    FORMAT,
    MAX_PROB_DIFF,
    MIN_TOP1_AGREEMENT,
    ExportFailed,
    GateFailed,
    export_and_register,
)
from trainables.data.dataset import DataError
from trainables.process import run_and_exit
from trainables.tracking.mlflow_runs import check_reachable


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--run",
        required=True,
        metavar="RUN_ID",
        help="the trial run to export (any trial, confirmation "
        "or final run: the leaderboard's and the registry's run ids)",
    )
    p.add_argument("--format", required=True, choices=[FORMAT], help="export format (onnx: ONNX Runtime)")
    p.add_argument("--mlflow-uri", default="sqlite:///mlflow.db", help="tracking URI (default: %(default)s)")
    p.add_argument("--experiment", help="the study's experiment (default: the run's); the run must be in it")
    p.add_argument("--name", help="registered model name (default: <experiment>-classifier)")
    p.add_argument(
        "--alias", help="also point this alias at the new version; `champion` moves the old one to `previous`"
    )
    p.add_argument(
        "--min-agreement",
        type=float,
        default=MIN_TOP1_AGREEMENT,
        metavar="SHARE",
        help="gate: least share of validation images, 0 to 1, whose top class ONNX Runtime and PyTorch "
        "agree on (default %(default)s: fp32 runtimes differ only at ties)",
    )
    p.add_argument(
        "--max-prob-diff",
        type=float,
        default=MAX_PROB_DIFF,
        metavar="P",
        help="gate: largest allowed |difference| of a class probability between the runtimes "
        "(default %(default)g: float rounding measured up to 1.3e-5)",
    )
    return p


def main(argv=None) -> int:
    p = parser()
    a = p.parse_args(argv)
    if not 0 <= a.min_agreement <= 1 or a.max_prob_diff < 0:
        p.error("--min-agreement must be 0 to 1 and --max-prob-diff >= 0")
    try:
        check_reachable(a.mlflow_uri, must_exist=True)  # before MlflowClient, which creates a missing SQLite file
        client = MlflowClient(a.mlflow_uri)
        run = client.get_run(a.run)
        experiment = client.get_experiment(run.info.experiment_id).name
        if a.experiment and a.experiment != experiment:
            raise LookupError(f"run {a.run} is in experiment {experiment!r}, not {a.experiment!r}")
        name = a.name or model_name(experiment)
        mv = export_and_register(client, a.run, name, min_agreement=a.min_agreement, max_prob_diff=a.max_prob_diff)
        moved = promote(client, name, mv.version, a.alias) if a.alias else None
    except (GateFailed, ExportFailed) as e:  # the model is refused: exit 1
        p.exit(1, f"analysis.export: refused: {e}\n")
    except (LookupError, OSError, MlflowException, DataError) as e:  # no store / run / checkpoint / split: exit 2
        p.exit(2, f"analysis.export: error: {e}\n")
    t = mv.tags
    print(
        f"gate passed on {t['gate_images']} validation images with the {t['exporter']} exporter: top-1 agreement "
        f"{t['gate_top1_agreement']} (>= {a.min_agreement}), max probability difference {t['gate_max_prob_diff']} "
        f"(<= {a.max_prob_diff:g})"
    )
    print(registered_report(a.mlflow_uri, mv, run.info.run_name, a.alias, moved))
    return 0


if __name__ == "__main__":
    # ImageClassifier comes from analysis.serving, so cloudpickle stores it by reference to that module
    # (what the model's code/ folder provides) even when this file runs as __main__.
    run_and_exit(main)
