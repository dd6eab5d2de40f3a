"""Send to MLflow what a study could not write while the tracking server was away, and end its runs.

python -m analysis.sync --experiment artsweep-scratch [--mlflow-uri URI] [--timeout 300]

During an outage every trial's metrics, tags, best checkpoints and run ends wait on disk, in order, in the
study's spool folder (beside its Ray results; the study prints it). The study sends them at its end when it
can; this command sends the rest later (and, with --end-study, ends the runs the study could not end).
"""

from __future__ import annotations

import sys
from pathlib import Path

from analysis.reading.runs import study_parser
from trainables.config import RunSettings
from trainables.process import run_and_exit
from trainables.tracking import mlflow_runs
from trainables.tracking.outbox import pending, refusals, send_pending


def main(argv=None) -> int:
    p = study_parser(__doc__, "python -m analysis.sync")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to keep trying (default %(default)s)")
    p.add_argument(
        "--end-study",
        metavar="STATUS",
        choices=["FINISHED", "KILLED", "FAILED"],
        help="also end the study's parent run, and mark its open trial runs KILLED (only for a study "
        "that is over: its driver stopped while the server was away)",
    )
    a = p.parse_args(argv)
    try:
        mlflow_runs.check_reachable(a.mlflow_uri, must_exist=True)
        s = RunSettings.from_dict(mlflow_runs.read_settings(a.mlflow_uri, a.experiment))
    except (ConnectionError, LookupError) as e:
        p.exit(2, f"{p.prog}: error: {e}\n")
    spool = Path(s.spool)
    before = {run for run, _ in pending(spool)}
    left = send_pending(a.mlflow_uri, spool, a.timeout)
    print(f"sent the pending writes of {len(before) - len(left)} run(s) from {spool}")
    for run, r in refusals(spool):  # kept there until that folder is deleted
        print(f"set aside, refused by MLflow for good: run {run}: {r['write']} ({r['status']}: {r['reason']})")
    if left:
        print(f"still pending: {len(left)} run(s); run this again when the server answers", file=sys.stderr)
        return 1
    if a.end_study:
        killed = mlflow_runs.close_study(a.mlflow_uri, s.mlflow_experiment_id, s.parent_run_id, a.end_study)
        print(f"ended the study's parent run ({a.end_study}) and {len(killed)} open trial run(s) (KILLED)")
    return 0


if __name__ == "__main__":
    run_and_exit(main)
