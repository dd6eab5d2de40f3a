"""The study as pictures: learning curves, fANOVA hyper-parameter importance, parallel coordinates (PNG, Agg).

python -m analysis.study_plots --experiment artsweep-scratch [--mlflow-uri sqlite:///mlflow.db] [--out DIR]

Writes learning_curves.png, param_importance.png and parallel_coordinates.png into DIR (default
study-plots/<experiment>), logs them under plots/ of the study's MLflow parent run (--no-log: don't) and
prints their paths. The trials come from MLflow (analysis.reading.runs), never from Ray's result folders.

Importance and parallel coordinates are drawn by Optuna from an in-memory study rebuilt from the finished
trials: each trial's value is its best val_macro_f1 (ASHA-stopped trials included, at the best value they
reached before being stopped), each param's distribution the one the study searched, read from the parent
run's study/space.json. Only searched params every scored trial has (a `--family all` study mixes families
with their own knobs) and that vary are used; the figures (analysis.reading.plot_figures) name the ones left
out.
"""

from __future__ import annotations

from pathlib import Path

from analysis.publishing.artifacts import PLOTS, log_plots
from analysis.reading.confirm import searched
from analysis.reading.optuna_study import read_space
from analysis.reading.plots import fetch_histories, max_epochs, plot_study
from analysis.reading.runs import open_study, study_parser, with_histories
from trainables.process import run_and_exit


def main(argv=None) -> int:
    p = study_parser(__doc__, "python -m analysis.study_plots")
    p.add_argument("--out", type=Path, help="folder for the PNGs (default: study-plots/<experiment>)")
    p.add_argument("--no-log", action="store_true", help="write the PNGs only; don't log them to the parent run")
    a = p.parse_args(argv)
    client, exp, study, rows = open_study(p, a)
    # the search's trials: confirmation runs repeat its configurations (they would weigh twice in fANOVA), the
    # final fit has no validation curve
    rows = with_histories(client, searched(rows))  # the learning curves draw every trial's
    try:
        space = read_space(client, study.info.run_id)
    except LookupError as e:
        p.exit(2, f"{p.prog}: error: {e}\n")
    out = a.out or Path("study-plots") / a.experiment
    paths = plot_study(rows, out, space, max_epochs(study), fetch_histories(client, rows))
    print(f"study {study.info.run_name} ({study.info.run_id}), experiment {a.experiment!r}: {len(rows)} trials")
    for path in paths:
        print(path)
    if not a.no_log:
        log_plots(client, study.info.run_id, paths)
        print(f"logged {len(paths)} plots under {PLOTS}/ of the parent run {study.info.run_id}")
    return 0


if __name__ == "__main__":
    run_and_exit(main)
