"""The top K models of a study as one: their softmax outputs averaged, scored on the test split beside each member.

python -m analysis.ensemble --experiment NAME [--mlflow-uri sqlite:///mlflow.db] [--top 3] [--register [MODEL]]

Members: the K best runs by validation macro F1 among the confirmation runs (several seeds of the best
configurations: the usual way an ensemble gains), or among the search's trials when the study did not confirm.
Each member's best checkpoint predicts the test split through the decode cache and validation transform
training used; the ensemble's probabilities are the members' mean. Printed: test accuracy, macro F1 (and
the rest of analysis.scores' point metrics) with bootstrap 95 % intervals, for every member, the best single
model (best by validation, as a user would pick it) and the ensemble. ensemble/metrics.json and .md go to the
parent run. --register logs the ensemble as one pyfunc model under the parent run and registers it (default
name: <experiment>-ensemble): same request / response as a single model, so `mlflow models serve` and
analysis.predict take it unchanged.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import scores
from analysis.confirm import searched
from analysis.runs import TrialRow, open_study, study_parser
from trainables.metrics import OBJECTIVE, OBJECTIVE_KEY

ARTIFACT_DIR = "ensemble"


def members(rows: list[TrialRow], k: int) -> list[TrialRow]:
    """The K best confirmation runs by validation, or the K best search trials without confirmation."""
    pool = [r for r in rows if r.phase == "confirm" and r.epochs] or [r for r in searched(rows) if r.epochs]
    return sorted(pool, key=lambda r: OBJECTIVE.sort_key(r.best))[:k]


def average(probabilities: list[np.ndarray]) -> np.ndarray:
    """The ensemble's class probabilities [N, C]: the members' mean."""
    return np.mean(np.stack(probabilities), axis=0)


def as_logits(probs: np.ndarray) -> np.ndarray:
    """Probabilities as logits for analysis.scores (its softmax gives them back; argmax and ranks are kept)."""
    return np.log(np.clip(probs, 1e-12, None))


def table(named: dict[str, np.ndarray], targets: np.ndarray, n_boot: int) -> pd.DataFrame:
    """One row per model (name -> probabilities [N, C]): each point metric with its bootstrap 95 % interval."""
    out = []
    for name, probs in named.items():
        point = scores.point_metrics(as_logits(probs), targets, n_boot=n_boot)
        out.append(
            {
                "model": name,
                **{k: v["value"] for k, v in point.items()},
                **{f"{k}_ci": f"[{v['ci_low']:.4f}, {v['ci_high']:.4f}]" for k, v in point.items()},
            }
        )
    return pd.DataFrame(out).set_index("model")


def predict(client, rows: list[TrialRow], parent_run_id: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """({member name: test probabilities [N, C]}, targets [N]) through analysis.evaluate's prediction."""
    from analysis.evaluate import load_trial, predict_split

    probs, targets = {}, None
    for r in rows:
        with tempfile.TemporaryDirectory() as tmp:
            clf, splits = load_trial(client, r, parent_run_id, Path(tmp))
        pred = predict_split(clf, splits)
        if targets is not None and not np.array_equal(targets, pred.targets):
            raise ValueError(f"{r.name} scored other test images than the other members (another split?)")
        probs[r.name], targets = scores.softmax(pred.logits), pred.targets
    return probs, targets


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
    from trainables.data.dataset import DataError

    try:
        probs, targets = predict(client, chosen, study.info.run_id)
    except DataError as e:
        p.exit(2, f"{p.prog}: error: {e}\n")
    named = {
        **probs,
        f"best single ({chosen[0].name})": probs[chosen[0].name],
        f"ensemble of {len(chosen)}": average(list(probs.values())),
    }
    df = table(named, targets, a.bootstrap)
    cols = [c for c in ("test_macro_f1", "test_macro_f1_ci", "test_accuracy", "test_accuracy_ci") if c in df]
    print(f"test split ({len(targets)} images, never used for selection), bootstrap 95 % intervals:")
    print(df[cols].to_string(float_format=lambda v: f"{v:.4f}"))
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "metrics.json").write_text(
            json.dumps(
                {"members": [r.run_id for r in chosen], "metrics": df.reset_index().to_dict("records")}, indent=2
            )
        )
        (Path(tmp) / "metrics.md").write_text(df.to_markdown(floatfmt=".4f") + "\n")
        client.log_artifacts(study.info.run_id, tmp, ARTIFACT_DIR)
    print(f"logged {ARTIFACT_DIR}/metrics.json and .md to the parent run {study.info.run_id}")
    if a.register is not None:
        from analysis.registry import log_model, quiet_mlflow

        name = a.register or f"{a.experiment}-ensemble"
        with quiet_mlflow():
            info, _ = log_model(client, [r.run_id for r in chosen], study.info.run_id, registered_model_name=name)
        v = info.registered_model_version
        for key, value in {
            "members": ",".join(r.run_id for r in chosen),
            "kind": f"ensemble of {len(chosen)}",
            **{k: f"{df.loc[f'ensemble of {len(chosen)}', k]:.4f}" for k in ("test_macro_f1", "test_accuracy")},
        }.items():
            client.set_model_version_tag(name, str(v), key, value)
        print(
            f"registered models:/{name}/{v}; serve it like a single model:\n  MLFLOW_TRACKING_URI={a.mlflow_uri} "
            f"mlflow models serve -m models:/{name}/{v} --env-manager local -p 5001"
        )
    return 0


if __name__ == "__main__":
    # ImageClassifier comes from analysis.serving, so cloudpickle stores it by reference to that module
    sys.exit(main())
