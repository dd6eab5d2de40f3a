"""From tune.py's flags to one RunSettings, checked before anything starts.

Every check that needs neither Ray nor a model runs here (sweep.preflight), so bad input costs nothing:
UsageError carries one line saying what is wrong and what to do (tune.py prints it and exits 2).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from search_spaces import search_space
from search_spaces.space import SearchSpace
from sweep import preflight
from sweep.budget import parse_duration
from sweep.defaults import CONFIRM_DEFAULT, CONFIRM_FROM, DEMO, SMOKE
from sweep.preflight import UsageError
from trainables import objectives
from trainables.config import RunSettings
from trainables.data import dataset, storage
from trainables.data.builtin_dataset import ensure_builtin_dataset
from trainables.data.scan import scan
from trainables.tracking import mlflow_runs, new_store


def _positive(a: argparse.Namespace) -> None:
    for flag in ("num_samples", "max_epochs", "workers_per_trial", "image_size"):
        value = getattr(a, flag)
        if value is not None and value <= 0:
            raise UsageError(f"--{flag.replace('_', '-')} must be a positive integer, got {value}")
    if a.max_retries < 0:
        raise UsageError(f"--max-retries must be 0 or more, got {a.max_retries}")
    if a.gpu_hours is not None and a.gpu_hours <= 0:
        raise UsageError(f"--gpu-hours must be positive, got {a.gpu_hours}")
    if a.price_per_gpu_hour < 0:
        raise UsageError(f"--price-per-gpu-hour must be 0 or more, got {a.price_per_gpu_hour}")
    if a.confirm is not None and a.confirm < 0:
        raise UsageError(f"--confirm must be 0 (off) or more configurations, got {a.confirm}")
    if a.max_latency_ms is not None and a.max_latency_ms <= 0:
        raise UsageError(f"--max-latency-ms must be a positive number of milliseconds, got {a.max_latency_ms:g}")
    if a.confirm_seeds < 1:
        raise UsageError(f"--confirm-seeds must be at least 1 (2 or more give an interval), got {a.confirm_seeds}")


def _objectives(a: argparse.Namespace) -> objectives.Objectives:
    """--objectives, checked: a Pareto search leaves the choice of a point to the user, so it has no single winner
    to confirm over seeds or to fit again on train + val."""
    try:
        goals = objectives.parse(a.objectives or "")
    except ValueError as e:
        raise UsageError(str(e)) from None
    if goals.pareto and (a.confirm or a.final_fit):
        raise UsageError(
            "--objectives searches a front, not one winner: --confirm and --final-fit do not apply; pick a point "
            "(python -m analysis.leaderboard --pareto) and register it (python -m analysis.registry --trial RUN_ID)"
        )
    return goals


def _demo(a: argparse.Namespace) -> bool:
    """`python tune.py` as it comes: the built-in data, no trial count, budget or --smoke."""
    return a.data is None and not (a.smoke or a.num_samples or a.gpu_hours or a.time_budget)


def _time_budget(a: argparse.Namespace) -> float:
    text = a.time_budget or (DEMO["builtin_time_budget"] if _demo(a) else None)
    if not text:
        return 0.0
    try:
        return parse_duration(text)
    except ValueError as e:
        raise UsageError(f"--time-budget: {e}") from None


def from_flags(a: argparse.Namespace, workdir: Path) -> tuple[RunSettings, SearchSpace, dataset.Source]:
    """(settings, search space, scanned data) of a new study; UsageError on bad input."""
    _positive(a)
    goals = _objectives(a)
    standins = a.standins or a.smoke
    try:
        space = search_space(a.family, a.arch, standins, a.pins or ())
    except ValueError as e:
        raise UsageError(str(e)) from None
    data_dir = data_location(a.data) if a.data else str(ensure_builtin_dataset())
    try:
        source = scan(data_dir, a.label)
    except dataset.DataError as e:
        raise UsageError(str(e)) from None
    mode = SMOKE if a.smoke else DEMO
    time_budget_s = _time_budget(a)
    budgeted = bool(time_budget_s or a.gpu_hours)
    # a budget alone: as many as fit (0); the demo: its own count, within its budget
    num_samples = a.num_samples or (DEMO["builtin_trials"] if _demo(a) else 0 if budgeted else mode["num_samples"])
    s = RunSettings(
        family=a.family,
        data_dir=data_dir,
        label=source.origin.get("label", ""),
        num_samples=num_samples,
        max_epochs=a.max_epochs or mode["max_epochs"],
        workers_per_trial=a.workers_per_trial,
        experiment=a.experiment or f"artsweep-{a.family}",
        mlflow_uri=a.mlflow_uri or mlflow_runs.default_uri(workdir),
        storage=a.storage or str(workdir / "ray_results"),
        # 0 = each family's own default, so `--family all` gives every family its usual input size
        image_size=a.image_size
        or (SMOKE["image_size"] if a.smoke else DEMO["builtin_image_size"] if a.data is None else 0),
        arch=a.arch,
        standins=standins,
        pins=dict(space.pins),
        seed=a.seed,
        amp=a.amp,
        pretrained=a.pretrained or ("none" if a.smoke else "timm"),
        weights_dir=str(Path(a.weights_dir).resolve()) if a.weights_dir else "",
        resize_policy=a.resize,
        max_retries=a.max_retries,
        early_stopping=not a.no_early_stopping,
        # the demo fits 3-4 trials in its budget: seed recipes made for 224 px on a GPU would take half of them at
        # 32 px (measured: best 0.680 with them, 0.73 without); every other study starts with them
        recipes=not (a.no_recipes or _demo(a)),
        starts=DEMO["builtin_starts"] if _demo(a) else {},
        max_train_images=SMOKE["max_train_images"] if a.smoke else 0,
        smoke=a.smoke,
        time_budget_s=time_budget_s,
        gpu_hours=a.gpu_hours or 0.0,
        price_per_gpu_hour=a.price_per_gpu_hour,
        pack=a.pack,
        compile=a.compile,
        confirm_seeds=a.confirm_seeds,
        final_fit=a.final_fit,
        # confirmation is worth its cost once the search is wide enough to have a lucky winner (a Pareto search has
        # no single winner to confirm)
        confirm=a.confirm
        if a.confirm is not None
        else CONFIRM_DEFAULT
        if num_samples >= CONFIRM_FROM and not goals.pareto
        else 0,
        objectives=str(goals) if goals.pareto else "",
        max_latency_ms=a.max_latency_ms or 0.0,
        export=a.export or "",
    )
    preflight.image_size(s, len(source.paths))
    if not a.address:  # a cluster being joined is checked once Ray has joined it (sweep.study.start_ray)
        preflight.workers(s, *preflight.local_capacity(), "this machine")
    preflight.storage(s.storage)
    preflight.weights(space, s)
    check_tracking(s.mlflow_uri, s.experiment)
    return s, space, source


def data_location(data: str) -> str:
    """--data as the study records it: a URI as given (file:// as a local path), a local path made absolute."""
    data = storage.local(data)
    return data.rstrip("/") if storage.is_uri(data) else str(Path(data).expanduser().resolve())


def check_tracking(uri: str, experiment: str | None = None) -> None:
    """The store answers, takes these credentials (MLflow's client reads them from the environment; never from
    the URI) and, given `experiment`, lets this user write to it."""
    try:
        with preflight.store_lock(uri):  # a new SQLite store gets its schema from one process at a time
            new_store.seed(uri)  # a new SQLite store: a copy of MLflow's empty one (its migrations take 3-4 s)
            mlflow_runs.check_reachable(uri)
        if experiment:
            mlflow_runs.check_writable(uri, experiment)
    except ConnectionError as e:
        raise UsageError(str(e)) from None


def space_of(s: RunSettings) -> SearchSpace:
    """The search space a study was started with (for --resume)."""
    return search_space(s.family, s.arch, s.standins, s.pins)
