"""The trial driver: a Ray Tune function trainable that runs one trial as a Ray Train V2 TorchTrainer.

Tune calls run_trial(config) with the parameters Optuna proposed, under their study names; the study's
SearchSpace turns them into the trial's TrialConfig. Rank 0's per-epoch report reaches MLflow (EpochRecorder)
and then Tune, where ASHA decides to go on or stop.

Two ways to run a trial, one training loop (trainables.trial.worker):
- in process (one worker per trial): this Tune actor runs the loop itself, holding the worker's resources, and
  InProcessReports does with each report what Train's controller would. One process per trial instead of three
  (Tune actor, Train controller, Train worker), and the study reuses it (TuneConfig(reuse_actors=True)) for the
  next trial with torch already imported. A lost process is Tune's to retry (tune.FailureConfig), from the
  trial's last checkpoint (ray.tune.get_checkpoint). Not Train's local mode (ScalingConfig(num_workers=0)):
  Ray 2.60 refuses ray.train.get_context(), which its prepare_model calls, inside a Tune function.
- distributed (DDP, --workers-per-trial > 1): a TorchTrainer; Train's controller starts the worker group, takes
  each report (callbacks EpochRecorder then TuneReportCallback) and restarts a group that lost a worker from
  its last checkpoint (ray.train.FailureConfig). This actor only waits, on a tiny reservation (sweep.resources).
"""

from __future__ import annotations

import functools
import logging
import tempfile
from pathlib import Path

import ray.tune
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from trainables.config import RunSettings
from trainables.metrics import REPLAYED_KEY, RUN_ID_KEY
from trainables.tracking import mlflow_runs
from trainables.tracking.recorder import EpochRecorder
from trainables.trial import memory, rerun
from trainables.trial.entry import train_loop
from trainables.trial.rerun import SEED_PARAM


def split_manifest(uri: str, parent_run_id: str) -> str:
    """The CSV text of the split every trial reads, from the parent run (any node can reach MLflow). Fetched
    here, once per trial driver, and handed to the workers in their config: no worker talks to MLflow."""
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow_runs.fetch_artifact(uri, parent_run_id, mlflow_runs.SPLIT_MANIFEST, tmp)
        return Path(path).read_text(encoding="utf-8")


def train_storage(s: RunSettings) -> str:
    """Where Ray Train keeps each trial's checkpoints: beside Tune's experiment folder."""
    return f"{s.run_path}/train"


def run_trial(config: dict, settings: RunSettings, space) -> None:
    """`space`: the study's search_spaces.space.SearchSpace (passed as an object, like the family it holds).
    A config with a trainables.trial.rerun.Rerun (confirmation, final fit) trains with its seed and epochs."""
    searched, again = rerun.split(config)
    cfg = space.trial_config(searched)  # rejects keys a search space made up
    ctx = ray.tune.get_context()
    trial_id = ctx.get_trial_id()
    phase = again.phase if again else "recipe" if settings.recipes and space.is_recipe(searched) else "search"
    settings = again.settings(settings) if again else settings
    run_id, finished = mlflow_runs.open_trial_run(
        settings.mlflow_uri,
        settings.mlflow_experiment_id,
        settings.parent_run_id,
        rerun.run_key(trial_id, config),
        again.name if again else ctx.get_trial_name(),
        {**run_params(cfg), **({SEED_PARAM: again.seed} if again else {})},
        {
            mlflow_runs.NOTE_TAG: f"**{cfg.family.name} / {cfg.arch}** running",
            mlflow_runs.PHASE_TAG: phase,
            "split_manifest": f"{settings.parent_run_id}/{mlflow_runs.SPLIT_MANIFEST}",  # the split it trains on
            **(again.tags() if again else {}),
        },
        settings.dataset,
    )
    if finished is not None:  # finished before the study was restarted: Tune gets its record, nothing retrains
        for values in finished:
            ray.tune.report({**values, RUN_ID_KEY: run_id, REPLAYED_KEY: True})
        return
    settings, resources = worker_resources(cfg, settings)
    recorder = EpochRecorder(settings.mlflow_uri, run_id, settings.spool, settings.max_epochs)
    config = {
        "trial": cfg,
        "settings": settings,
        "run_id": run_id,
        "manifest": split_manifest(settings.mlflow_uri, settings.parent_run_id),
    }
    if in_process(settings):
        train_loop({**config, "in_process": InProcessReports(recorder)})
        return
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=config,
        scaling_config=ScalingConfig(
            num_workers=settings.workers_per_trial, use_gpu=settings.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=f"trial-{trial_id}",
            storage_path=train_storage(settings),
            # the recorder first: it logs the report to MLflow and takes out its keys before Tune sees it
            callbacks=[recorder, TuneReportCallback()],
            # the latest resume checkpoint only (trainables/trial/resume.py); the best one is in MLflow
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            # a lost worker restarts the group from that checkpoint; after max_retries the trial fails
            failure_config=FailureConfig(max_failures=settings.max_retries),
        ),
    )
    trainer.fit()


