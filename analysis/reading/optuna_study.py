"""The study rebuilt for Optuna: an in-memory study of the finished search trials, for fANOVA and the plots.

Each trial's value is its best val_macro_f1 (ASHA-stopped trials included, at the best value they reached before
being stopped), each param's distribution the one the study searched, read from the parent run's
study/space.json. Only searched params every scored trial has (a `--family all` study mixes families with their
own knobs) and that vary are used; the others are returned with the reason (the figures name them).
"""

from __future__ import annotations

import json
import warnings
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

from analysis.reading.runs import TrialRow
from trainables.metrics import OBJECTIVE, OBJECTIVE_KEY
from trainables.tracking.mlflow_runs import SPACE, read_artifact_json

DIRECTIONS = {"max": "maximize", "min": "minimize"}


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
