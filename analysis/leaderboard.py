"""The study's leaderboard: one row per trial (ASHA-stopped ones included), best val_macro_f1 first.

python -m analysis.leaderboard --experiment artsweep-scratch [--mlflow-uri sqlite:///mlflow.db]
python -m analysis.leaderboard --experiment artsweep-scratch --wide                  # every key column
python -m analysis.leaderboard --experiment artsweep-scratch --columns trial,val_macro_f1,lr,dropout
python -m analysis.leaderboard --experiment artsweep-scratch --csv board.csv --markdown board.md --no-log
python -m analysis.leaderboard --experiment artsweep-scratch --pareto                # the accuracy/latency front

Prints the table and each family's best trial. The default table fits 120 characters: rank, trial, family,
arch, val_macro_f1, epoch, state, lr, batch_size, aug_strength, sampler_power, weight_decay, the last ones left
out (and named) when a study's names are too long for all of them. --wide prints every key column, --columns any
columns and params. Every param is in leaderboard/leaderboard.csv and .md,
logged to the study's MLflow parent run (--no-log: not logged) and written where --csv / --markdown say.
Columns: rank, trial (MLflow run name), family, arch, val_macro_f1 (best over the epochs; - never reported),
best_epoch, epochs (reported), epoch (best_epoch/epochs), stopped_early (ASHA), status (MLflow's), state
(status, or ASHA when stopped early), wall_s (trial start to end), run_id, and every searched param.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from analysis.publishing.artifacts import LEADERBOARD, log_leaderboard
from analysis.reading import board, front
from analysis.reading.confirm import searched
from analysis.reading.runs import open_study, study_parser
from trainables.metrics import OBJECTIVE_KEY
from trainables.process import run_and_exit


def _columns(s: str) -> list[str]:
    cols = [c.strip() for c in s.split(",") if c.strip()]
    if not cols:
        raise argparse.ArgumentTypeError("name at least one column")
    return cols


def main(argv=None) -> int:
    p = study_parser(__doc__, "python -m analysis.leaderboard")
    view = p.add_mutually_exclusive_group()
    view.add_argument("--wide", action="store_true", help="print every key column (wider than 120 characters)")
    view.add_argument(
        "--columns",
        type=_columns,
        metavar="A,B,...",
        help=f"print these columns: any of {', '.join((*board.BASE, *board.DERIVED, 'run_id'))} or a param name",
    )
    p.add_argument("--csv", type=Path, metavar="PATH", help="also write the full table (every param) as CSV here")
    p.add_argument("--markdown", type=Path, metavar="PATH", help="also write the full table as Markdown here")
    p.add_argument("--no-log", action="store_true", help="don't log leaderboard.csv / .md to the parent run")
    p.add_argument(
        "--pareto",
        action="store_true",
        help="print only the trials on the Pareto front of val_macro_f1 against the study's cost objective "
        "(latency_ms unless --objectives chose another), cheapest first: the points to choose a model from",
    )
    a = p.parse_args(argv)
    client, exp, study, rows = open_study(p, a)
    if a.pareto:
        return _pareto(study, rows)
    unknown = [
        c
        for c in a.columns or ()
        if c not in (*board.BASE, *board.DERIVED, "run_id") and not any(r.param(c) for r in rows)
    ]
    if unknown:
        params = sorted({k for r in rows for k in r.params})
        p.error(f"--columns: no column or param {', '.join(unknown)} (params: {', '.join(params) or 'none'})")
    print(
        textwrap.fill(
            f"study {study.info.run_name} ({study.info.run_id}), experiment {a.experiment!r}: "
            f"{len(rows)} trials, {board.study_state(study)}",
            board.WIDTH,
            subsequent_indent="  ",
        )
        + "\n"
    )
    print(board.render(searched(rows), a.columns, a.wide) + board.render_phases(rows))
    board.write(rows, a.csv, a.markdown)
    for path in (a.csv, a.markdown):
        if path:
            print(f"wrote {path}")
    if not a.no_log:
        log_leaderboard(client, study.info.run_id, rows)
        print(f"\nlogged {LEADERBOARD}/leaderboard.csv and .md to the parent run {study.info.run_id}")
    return 0


def _pareto(study, rows) -> int:
    goals = study.data.params.get("objectives", "")
    cost_key = goals.split(",")[1] if "," in goals else "latency_ms"
    on = front.front(rows, cost_key)
    if not on:
        print(f"no trial has both a {OBJECTIVE_KEY} and a measured {cost_key}: no front to show")
        return 1
    print(
        f"Pareto front of {OBJECTIVE_KEY} against {cost_key}: {len(on)} of {len(front.points(rows, cost_key))} "
        "trials, cheapest first"
    )
    print(front.front_text(on, cost_key))
    print(
        "register the point you choose: python -m analysis.registry --experiment NAME --trial RUN_ID [--alias champion]"
    )
    return 0


if __name__ == "__main__":
    run_and_exit(main)
