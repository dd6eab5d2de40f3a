"""The top K models of a study as one: their softmax outputs averaged, scored on the test split beside each member.

python -m analysis.ensemble --experiment NAME [--mlflow-uri sqlite:///mlflow.db] [--top 3] [--register [MODEL]]

Members: the K best runs by validation macro F1 among the confirmation runs (several seeds of the best
configurations: the usual way an ensemble gains), or among the search's trials when the study did not confirm.
Each member's best checkpoint predicts the test split through the decode cache and validation transform
training used; the ensemble's probabilities are the members' mean. Printed: test accuracy, macro F1 (and
the rest of analysis.reading.scores' point metrics) with bootstrap 95 % intervals, for every member, the best single
model (best by validation, as a user would pick it) and the ensemble. ensemble/metrics.json and .md go to the
parent run. --register logs the ensemble as one pyfunc model under the parent run and registers it (default
name: <experiment>-ensemble): same request / response as a single model, so `mlflow models serve` and
analysis.predict take it unchanged.
"""

from __future__ import annotations

from analysis.publishing.artifacts import ENSEMBLE, log_ensemble
from analysis.publishing.models import register_ensemble
from analysis.reading.ensemble import member_probabilities, members, table
from analysis.reading.runs import open_study, study_parser
from trainables import checkpoint
from trainables.data.dataset import DataError
from trainables.metrics import OBJECTIVE_KEY
from trainables.process import run_and_exit


def main(argv=None) -> int:
    p = study_parser(__doc__, "python -m analysis.ensemble")
    p.add_argument("--top", type=int, default=3, help="members: the K best runs (default 3)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95 %% intervals")
    p.add_argument(
        "--register",
        nargs="?",
        const="",
        metavar="MODEL",
        help="register the ensemble as one served model (default name: <experiment>-ensemble)",
    )
    a = p.parse_args(argv)
    if a.top < 2:
        p.error(f"--top must be 2 or more (an ensemble of one is the model itself), got {a.top}")
    client, exp, study, rows = open_study(p, a)
    chosen = members(rows, a.top)
    if len(chosen) < 2:
        p.exit(
            2,
            f"{p.prog}: error: study {study.info.run_id} has {len(chosen)} run(s) with a result; an ensemble needs 2\n",
        )
    print(f"ensemble of {len(chosen)}: " + ", ".join(f"{r.name} ({OBJECTIVE_KEY} {r.best:.4f})" for r in chosen))
    try:
        probs, targets = member_probabilities(client, chosen, study.info.run_id)
    except DataError as e:
        p.exit(2, f"{p.prog}: error: {e}\n")
    named = {
        **probs,
        f"best single ({chosen[0].name})": probs[chosen[0].name],
        f"ensemble of {len(chosen)}": checkpoint.average(list(probs.values())),
    }
    df = table(named, targets, a.bootstrap)
    cols = [c for c in ("test_macro_f1", "test_macro_f1_ci", "test_accuracy", "test_accuracy_ci") if c in df]
    print(f"test split ({len(targets)} images, never used for selection), bootstrap 95 % intervals:")
    print(df[cols].to_string(float_format=lambda v: f"{v:.4f}"))
    log_ensemble(client, study.info.run_id, chosen, df)
    print(f"logged {ENSEMBLE}/metrics.json and .md to the parent run {study.info.run_id}")
    if a.register is not None:
        name = a.register or f"{a.experiment}-ensemble"
        tags = {
            "members": ",".join(r.run_id for r in chosen),
            "kind": f"ensemble of {len(chosen)}",
            **{k: f"{df.loc[f'ensemble of {len(chosen)}', k]:.4f}" for k in ("test_macro_f1", "test_accuracy")},
        }
        v = register_ensemble(client, [r.run_id for r in chosen], study.info.run_id, name, tags)
        print(
            f"registered models:/{name}/{v}; serve it like a single model:\n  MLFLOW_TRACKING_URI={a.mlflow_uri} "
            f"mlflow models serve -m models:/{name}/{v} --env-manager local -p 5001"
        )
    return 0


if __name__ == "__main__":
    # ImageClassifier comes from analysis.serving, so cloudpickle stores it by reference to that module
    run_and_exit(main)