def in_process(s: RunSettings) -> bool:
    """Whether the study's trials train in their Tune actor (one worker each) instead of a Train worker group."""
    return s.workers_per_trial == 1


class InProcessReports:
    """What Train's controller does with a report, for a trial that trains in process: the recorder takes out its
    keys and logs the epoch to MLflow, then Tune gets the metrics and the resume checkpoint (ray.tune.report
    stores it in the trial's folder, then blocks until Tune lets the trial go on, or ends the training thread when
    Tune stopped the trial). Logged first: when the study ends, Tune stops its actors without waiting for their
    threads, so whatever came after the report would be lost (benchmarks/scale.py measured 3 of 2,218 epochs).
    A process lost between the two logs that epoch again when Tune restarts the trial from its checkpoint."""

    def __init__(self, recorder: EpochRecorder):
        self.recorder = recorder

    def __call__(self, metrics: dict, checkpoint) -> None:
        self.recorder.log(*self.recorder.take([metrics]), checkpoint)
        ray.tune.report(metrics, checkpoint=checkpoint)


def trial_resources(s: RunSettings, space, driver: dict):
    """What Tune reserves for each trial's actor: in process, its one worker's resources (a GPU share that depends
    on the configuration is computed per trial, as worker_resources does); distributed, the tiny `driver`."""
    if not in_process(s):
        return driver
    if not s.use_gpu:
        return worker_resources(None, s)[1]
    return functools.partial(_config_resources, s, space)


def _config_resources(s: RunSettings, space, config: dict) -> dict:
    return worker_resources(space.trial_config(rerun.split(config)[0]), s)[1]


def run_params(cfg) -> dict:
    """The trial run's params: its searched values under their study names, and what it trains (family, arch, the
    knobs --set fixed), also where the study fixed them. Params, not tags: filter with `params.family = 'cnn'` in
    the MLflow UI."""
    searched = cfg.params()
    what = {"family": cfg.family.name, cfg.prefix + "arch": cfg.arch}  # `cnn.arch` in a --family all study
    what.update({cfg.prefix + k: cfg.values[k] for k in cfg.pinned})
    return {**{k: v for k, v in what.items() if k not in searched}, **searched}


def worker_resources(cfg, s: RunSettings) -> tuple[RunSettings, dict]:
    """What each Train worker asks Ray for: its CPUs, and on GPUs a whole one or, packed, the share its memory
    estimate needs (trainables.trial.memory) with the CPUs that go with that share. Returns the settings the worker
    sees (its CPUs and DataLoader processes) and the resources."""
    if not s.use_gpu:
        return s, {"CPU": s.cpus_per_worker}
    share = 1.0
    if s.pack == "auto" and s.workers_per_trial == 1 and s.gpu_gib:  # else gpu_share is 1: skip the probe
        try:
            share = memory.gpu_share(trial_memory_gib(cfg, s), s.gpu_gib, s.workers_per_trial, s.pack)
        except Exception as e:  # noqa: BLE001 - a model the CPU probe cannot run still trains, on a whole GPU
            logging.getLogger("artsweep").warning(
                "artsweep: no memory estimate for %s (%s: %s); it takes a whole GPU", cfg.timm_name, type(e).__name__, e
            )
    cpus = round(s.cpus_per_worker * share, 3)
    s = s.replace(cpus_per_worker=cpus, loader_workers=max(0, int(cpus) - 1))
    return s, {"CPU": cpus, "GPU": share}


def trial_memory_gib(cfg, s: RunSettings) -> float:
    """The trial's estimated peak GPU memory: its model (random init, built on this CPU once per architecture
    and input size, then cached), its batch size, AMP."""
    from trainables.pretrained import Weights

    size = s.image_size or cfg.family.image_size
    # the network (its timm model and shape knobs: scratch's width); the other knobs (lr, dropout, drop_path) never
    # change what a step holds in memory
    probe = memory.probe(cfg.shape(size), lambda: cfg.family.build(cfg, len(s.classes), size, Weights("none")), size)
    return memory.estimate_gib(probe["params"], probe["activations"], cfg.batch_size, amp=s.amp != "off")
