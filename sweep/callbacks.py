"""The two Tune callbacks that keep the study sound when a trial ends, however it ends:
ReleaseTrainWorkers  frees the Train workers of a trial Tune stopped (ray-project/ray#54305)
CloseTrialRuns       ends the trial's MLflow child run, tags whether ASHA stopped it early and logs its spend
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import ray
from mlflow.tracking import MlflowClient
from ray import tune
from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

from sweep import budget
from sweep.events import ending, error_text
from sweep.scheduler import epochs_done
from trainables.config import RunSettings
from trainables.metrics import PG_KEY, REPLAYED_KEY, RUN_ID_KEY
from trainables.tracking import mlflow_runs
from trainables.tracking.mlflow_runs import NOTE_TAG
from trainables.tracking.outbox import Outbox, send_pending
from trainables.trial import rerun

log = logging.getLogger("artsweep")


class ReleaseTrainWorkers(tune.Callback):
    """Frees the Train workers of a trial that Tune stopped (ray-project/ray#54305).

    Tune stops a trial gracefully: it asks the driver to stop, but the driver's thread is blocked in
    TorchTrainer.fit() and lives on, and with it the Train controller (an actor the driver owns), which keeps
    training and, once its workers go, retries them in a new placement group that blocks later trials. So a
    trial that ends has its driver killed at once: the controller and its workers die with it.
    Their placement group belongs to the job and stays reserved (Ray's own PlacementGroupCleaner frees it only
    when the dashboard's state API answers): worker rank 0 reports its id, and GRACE_S after the trial ends
    we remove the group if it still exists.

    A trial that trains in process (`distributed=False`) has no worker group: its actor is left to Tune, which
    ends its training thread at the report Tune stopped it on and reuses the process for the next trial.
    """

    GRACE_S = 3.0

    def __init__(self, distributed: bool = True):
        self.distributed = distributed
        self._groups: dict[str, str] = {}  # trial_id -> placement group id (hex)
        self._due: list[tuple[float, str, str]] = []  # (monotonic deadline, pg id, trial_id)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get(PG_KEY):
            self._groups[trial.trial_id] = result[PG_KEY]

    def on_trial_complete(self, iteration, trials, trial, **info):
        driver = trial.temporary_state.ray_actor  # still set: Tune schedules the stop after its callbacks
        if (
            driver is not None and getattr(self, "distributed", True)
        ):  # (a callback a resumed study restored)  # stopped mid-run, or returning: either way its record is written (EpochRecorder
            ray.kill(driver, no_restart=True)  # logs a report before Tune sees it), so nothing is lost
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
                log.debug("artsweep: removed the placement group of ended trial %s", trial_id)


class CloseTrialRuns(tune.Callback):
    """Ends each trial's MLflow child run when Tune ends the trial, including trials ASHA stopped (whose driver
    is killed mid-epoch and cannot end its own run). The close goes through the run's outbox: while the
    tracking server is away it waits on disk with the run's other writes, and never raises into Tune."""

    SEND_EVERY_S = 30.0

    def __init__(self, settings: RunSettings, space=None, milestones: tuple = ()):
        """`space`: the study's SearchSpace (names each run's family and architecture in its description);
        `milestones`: ASHA's rungs (sweep.console.rungs)."""
        self.s, self.space, self.milestones = settings, space, list(milestones)
        self.runs: dict[str, str] = {}  # trial_id -> MLflow run id (from the trial's reports)
        self._next_send = 0.0

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get(RUN_ID_KEY):
            self.runs[trial.trial_id] = result[RUN_ID_KEY]

    def on_trial_start(self, iteration, trials, trial, **info):
        if budget.active():
            budget.active().started(trial.trial_id)  # its spend counts from here (resources reserved)

    def _close(self, trial, status: str, error: str | None = None) -> None:
        wall = budget.active().ended(trial.trial_id) if budget.active() else 0.0
        if (trial.last_result or {}).get(REPLAYED_KEY):
            return  # a trial finished before a resume: its run is closed and keeps its end time
        epochs = epochs_done(trial.last_result or {})
        tags = {
            "stopped_early": str(error is None and epochs < self.s.max_epochs).lower(),
            "epochs_reached": epochs,
            NOTE_TAG: f"{self._what(trial)}{ending(trial, self.s.max_epochs, self.milestones, error)}",
            **({"error": error[:4000]} if error else {}),
        }
        try:
            run_id = (
                self.runs.get(trial.trial_id)
                or mlflow_runs.find_trial_run(
                    MlflowClient(self.s.mlflow_uri),
                    self.s.mlflow_experiment_id,
                    self.s.parent_run_id,
                    rerun.run_key(trial.trial_id, trial.config),
                ).info.run_id
            )
            box = Outbox(self.s.mlflow_uri, run_id, Path(self.s.spool))
            box.tags(tags)
            box.metrics(budget.trial_spend(wall, self.s), step=epochs)
            box.terminate(status)
        except Exception as e:  # noqa: BLE001 - a failing tracking server must not abort the study
            log.warning(
                "artsweep: could not close the MLflow run of trial %s (%s: %s); the study marks it at its end",
                trial.trial_id,
                type(e).__name__,
                e,
            )

    def _what(self, trial) -> str:
        try:
            cfg = self.space.trial_config(rerun.split(trial.config)[0])
            return f"**{cfg.family.name} / {cfg.arch}** "
        except Exception:  # noqa: BLE001 - no space (older state) or a config it cannot read: the ending alone
            return ""

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._close(trial, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._close(trial, "FAILED", error=error_text(trial))

    def on_step_begin(self, iteration, trials, **info):
        """Every SEND_EVERY_S, one try at what trials could not write (their spooled writes), so the UI catches up
        while the study runs; the study's end waits for the rest."""
        if time.monotonic() >= self._next_send:
            self._next_send = time.monotonic() + self.SEND_EVERY_S
            send_pending(self.s.mlflow_uri, Path(self.s.spool), timeout_s=0)
            try:  # the study's heartbeat: --resume tells a live study from a crashed one by it
                MlflowClient(self.s.mlflow_uri).set_tag(
                    self.s.parent_run_id, mlflow_runs.HEARTBEAT_TAG, str(int(time.time()))
                )
                if budget.active():  # and its spend so far, which a crashed study's --resume goes on from
                    mlflow_runs.log_metrics(
                        self.s.mlflow_uri, self.s.parent_run_id, budget.study_spend(budget.active(), self.s)
                    )
            except Exception:  # noqa: BLE001 - a missed beat is fine; the next one comes in SEND_EVERY_S
                pass
