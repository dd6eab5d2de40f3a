"""One study: Ray Tune (OptunaSearch TPE + ASHA) over trial drivers, sized to the cluster.

Also the two Tune callbacks that keep the study sound when a trial ends, however it ends:
  ReleaseTrainWorkers  frees the Train workers of a trial Tune stopped (ray-project/ray#54305)
  CloseTrialRuns       ends the trial's MLflow child run and tags whether ASHA stopped it early
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

import optuna
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch
from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

from search_spaces import ALL, FAMILIES, make_space
from trainables import tracking
from trainables.config import RunSettings
from trainables.driver import run_trial
from trainables.metrics import MODE, OBJECTIVE, PG_KEY

log = logging.getLogger("artsweep")

DRIVER_CPUS = 0.01   # a trial driver only waits on its TorchTrainer; Tune rejects 0 ("empty head bundle")
DRIVER_RESOURCE = "artsweep_driver"   # custom resource only the head declares (cluster/*.yaml): drivers stay there


@dataclass(frozen=True)
class ResourcePlan:
    max_concurrent: int        # trials running at once
    driver: dict               # resources of one trial driver
    cpus_per_worker: float     # logical CPUs per Train worker
    use_gpu: bool              # one GPU per Train worker


def plan_resources(nodes: Sequence[Mapping[str, float]], workers_per_trial: int) -> ResourcePlan:
    """Concurrency from the nodes' resources (those running and those the autoscaler may add, see
    cluster.node_capacity) and each trial's gang (driver + N workers), so waiting trials never hold
    resources that running trials' workers need."""
    cpus = sum(float(n.get("CPU", 0)) for n in nodes)
    gpu_nodes = [n for n in nodes if n.get("GPU", 0) > 0]
    gpus = int(sum(n["GPU"] for n in gpu_nodes))
    driver = {"CPU": DRIVER_CPUS, **({DRIVER_RESOURCE: 0.001} if any(n.get(DRIVER_RESOURCE) for n in nodes) else {})}
    if gpus >= workers_per_trial:
        concurrent = gpus // workers_per_trial
        # a worker takes one GPU and the CPUs that go with it on the leanest GPU node type
        cpus_per_worker = max(1.0, math.floor(min(n.get("CPU", 1) / n["GPU"] for n in gpu_nodes)))
        return ResourcePlan(concurrent, driver, cpus_per_worker, use_gpu=True)
    concurrent = max(1, int(cpus // workers_per_trial))
    # all drivers may sit on one node (the head), so each gang leaves room for every driver there
    per_trial = cpus / concurrent - concurrent * DRIVER_CPUS
    return ResourcePlan(concurrent, driver, round(per_trial / workers_per_trial, 3), use_gpu=False)


class ReleaseTrainWorkers(tune.Callback):
    """Frees the Train workers of a trial that Tune stopped (ray-project/ray#54305).

    ASHA's stop kills the trial driver; Train V2's controller dies with it, but the workers' placement
    group belongs to the job and stays reserved, so later trials wait for resources forever. Ray's own
    PlacementGroupCleaner frees it only when the dashboard's state API answers. Worker rank 0 reports its
    placement group id; GRACE_S after the trial ends (time for the driver, and with it the controller, to
    exit quietly) we remove the group if it still exists.
    """

    GRACE_S = 3.0

    def __init__(self):
        self._groups: dict[str, str] = {}                    # trial_id -> placement group id (hex)
        self._due: list[tuple[float, str, str]] = []         # (monotonic deadline, pg id, trial_id)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get(PG_KEY):
            self._groups[trial.trial_id] = result[PG_KEY]

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._schedule(trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._schedule(trial.trial_id)

    def on_step_begin(self, iteration, trials, **info):
        self._release(time.monotonic())

    def on_experiment_end(self, trials, **info):
        self._release(math.inf)

    def _schedule(self, trial_id: str) -> None:
        if trial_id in self._groups:
            self._due.append((time.monotonic() + self.GRACE_S, self._groups.pop(trial_id), trial_id))

    def _release(self, now: float) -> None:
        due, self._due = [d for d in self._due if d[0] <= now], [d for d in self._due if d[0] > now]
        for _, pg_id, trial_id in due:
            pg = PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_id)))
            if placement_group_table(pg).get("state", "REMOVED") != "REMOVED":
                remove_placement_group(pg)
                log.warning("artsweep: released the Train workers left by stopped trial %s", trial_id)


class CloseTrialRuns(tune.Callback):
    """Ends each trial's MLflow child run when Tune ends the trial, including trials ASHA stopped
    (whose driver is killed mid-epoch and cannot end its own run)."""

    def __init__(self, settings: RunSettings):
        self.s = settings

    def _close(self, trial, status: str, error: str | None = None) -> None:
        epochs = int((trial.last_result or {}).get("training_iteration", 0))
        tracking.close_trial_run(self.s.mlflow_uri, self.s.mlflow_experiment_id, self.s.parent_run_id,
                                 trial.trial_id, status=status, epochs_reached=epochs,
                                 stopped_early=error is None and epochs < self.s.max_epochs, error=error)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._close(trial, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._close(trial, "FAILED", error=str(getattr(trial, "error_file", "") or "trial failed"))


def trainable(settings: RunSettings, plan: ResourcePlan):
    """The trial driver with the study's settings bound and its (tiny) resources; --resume rebuilds it."""
    return tune.with_resources(tune.with_parameters(run_trial, settings=settings), plan.driver)


def build_tuner(settings: RunSettings, family: str, arch: str | None, standins: bool, num_samples: int,
                plan: ResourcePlan) -> tune.Tuner:
    families = FAMILIES.values() if family == ALL else [FAMILIES[family]]
    search = OptunaSearch(
        space=make_space(family, arch, standins), metric=OBJECTIVE, mode=MODE,
        # `all`: the first trials take one family each, so every family enters the race before TPE narrows it
        points_to_evaluate=[{"family": f} for f in FAMILIES] if family == ALL else None,
        sampler=optuna.samplers.TPESampler(seed=settings.seed, n_startup_trials=max(3, min(10, num_samples // 2))))
    asha = ASHAScheduler(time_attr="training_iteration", max_t=settings.max_epochs,
                         grace_period=min(min(f.GRACE_EPOCHS for f in families), settings.max_epochs), reduction_factor=2)
    return tune.Tuner(
        trainable(settings, plan),
        tune_config=tune.TuneConfig(metric=OBJECTIVE, mode=MODE, search_alg=search, scheduler=asha,
                                    num_samples=num_samples, max_concurrent_trials=plan.max_concurrent),
        run_config=tune.RunConfig(
            name=settings.experiment, storage_path=settings.storage,
            callbacks=[ReleaseTrainWorkers(), CloseTrialRuns(settings)],
            failure_config=tune.FailureConfig(max_failures=0), verbose=1),
    )
