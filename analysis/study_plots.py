"""The study as pictures: learning curves, fANOVA hyper-parameter importance, parallel coordinates (PNG, Agg).

python -m analysis.study_plots --experiment artsweep-scratch [--mlflow-uri sqlite:///mlflow.db] [--out DIR]

Writes learning_curves.png, param_importance.png and parallel_coordinates.png into DIR (default
study-plots/<experiment>), logs them under plots/ of the study's MLflow parent run (--no-log: don't) and
prints their paths. The trials come from MLflow (analysis.runs), never from Ray's result folders.

Importance and parallel coordinates are drawn by Optuna from an in-memory study rebuilt from the finished
trials: each trial's value is its best val_macro_f1 (ASHA-stopped trials included, at the best value they
reached before being stopped), each param's distribution the one the study searched, read from the parent
run's study/space.json. Only searched params every scored trial has (a `--family all` study mixes families
with their own knobs) and that vary are used; the figures (analysis.plot_figures) name the ones left out.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Mapping

import optuna
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    json_to_distribution,
)

from analysis.confirm import searched
from analysis.plot_figures import LOSS, importance_png, learning_curves_png, parallel_png, param_importances, too_few  # noqa: F401
from analysis.runs import TrialRow, metric_histories, open_study, study_parser, with_histories
from trainables.metrics import OBJECTIVE, OBJECTIVE_KEY
from trainables.tracking.mlflow_runs import SPACE, read_artifact_json

ARTIFACT_DIR = "plots"
LEARNING_CURVES, IMPORTANCE, PARALLEL = "learning_curves.png", "param_importance.png", "parallel_coordinates.png"
DIRECTIONS = {"max": "maximize", "min": "minimize"}


# ---------------------------------------------------------------- data -> in-memory Optuna study


def parse_space(searched: Mapping[str, str | Mapping]) -> dict[str, BaseDistribution]:
    """{name: optuna distribution} from the "searched" part of study/space.json (Optuna's JSON per param)."""
    return {k: json_to_distribution(v if isinstance(v, str) else json.dumps(v)) for k, v in searched.items()}


def _choice(dist: CategoricalDistribution, s: str):
    """The choice whose str() is `s`, or a number equal to it ("32.0" for 32, "1" for 1.0)."""
    for choice in dist.choices:
        if str(choice) == s:
            return choice
    for choice in dist.choices:
        if isinstance(choice, (int, float)) and not isinstance(choice, bool):
            try:
                if float(s) == choice:
                    return choice
            except ValueError:
                break
    raise ValueError(f"{s!r} is none of the choices {list(dist.choices)}")


def param_value(dist: BaseDistribution, s: str):
    """The value an MLflow param string stands for under `dist`; ValueError when `dist` cannot hold it.
    Categorical choices keep their type (batch_size 32, width 0.25): the choice whose str() is `s`."""
    if isinstance(dist, CategoricalDistribution):
        return _choice(dist, s)
    if isinstance(dist, IntDistribution):
        f = float(s)
        if not f.is_integer():
            raise ValueError(f"{s!r} is not an integer")
        v = int(f)
    elif isinstance(dist, FloatDistribution):
        v = float(s)
    else:
        raise ValueError(f"unknown distribution {type(dist).__name__}")
    if not dist.low <= v <= dist.high:
        raise ValueError(f"{s!r} is outside [{dist.low}, {dist.high}]")
    return v


def scored_rows(rows: list[TrialRow]) -> list[TrialRow]:
    """Trials that count for importance: FINISHED child runs (ASHA-stopped included) with a reported value.
    Leaves out FAILED and RUNNING runs, and the KILLED leftovers of a trial restarted by --resume."""
    return [r for r in rows if r.status == "FINISHED" and r.best == r.best]


def trial_params(
    rows: list[TrialRow], distributions: Mapping[str, BaseDistribution]
) -> tuple[dict[str, list], dict[str, str]]:
    """({name: [value per row]} of the searched params the figures can use, {left-out name: why}).

    Left out: a param some row lacks (another family's knob in an `all` study), one with a single value
    over the rows, one with a value its logged distribution cannot hold (a study resumed with a new space)."""
    values, skipped = {}, {}
    for name in sorted(distributions):
        raw = [r.params.get(name) for r in rows]
        if any(v is None for v in raw):
            skipped[name] = "not in every trial"
            continue
        try:
            vals = [param_value(distributions[name], v) for v in raw]
        except ValueError:
            skipped[name] = "outside its logged distribution"
            continue
        if len(set(vals)) < 2:
            skipped[name] = "constant"
            continue
        values[name] = vals
    return values, skipped


def build_study(
    rows: list[TrialRow], distributions: Mapping[str, BaseDistribution]
) -> tuple[optuna.Study, dict[str, str]]:
    """(in-memory study with one COMPLETE trial per scored row, {left-out param: why}).

    distributions: {MLflow param name: the optuna distribution the study searched} (parse_space); a param
    without one is not plotted. The study's direction is OBJECTIVE's; each trial's value its best."""
    rows = scored_rows(rows)
    values, skipped = trial_params(rows, distributions)
    dists = {k: distributions[k] for k in values}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory" line
    try:
        study = optuna.create_study(direction=DIRECTIONS[OBJECTIVE.mode], study_name="artsweep-study-plots")
    finally:
        optuna.logging.set_verbosity(verbosity)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([OBJECTIVE_KEY])
    for i, r in enumerate(rows):
        study.add_trial(
            optuna.trial.create_trial(
                params={k: v[i] for k, v in values.items()},
                distributions=dict(dists),
                value=float(r.best),
                user_attrs={"run_id": r.run_id, "name": r.name, "family": r.family, "stopped_early": r.stopped_early},
            )
        )
    return study, skipped


def plot_study(
    rows: list[TrialRow],
    folder: Path,
    distributions: Mapping[str, BaseDistribution],
    max_epochs: int | None = None,
    val_loss: Mapping[str, list] | None = None,
) -> list[Path]:
    """learning_curves.png, param_importance.png, parallel_coordinates.png in `folder` (created).

    rows: analysis.runs.trial_rows (best first). distributions: parse_space of the study's space.
    val_loss: {run_id: [(epoch, value), ...]} for the second learning-curve panel (fetch_histories reads it
    from MLflow); none -> a single panel."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    study, skipped = build_study(rows, distributions)
    return [
        learning_curves_png(rows, folder / LEARNING_CURVES, max_epochs, val_loss),
        importance_png(study, skipped, folder / IMPORTANCE),
        parallel_png(study, skipped, folder / PARALLEL),
    ]


# ---------------------------------------------------------------- MLflow


def fetch_histories(client: MlflowClient, rows: list[TrialRow], metric: str = LOSS) -> dict[str, list]:
    """{run_id: [(step, value), ...] sorted by step} of `metric` for every trial that logged it."""
    return {k: v for k, v in metric_histories(client, [r.run_id for r in rows], metric).items() if v}


def log_study_plots(client: MlflowClient, parent_run_id: str, paths: list[Path]) -> None:
    for p in paths:
        client.log_artifact(parent_run_id, str(p), artifact_path=ARTIFACT_DIR)


def _max_epochs(parent) -> int | None:
    try:
        return int(parent.data.params["max_epochs"]) or None
    except (KeyError, ValueError):
        return None


def read_space(client: MlflowClient, parent_run_id: str) -> dict[str, BaseDistribution]:
    """The searched distributions of a study (study/space.json of its parent run); LookupError when the run
    has none (a study from before the space was logged) or it cannot be read."""
    try:
        searched = read_artifact_json(client, parent_run_id, SPACE)["searched"]
    except (MlflowException, OSError, KeyError, ValueError) as e:
        raise LookupError(
            f"the study's parent run {parent_run_id} has no readable {SPACE} (a study from "
            f"before the search space was logged?): {type(e).__name__}"
        ) from e
    return parse_space(searched)


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
    paths = plot_study(rows, out, space, _max_epochs(study), fetch_histories(client, rows))
    print(f"study {study.info.run_name} ({study.info.run_id}), experiment {a.experiment!r}: {len(rows)} trials")
    for path in paths:
        print(path)
    if not a.no_log:
        log_study_plots(client, study.info.run_id, paths)
        print(f"logged {len(paths)} plots under {ARTIFACT_DIR}/ of the parent run {study.info.run_id}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
