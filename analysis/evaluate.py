"""Final evaluation of a study's winner(s) on the held-out test split (never used for selection).

python -m analysis.evaluate --experiment artsweep-scratch [--mlflow-uri sqlite:///mlflow.db] [--top 1]

For each of the top trials: its best checkpoint from MLflow, the study's split manifest (parent run,
dataset/splits.csv), predictions through the same decode cache and validation transform training used,
then accuracy / top-5 / macro and weighted F1 with bootstrap 95 % intervals, the per-class report, the
confusion matrix, calibration (ECE, reliability diagram, confidence buckets), the most confused pairs,
embedding outliers and Grad-CAM / attention overlays. Everything goes to the parent run under
evaluation/<trial>/ (report.html opens in a browser or MLflow's artifact view); the winner's test_*
metrics (with _ci_low / _ci_high) are logged on its own trial run, which is crowned the study's winner
(analysis.publishing.winner: tagged winner=true, its checkpoint a logged model, linked from the parent and the
experiment). Progress (prediction per batch, then bootstrap, report and overlays) goes to stderr: a bar on a
terminal, plain lines elsewhere.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from analysis.publishing.artifacts import EVALUATION, log_evaluation
from analysis.reading.confirm import candidates
from analysis.reading.evaluation import evaluate, load_trial
from analysis.reading.runs import open_study, study_parser
from trainables.data import dataset
from trainables.metrics import OBJECTIVE_KEY
from trainables.process import run_and_exit


def main(argv=None) -> int:
    p = study_parser(__doc__, "python -m analysis.evaluate")
    p.add_argument("--top", type=int, default=1, help=f"evaluate the N best trials by {OBJECTIVE_KEY} (default 1)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95 %% intervals")
    p.add_argument("--out", default="evaluation", help="local folder for the report (default ./evaluation)")
    a = p.parse_args(argv)
    client, exp, study, rows = open_study(p, a)
    rows = candidates(rows)[: a.top]  # the winner first: by mean over seeds where the study confirmed
    if not rows:
        p.exit(2, f"analysis.evaluate: error: no trial of study {study.info.run_id} reported a result\n")
    for rank, row in enumerate(rows, 1):
        with tempfile.TemporaryDirectory() as tmp:
            clf, splits = load_trial(client, row, study.info.run_id, Path(tmp))
        folder = Path(a.out) / row.name
        print(
            f"evaluating #{rank} {row.name} ({row.family}/{row.arch}, {OBJECTIVE_KEY} {row.best:.4f}) on "
            f"{len(splits.test)} test images ...",
            flush=True,
        )
        try:
            ev = evaluate(clf, splits, folder, row.name, row.run_id, n_boot=a.bootstrap)
        except dataset.DataError as e:
            p.exit(2, f"{p.prog}: error: {e}\n")
        log_evaluation(client, exp.experiment_id, study.info.run_id, row, ev, folder, winner=rank == 1)
        for k, v in ev.metrics.items():
            print(f"  {k:<17} {v['value']:.4f}  (95 % CI {v['ci_low']:.4f} - {v['ci_high']:.4f})")
        print(
            f"  ECE {ev.calibration['ece'] * 100:.1f} %; "
            + "; ".join(
                f"{b['confidence']}: {b['share_of_predictions'] * 100:.0f} % of predictions, "
                f"{b['precision'] * 100:.0f} % right"
                for b in ev.calibration["buckets"]
                if b["count"]
            )
        )
        if ev.pairs:
            print(
                "  most confused: " + ", ".join(f"{q['true']} -> {q['predicted']} ({q['count']})" for q in ev.pairs[:3])
            )
        print(f"  report: {folder / 'report.html'}  (also {EVALUATION}/{row.name}/ in parent run {study.info.run_id})")
    return 0


if __name__ == "__main__":
    run_and_exit(main)
