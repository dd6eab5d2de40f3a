"""The study's leaderboard: one row per trial (ASHA-stopped ones included), best val_macro_f1 first.

python -m analysis.leaderboard --experiment artsweep-scratch [--mlflow-uri sqlite:///mlflow.db]

Prints the table and each family's best trial, and logs leaderboard/leaderboard.csv (every param) and
leaderboard/leaderboard.md to the study's MLflow parent run.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from analysis.runs import TrialRow, best_per_family, open_study, study_parser
from trainables.metrics import OBJECTIVE_KEY
from trainables.tracking import live_driver

# searched by every family; the family's own knobs are in the CSV (all params) and the MLflow UI
KEY_PARAMS = ("lr", "batch_size", "aug_strength", "sampler_power", "weight_decay")
ARTIFACT_DIR = "leaderboard"


def table(rows: list[TrialRow], all_params: bool = False) -> pd.DataFrame:
    """Rows in the order given (trial_rows: best first). `rank` is 1-based; NaN best = never reported."""
    records = []
    for i, r in enumerate(rows, 1):
        params = r.params if all_params else {k: r.param(k) for k in KEY_PARAMS}
        records.append({"rank": i, "trial": r.name, "family": r.family, "arch": r.arch, OBJECTIVE_KEY: r.best,
                        "best_epoch": r.best_epoch, "epochs": r.epochs, "stopped_early": r.stopped_early,
                        "status": r.status, "wall_s": r.wall_s,
                        **{k: v for k, v in params.items() if k not in ("family", "arch")}, "run_id": r.run_id})
    return pd.DataFrame.from_records(records)


def family_best(rows: list[TrialRow]) -> pd.DataFrame:
    """Each family's best trial, families ranked by it."""
    return table(list(best_per_family(rows).values())).drop(columns=["rank"])


def _fmt(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out[OBJECTIVE_KEY] = out[OBJECTIVE_KEY].map(lambda v: f"{v:.4f}")
    out["wall_s"] = out["wall_s"].map(lambda v: f"{v:.0f}")
    if "lr" in out:
        out["lr"] = out["lr"].map(lambda v: f"{float(v):.2e}" if v not in ("", None) else "")
    for col in ("aug_strength", "sampler_power", "weight_decay"):
        if col in out:
            out[col] = out[col].map(lambda v: f"{float(v):.3g}" if v not in ("", None) else "")
    out["stopped_early"] = out["stopped_early"].map({True: "ASHA", False: ""})
    return out.drop(columns=["run_id"])


def render(rows: list[TrialRow]) -> tuple[str, str]:
    """(terminal text, Markdown) of the leaderboard and the per-family best rows."""
    board, fam = _fmt(table(rows)), _fmt(family_best(rows))
    text = board.to_string(index=False) + "\n\nbest per family:\n" + fam.to_string(index=False)
    md = ("## Trials (best first)\n\n" + board.to_markdown(index=False) +
          "\n\n## Best per family\n\n" + fam.to_markdown(index=False) + "\n")
    return text, md


def log(client: MlflowClient, parent_run_id: str, rows: list[TrialRow], md: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        table(rows, all_params=True).to_csv(Path(tmp) / "leaderboard.csv", index=False)
        (Path(tmp) / "leaderboard.md").write_text(md)
        client.log_artifacts(parent_run_id, tmp, ARTIFACT_DIR)


def study_state(parent) -> str:
    """ended (its status), running (its driver is alive) or crashed (RUNNING, but its driver is gone)."""
    if parent.info.status != "RUNNING":
        return parent.info.status.lower()
    live = live_driver(parent)
    return f"running: {live}" if live else "crashed: RUNNING but its driver is gone (continue it with tune.py --resume)"


def main(argv=None) -> int:
    p = study_parser(__doc__, "python -m analysis.leaderboard")
    p.add_argument("--no-log", action="store_true", help="print only; don't log the tables to the parent run")
    a = p.parse_args(argv)
    client, exp, study, rows = open_study(p, a)
    text, md = render(rows)
    print(f"study {study.info.run_name} ({study.info.run_id}), experiment {a.experiment!r}: {len(rows)} trials, "
          f"{study_state(study)}\n")
    print(text)
    if not a.no_log:
        log(client, study.info.run_id, rows, md)
        print(f"\nlogged {ARTIFACT_DIR}/leaderboard.csv and .md to the parent run {study.info.run_id}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
