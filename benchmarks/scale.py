"""A study of 1,000 trials at a full cluster's concurrency, on 2 cores: the study's own Tune + Optuna (TPE) + ASHA,
callbacks and MLflow record on a real `mlflow server`, with a SURROGATE in place of training.

python benchmarks/scale.py [--trials 1000] [--concurrency 64] [--epochs 4] [--epoch-s 0.5] [--dir DIR] [--profile]
python benchmarks/scale.py --trials 100 --concurrency 16            # quick: about 2 minutes
python benchmarks/scale.py --trials 300 --num-to-keep 2             # a knob: Tune's CheckpointConfig(num_to_keep)
python benchmarks/scale.py --trials 300 --env TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=0   # a knob: Ray's or Tune's
python benchmarks/scale.py --trials 300 --workers-per-trial 2       # the study's distributed mode (no actor reuse)

What runs is the study's: its Tuner (sweep.study._tuner: HonestOptunaSearch's TPE over the scratch family's real
SearchSpace, RecordedASHA, max_concurrent_trials, ReleaseTrainWorkers, CloseTrialRuns, TrialEvents, BudgetStopper,
whatever actor reuse, retries and checkpoint settings it has), its MLflow parent run (mlflow_runs.setup_study,
claim_study, log_study) and its close (sweep.study.finish_record), on `mlflow server` (tests/servers.py: SQLite,
loopback, one worker; SERVER_KNOBS below). Only the trainable differs: the surrogate opens its child run as the trial
driver does (mlflow_runs.open_trial_run), then each epoch sleeps --epoch-s and reports metrics computed from its
config (a smooth function of log lr, batch size and the other knobs, saturating over the epochs, plus seeded noise)
as the study's trials report (report_epoch: EpochRecorder's outbox for the metrics, tags and best checkpoint, Tune
for ASHA, with a small resume checkpoint when trials train in their Tune actor). No torch, no data: it measures
everything around training. --concurrency trials run at once (64: 8 GPUs x 8 packed trials) on fractions of a CPU.

Printed while it runs: trials ended and running, trials/min, the driver's RSS, the trial actors' memory. At the end:
trials/min (overall, and past the start-up: from the first tenth's end to the last); the driver's RSS (this process
runs Tune) when 100 / 500 / 1,000 trials had ended; Tune's experiment-state snapshots (TuneController.save_to_dir
timed in place: count, seconds each, share of the time, size); MLflow writes/s as the server logged them (requests
but GETs and searches); the leaderboard command's time beyond its imports; a check of the record (a FINISHED child
run per trial, holding exactly the epochs Tune saw, nothing left in the outbox); the issue's bounds (`acceptance`;
exit code 1 when one fails). Last line: one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from contextlib import closing
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ray  # noqa: E402
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.execution import tune_controller  # noqa: E402

from search_spaces import search_space  # noqa: E402
from sweep import budget, phases, study  # noqa: E402
from sweep.console import CONSOLE  # noqa: E402
from sweep.resources import DRIVER_CPUS, ResourcePlan  # noqa: E402
from tests.servers import MlflowServer  # noqa: E402
from trainables.config import RunSettings  # noqa: E402
from trainables.metrics import (  # noqa: E402
    BEST_KEY,
    IMPROVED_KEY,
    OBJECTIVE,
    OBJECTIVE_KEY,
    REPLAYED_KEY,
    RUN_ID_KEY,
    TAGS_KEY,
)
from trainables.tracking import mlflow_runs, outbox  # noqa: E402
from trainables.tracking.artifacts import FILENAME  # noqa: E402
from trainables.tracking.recorder import EpochRecorder  # noqa: E402

# Ray's and Tune's knobs, read when Ray and the Tuner start (so set before either), each with why. Figures: this
# benchmark, 300 trials x 64 at once, 2-core box under other work (load 27-35), 2026-12-03, unless said otherwise.
KNOBS = {
    # Tune's default loggers (CSV, JSON, TensorBoard) write 3 files per trial on every result and keep an entry per
    # trial in the driver for good (ray-project/ray#64231); artsweep's record is MLflow, nothing reads Ray's files.
    # Off: the driver's RSS grew 0.115 MB per trial ended instead of 0.27, 123 trials/min past the start-up instead
    # of 71. The study should set it too (sweep.study.RAY_ENV).
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
}
# Checked and left alone (Ray 2.60's code):
# - TUNE_MAX_PENDING_TRIALS_PG: "auto" is 1 for a searcher, but the study sets max_concurrent_trials, which wraps
#   the searcher in a ConcurrencyLimiter, and then "auto" is that limit (tune_controller._get_max_pending_trials):
#   all 64 trials are pending at once. The ramp (~2.5 min before trials flow) is 64 actors importing Ray Tune,
#   MLflow and Optuna on 2 cores (~2.5 CPU-s and 260 MB each), paid once: the study reuses its actors.
# - TUNE_GLOBAL_CHECKPOINT_S: "auto" snapshots every max(10 s, 19 x the last snapshot's time), <= 5 % of the time;
#   but a trial checkpoint forces a snapshot whenever some trial has made CheckpointConfig(num_to_keep) of them
#   since the last one, whatever this says. The study's num_to_keep=1 (trials in process report their resume
#   checkpoint every epoch) makes that every step: 2,070 snapshots for 1,000 trials, 41 % of the driver's wall time
#   and 55 % of its CPU samples, each rewriting every trial's state (22 KB a trial) and pickling the Optuna study.
#   num_to_keep=2 (--num-to-keep 2; restore stays consistent, Tune's rule), 1,000 trials: 106 snapshots (5.5 % of
#   the time), 272 trials/min past the start-up instead of 155, the study in 5.9 min instead of 9.0; the cost is a
#   second kept resume checkpoint per trial (Tune keeps num_to_keep of every trial, ended ones too).
# - reuse_actors: the study's own (on for trials in process). Off (--workers-per-trial 2, a new actor per trial):
#   27 trials/min past the start-up instead of 123-182.
# - TUNE_RESULT_BUFFER_LENGTH: ASHA does not take buffered results; Tune forces 1 whatever is set.
# - RAY_memory_monitor_refresh_ms / RAY_memory_usage_threshold: the defaults (250 ms, 0.95 of the node) kill a
#   worker only near the end of the machine's memory: 64 actors took 16.8 GB here and left >= 10 GB free.
# The tracking server's (the study's server is the user's, cluster/mlflow_server.sh on a cluster): its SQLAlchemy
# pool is 5 + 10 connections, but a uvicorn worker serves 40 requests at once (anyio's threads). Under 64 trials
# starting together (200 trials, default pool, 2026-12-03) requests waited 30 s for a connection and MLflow answered
# 400 BAD_REQUEST ("QueuePool limit of size 5 overflow 10 reached"), which artsweep's retry rule takes as a refusal
# for good (trainables.tracking.retry.refused): 9 trials failed opening their run (Tune ran them again, leaving 5
# RUNNING runs the close marked KILLED), and epochs of 3 runs never reached MLflow (their outbox journal stuck
# behind a spooled artifact that the study's send_pending had already sent and deleted). With a connection per
# thread a busy SQLite store answers 503 "database is locked", which is retried; 300 and 1,000 trials then lost
# nothing. --default-pool runs without it.
SERVER_KNOBS = {"MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "40", "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "10"}
EXPERIMENT = "scale-bench"
STUDY_MIN = 20.0  # the bound: the whole study (Ray's start to its record closed) within 20 minutes
RSS_MB_PER_TRIAL = 0.25  # bound on the driver's RSS growth per trial ended (from 100 to 1,000 ended: 225 MB)
LEADERBOARD_S = 5.0  # the bound on the leaderboard command beyond its imports
SURROGATE_TAG = "surrogate"  # "true" on every trial run of this benchmark: no model was trained
MILESTONES = (100, 500, 1000)  # trials ended when the driver's RSS is sampled
SNAPSHOTS: list[float] = []  # seconds of each TuneController.save_to_dir (Tune's experiment-state snapshot)


# ----------------------------------------------------------------------------------------------- the surrogate
def _position(dist, value) -> float:
    """Where `value` sits in its distribution, 0..1 (log scale where the distribution is; a choice by its index)."""
    if isinstance(dist, CategoricalDistribution):
        return dist.choices.index(value) / max(1, len(dist.choices) - 1)
    if isinstance(dist, (FloatDistribution, IntDistribution)):
        lo, hi, v = (math.log(x) for x in (dist.low, dist.high, value)) if dist.log else (dist.low, dist.high, value)
        return (v - lo) / (hi - lo) if hi > lo else 0.5
    return 0.5


def surrogate(config: dict, distributions: dict, epoch: int, max_epochs: int, seed: int) -> dict[str, float]:
    """One epoch's metrics, a deterministic function of the config: each knob costs a quadratic in its position
    away from an optimum of its own (lr 4x more than the others), the score saturates over the epochs (faster with
    a higher lr) and carries noise seeded by the config, the seed and the epoch. val_macro_f1 0..~0.62."""
    peak, lr_at = 0.62, 0.5
    for name, dist in distributions.items():
        at, best = _position(dist, config[name]), 0.25 + 0.5 * zlib.crc32(name.encode()) / 2**32
        lr_at = at if name.rsplit(".", 1)[-1] == "lr" else lr_at
        peak -= (0.25 if name.rsplit(".", 1)[-1] == "lr" else 0.04) * (at - best) ** 2
    tau = 0.8 + 1.5 * (1.0 - lr_at)  # epochs to reach 63 % of the peak
    key = zlib.crc32(json.dumps(config, sort_keys=True, default=str).encode()) ^ (seed * 7919 + epoch)
    f1 = min(1.0, max(0.0, peak * (1 - math.exp(-(epoch + 0.3) / tau)) + random.Random(key).gauss(0.0, 0.01)))
    lr = float(next((v for k, v in config.items() if k.rsplit(".", 1)[-1] == "lr"), 1e-3))
    return {
        OBJECTIVE_KEY: f1,
        "val_accuracy": min(1.0, f1 + 0.06),
        "val_weighted_f1": min(1.0, f1 + 0.03),
        "val_loss": 3.3 * (1.0 - f1) + 0.2,
        "train_loss": 2.8 * (1.0 - f1) + 0.1,
        "scheduled_lr": lr * 0.5 * (1 + math.cos(math.pi * epoch / max_epochs)),
        "train_images_per_s": 900.0,
        "time_train_s": 0.0,
        "time_val_s": 0.0,
    }


def surrogate_trainable(epoch_s: float, checkpoint_kib: int, in_process: bool):
    """The function Tune runs per trial in place of trainables.trial.driver.run_trial (same signature).
    `in_process`: the study trains its trials in their Tune actor, whose reports carry the resume checkpoint to
    Tune; else (a worker group) Tune gets the metrics only, as from Train's TuneReportCallback."""

    def run_trial(config: dict, settings: RunSettings, space) -> None:
        cfg = space.trial_config(config)  # rejects keys a search space made up, as the driver does
        ctx = ray.tune.get_context()
        searched, what = cfg.params(), {"family": cfg.family.name, cfg.prefix + "arch": cfg.arch}
        run_id, finished = mlflow_runs.open_trial_run(
            settings.mlflow_uri,
            settings.mlflow_experiment_id,
            settings.parent_run_id,
            ctx.get_trial_id(),
            ctx.get_trial_name(),
            {**{k: v for k, v in what.items() if k not in searched}, **searched},  # driver.run_params
            {
                mlflow_runs.NOTE_TAG: f"**{cfg.family.name} / {cfg.arch}** running (surrogate: no training)",
                mlflow_runs.PHASE_TAG: "recipe" if space.is_recipe(config) else "search",
                SURROGATE_TAG: "true",
            },
            settings.dataset,
        )
        if finished is not None:  # ended before a resume: Tune gets its record, as the driver does
            for values in finished:
                ray.tune.report({**values, RUN_ID_KEY: run_id, REPLAYED_KEY: True})
            return
        epochs(config, settings, space, run_id, epoch_s, checkpoint_kib, in_process)

    return run_trial


def epochs(config: dict, s: RunSettings, space, run_id: str, epoch_s: float, kib: int, in_process: bool) -> None:
    """Each epoch: sleep (the "training"), then report it as the study does (report_epoch), with a resume checkpoint
    (and, at a new best, model.pt: the recorder logs it as the run's best checkpoint)."""
    recorder = EpochRecorder(s.mlflow_uri, run_id, s.spool, s.max_epochs)
    distributions, best = space.distributions(), float("nan")
    for epoch in range(1, s.max_epochs + 1):
        time.sleep(epoch_s)
        values = surrogate(config, distributions, epoch, s.max_epochs, s.seed)
        improved = OBJECTIVE.better(values[OBJECTIVE_KEY], best)
        best = values[OBJECTIVE_KEY] if improved else best
        report = {**values, BEST_KEY: best, "epoch": epoch, RUN_ID_KEY: run_id, IMPROVED_KEY: improved}
        if epoch == 1:  # the first report's tags, as a worker group's first report carries its data tags
            report[TAGS_KEY] = {"node_id": ray.get_runtime_context().get_node_id(), SURROGATE_TAG: "true"}
        with tempfile.TemporaryDirectory(prefix="artsweep-scale-") as folder:
            (Path(folder) / "resume.bin").write_bytes(os.urandom(kib * 1024))
            if improved:
                (Path(folder) / FILENAME).write_bytes(os.urandom(kib * 1024))
            report_epoch(recorder, report, tune.Checkpoint.from_directory(folder), in_process)


def report_epoch(recorder: EpochRecorder, report: dict, checkpoint, in_process: bool) -> None:
    """In process, what trainables.trial.driver.InProcessReports does (not imported here: it brings torch): the
    recorder's keys come out, Tune gets the metrics and the resume checkpoint, and then, also when Tune stopped the
    trial at this report (SystemExit), the recorder logs the epoch. A worker group's report, as Train's controller
    calls its callbacks: EpochRecorder logs it, then Tune gets the metrics (TuneReportCallback).
    In process, the log after the report can be lost: when Tune stops an actor instead of reusing it (the search is
    over), FunctionTrainable.cleanup does not wait for the thread, and the process exits (its temporary folders with
    it) under the log (1,000 trials, num_to_keep 2: 3 epochs Tune saw never reached MLflow, 1 best model.pt missing)."""
    if not in_process:
        recorder.after_report(None, [report], checkpoint)
        ray.tune.report(report)
        return
    taken = recorder.take([report])
    try:
        ray.tune.report(report, checkpoint=checkpoint)
    finally:
        recorder.log(*taken, checkpoint)


# ----------------------------------------------------------------------------------------------- what is measured
def _timed_save(original):
    def save_to_dir(self):
        t0 = time.perf_counter()
        original(self)
        SNAPSHOTS.append(time.perf_counter() - t0)

    return save_to_dir


def _mb(n: int) -> int:
    return round(n / 2**20)


def memory() -> dict:
    """The driver's RSS and the memory of the processes under it: the trial actors, Ray's idle workers, the rest (Ray's
    own processes and agents, the MLflow server)."""
    import psutil

    me = psutil.Process()
    actors, idle, other = [], 0, 0
    for p in me.children(recursive=True):
        try:
            title, rss = (p.cmdline() or [""])[0], p.memory_info().rss
        except psutil.Error:
            continue
        if title.startswith("ray::IDLE"):
            idle += 1
        elif title.startswith("ray::ImplicitFunc"):  # a Tune function trainable's actor: a trial
            actors.append(rss)
        else:
            other += rss
    return {
        "driver_mb": _mb(me.memory_info().rss),
        "actors": len(actors),
        "actor_mb_median": _mb(statistics.median(actors)) if actors else 0,
        "actors_mb": _mb(sum(actors)),
        "idle_workers": idle,
        "others_mb": _mb(other),
        "available_gb": round(psutil.virtual_memory().available / 2**30, 1),
    }


class Meter(tune.Callback):
    """This benchmark's view, beside the study's callbacks: trials ended, the driver's RSS as 100 / 500 / 1,000
    ended, a progress line every EVERY_S. Plain data only (Tune pickles its callbacks with the Tuner)."""

    EVERY_S = 20.0

    def __init__(self, total: int, fd: int):
        self.total, self.fd, self.t0 = total, fd, time.monotonic()
        self.milestones = sorted({m for m in MILESTONES if m <= total} | {max(1, total // 10), total})
        self.ended, self.running, self.retried, self.rss, self.ended_at, self.peak = 0, 0, 0, {}, {}, {}
        self._next = 0.0

    def say(self, text: str) -> None:
        os.write(self.fd, f"[{time.monotonic() - self.t0:6.0f}s] {text}\n".encode())

    def on_trial_start(self, iteration, trials, trial, **info):
        self.running += 1

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._ended()

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.retried, self.running = self.retried + 1, self.running - 1  # failed; Tune starts it again

    def on_trial_error(self, iteration, trials, trial, **info):
        self._ended()

    def _ended(self) -> None:
        self.ended, self.running = self.ended + 1, self.running - 1
        if self.ended in self.milestones:
            m = memory()
            self.rss[self.ended], self.ended_at[self.ended] = m["driver_mb"], time.monotonic() - self.t0
            self.say(f"{self.ended} trials ended: driver RSS {m['driver_mb']} MB")

    def on_step_begin(self, iteration, trials, **info):
        if time.monotonic() < self._next:
            return
        self._next = time.monotonic() + self.EVERY_S
        m = memory()
        for key in ("driver_mb", "actors", "actors_mb", "actor_mb_median", "others_mb"):
            self.peak[key] = max(self.peak.get(key, 0), m[key])
        self.peak["available_gb_min"] = min(self.peak.get("available_gb_min", 1e9), m["available_gb"])
        minutes = (time.monotonic() - self.t0) / 60
        self.say(
            f"surrogate trials: {self.ended}/{self.total} ended, {self.running} running, "
            f"{self.ended / max(minutes, 1e-9):.1f} trials/min; driver {m['driver_mb']} MB; {m['actors']} trial actors "
            f"{m['actor_mb_median']} MB each ({m['actors_mb']} MB), {m['idle_workers']} idle workers, Ray + MLflow "
            f"{m['others_mb']} MB; {m['available_gb']} GB available; {len(SNAPSHOTS)} snapshots"
        )


# ----------------------------------------------------------------------------------------------- the study
def start_study(uri: str, a, work: Path) -> tuple[RunSettings, object, ResourcePlan]:
    """Settings, space and plan of a study as sweep.study.Study.start makes them (no data: no split, no cache)."""
    space = search_space(a.family)
    s = RunSettings(
        family=a.family,
        data_dir="(none: surrogate trainable)",
        num_samples=a.trials,
        max_epochs=a.epochs,
        workers_per_trial=a.workers_per_trial,
        experiment=EXPERIMENT,
        mlflow_uri=uri,
        storage=str(work / "ray_results"),
        seed=a.seed,
        classes=("a", "b"),
    )
    exp_id, parent = mlflow_runs.setup_study(
        uri,
        EXPERIMENT,
        {"family": a.family, "num_samples": a.trials, "max_epochs": a.epochs, "surrogate": True},
        artifact_root=None,
        description=f"benchmarks/scale.py: {a.trials} SURROGATE trials (no training)",
        view_params=study.view_params(space),
    )
    mlflow_runs.claim_study(uri, parent)
    # each trial reserves a share of the real CPUs such that --concurrency fit (the study's driver share, 0.01 CPU,
    # or an in-process trial's worker CPUs): the trials of a whole cluster at once, on this machine
    share = round(0.9 * (os.cpu_count() or 1) / a.concurrency, 3)
    plan = ResourcePlan(a.concurrency, {"CPU": min(DRIVER_CPUS, share)}, cpus_per_worker=share, use_gpu=False)
    s = s.replace(
        run_name=study.run_name(EXPERIMENT, parent),
        mlflow_experiment_id=exp_id,
        parent_run_id=parent,
        cpus_per_worker=share,
    )
    mlflow_runs.log_study(uri, parent, s.to_dict(), space.to_json())
    budget.activate(budget.for_study(s, plan, study._grace(s, space), started=time.monotonic()))
    return s, space, plan


def build_tuner(s: RunSettings, space, plan: ResourcePlan, a, meter: Meter) -> tuple[tune.Tuner, dict]:
    """The study's own Tuner (sweep.study._tuner) over the surrogate, plus the Meter; and what it was set to."""
    in_process = getattr(study, "in_process", lambda s: False)(s)  # the study's mode (one worker: in process)
    with mock.patch.object(study, "run_trial", surrogate_trainable(a.epoch_s, a.checkpoint_kib, in_process)):
        tuner = study._tuner(s, space, plan)
    internal = tuner._local_tuner  # Tuner has no public accessor for its run config
    run_config, tune_config = internal.get_run_config(), internal._tune_config
    run_config.callbacks.append(meter)
    if a.num_to_keep is not None:  # a knob to examine: 0 = keep every checkpoint (no forced snapshots)
        run_config.checkpoint_config = tune.CheckpointConfig(num_to_keep=a.num_to_keep or None)
    return tuner, {
        "in_process": in_process,
        "reuse_actors": tune_config.reuse_actors,
        "max_concurrent_trials": tune_config.max_concurrent_trials,
        "callbacks": [type(c).__name__ for c in run_config.callbacks],
        "checkpoint_num_to_keep": run_config.checkpoint_config.num_to_keep if run_config.checkpoint_config else None,
    }


def start_ray(a, knobs: dict) -> None:
    """Ray as sweep.study.start_ray starts a local one: the study's environment, with `knobs`."""
    env = {**study.RAY_ENV, **study.LOCAL_RAY_ENV, **knobs}
    os.environ.update(env)
    ray.init(
        address="local",
        num_cpus=os.cpu_count(),
        runtime_env={"env_vars": env},
        logging_level="WARNING",
        log_to_driver=True,
        include_dashboard=a.dashboard,
    )


def profiler(work: Path) -> subprocess.Popen:
    """py-spy sampling this process (the driver) until stopped: its stacks, as collapsed text."""
    cmd = ["py-spy", "record", "--pid", str(os.getpid()), "--rate", "20", "--format", "raw"]
    return subprocess.Popen([*cmd, "--output", str(work / "driver.raw"), "--nonblocking"], stdout=subprocess.DEVNULL)


def profile_top(path: Path, n: int = 15) -> list[tuple[str, float]]:
    """(function, share of the driver's non-idle samples that were in it) for the n heaviest functions inside
    Tune's event loop (TuneController.step and below; its callers are in every sample)."""
    inclusive, total = Counter(), 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        total += int(count)
        for f in {re.sub(r" \(.*?:\d+\)$", "", f) for f in stack.split(";")}:
            inclusive[f] += int(count)
    step = inclusive.get("TuneController.step", total)
    top = [(f, c) for f, c in inclusive.most_common() if c <= step][:n]
    return [(f, round(c / max(total, 1), 3)) for f, c in top]


def state_mb(storage: Path) -> dict:
    """Sizes of what a snapshot writes: Tune's experiment state (every trial's) and the searcher's (Optuna's study)."""
    return {
        kind: round(sum(f.stat().st_size for f in storage.glob(f"*/{kind}-*")) / 2**20, 1)
        for kind in ("experiment_state", "searcher-state")
    }


# ----------------------------------------------------------------------------------------------- after the study
def server_requests(log: Path, start: int, end: int) -> Counter:
    """Requests the server logged between two offsets of its log: "write", "read" and "error" (status >= 400)."""
    with log.open("rb") as f:
        f.seek(start)
        text = f.read(end - start).decode(errors="replace")
    out = Counter()
    for method, path, status in re.findall(r'"(GET|POST|PUT|DELETE|PATCH) (\S+) HTTP/[\d.]+" (\d+)', text):
        out["write" if method != "GET" and not path.split("?")[0].endswith("/search") else "read"] += 1
        out["error"] += int(status) >= 400
    return out


def check_record(db: Path, parent: str, tune_epochs: dict[str, int]) -> dict:
    """The MLflow record against what Tune saw: a child run per trial, all FINISHED, each holding exactly the
    epochs Tune got (val_macro_f1 at steps 1..n)."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=60)) as conn:
        runs = dict(
            conn.execute(
                "SELECT r.run_uuid, r.status FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                "WHERE t.key = 'mlflow.parentRunId' AND t.value = ?",
                (parent,),
            ).fetchall()
        )
        steps: dict[str, list[int]] = {}
        for run_id, step in conn.execute(
            "SELECT m.run_uuid, m.step FROM metrics m JOIN tags t ON t.run_uuid = m.run_uuid "
            "WHERE t.key = 'mlflow.parentRunId' AND t.value = ? AND m.key = ? ORDER BY m.step",
            (parent, OBJECTIVE_KEY),
        ):
            steps.setdefault(run_id, []).append(step)
        rows = conn.execute(
            "SELECT count(*) FROM metrics m JOIN tags t ON t.run_uuid = m.run_uuid "
            "WHERE t.key = 'mlflow.parentRunId' AND t.value = ?",
            (parent,),
        ).fetchone()[0]
    wrong = [r for r, n in tune_epochs.items() if steps.get(r, []) != list(range(1, n + 1))]
    return {
        "child_runs": len(runs),
        "runs_of_trials": len(set(runs) & set(tune_epochs)),
        "not_finished": sum(status != "FINISHED" for status in runs.values()),
        "epochs_tune": sum(tune_epochs.values()),
        "epochs_mlflow": sum(len(steps.get(r, [])) for r in runs),
        "runs_epochs_differ": len(wrong),
        "metric_rows": rows,
        "ok": len(runs) == len(tune_epochs) and not wrong and all(st == "FINISHED" for st in runs.values()),
    }


def time_leaderboard(uri: str, cwd: Path, repeat: int = 2) -> tuple[float, float, int]:
    """(best seconds of the leaderboard command, best seconds of `python -c "import analysis.leaderboard"`, rows)."""
    cmd = [sys.executable, "-m", "analysis.leaderboard", "--experiment", EXPERIMENT, "--mlflow-uri", uri]
    runs, imports, out = [], [], ""
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=True).stdout
        runs.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import analysis.leaderboard"], cwd=cwd, check=True)
        imports.append(time.perf_counter() - t0)
    rows = sum(1 for line in out.splitlines() if re.match(r"\s*\d+\s+\S+", line))
    return min(runs), min(imports), rows


def tune_epochs(results) -> dict[str, int]:
    """{MLflow run id: epochs Tune got} of every trial, from the ResultGrid's last results."""
    out = {}
    for r in results:
        m = r.metrics or {}
        if m.get(RUN_ID_KEY):
            out[m[RUN_ID_KEY]] = int(m.get("epoch") or 0)
    return out


# ----------------------------------------------------------------------------------------------- the command
def run_study(a, work: Path, server: MlflowServer, fd: int) -> dict:
    """Start, fit and close the study; the figures of the run itself."""
    s, space, plan = start_study(server.uri, a, work)
    meter = Meter(a.trials, fd)
    tuner, setup = build_tuner(s, space, plan, a, meter)
    log, offset = server.work / "mlflow.log", (server.work / "mlflow.log").stat().st_size
    spy = profiler(work) if a.profile else None
    t0 = time.monotonic()
    meter.t0 = t0
    results, interrupted = phases.fit(tuner)
    fit_s = time.monotonic() - t0
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=120)
    requests = server_requests(log, offset, log.stat().st_size)
    study.finish_record(s, "KILLED" if interrupted else "FINISHED")  # the study's close: pending writes, parent run
    record = check_record(server.db, s.parent_run_id, tune_epochs(results))
    record.update(
        pending_runs=len(outbox.pending(Path(s.spool))), refused_writes=len(list(outbox.refusals(Path(s.spool))))
    )
    record["ok"] = record["ok"] and not record["pending_runs"] and not record["refused_writes"]
    ended = meter.ended
    first = min(meter.ended_at, default=None)
    steady = (
        (ended - first) / ((meter.ended_at[ended] - meter.ended_at[first]) / 60)
        if first and ended in meter.ended_at and ended > first
        else None
    )
    return {
        "setup": setup,
        "trials_ended": ended,
        "trials_errored": results.num_errors,
        "trial_attempts_failed": meter.retried,
        "fit_s": round(fit_s, 1),
        "trials_per_min": round(ended / (fit_s / 60), 1),
        "trials_per_min_after_first": round(steady, 1) if steady else None,
        "driver_rss_mb": {str(k): v for k, v in meter.rss.items()},
        "peak_memory": meter.peak,
        "snapshots": {
            "count": len(SNAPSHOTS),
            "mean_s": round(statistics.mean(SNAPSHOTS), 3) if SNAPSHOTS else None,
            "max_s": round(max(SNAPSHOTS), 3) if SNAPSHOTS else None,
            "last_s": round(SNAPSHOTS[-1], 3) if SNAPSHOTS else None,
            "total_s": round(sum(SNAPSHOTS), 1),
            "share_of_fit": round(sum(SNAPSHOTS) / fit_s, 3),
            "size_mb_at_end": state_mb(Path(s.storage)),
        },
        # resume checkpoints Tune still holds at the end (num_to_keep per trial, ended trials' too): x a real
        # resume checkpoint's size (model + optimizer state) is the storage an in-process study leaves behind
        "tune_checkpoints_kept": sum(1 for _ in Path(s.storage).rglob("resume.bin")),
        "mlflow_requests": dict(requests),
        "mlflow_writes_per_s": round(requests["write"] / fit_s, 1),
        "mlflow_requests_per_s": round((requests["write"] + requests["read"]) / fit_s, 1),
        "record": record,
        "profile": profile_top(work / "driver.raw") if a.profile else None,
        "_parent": s.parent_run_id,
    }


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=1000, help="trials of the study (default 1000)")
    p.add_argument("--concurrency", type=int, default=64, help="trials at once (default 64: 8 GPUs x 8 packed)")
    p.add_argument("--epochs", type=int, default=4, help="epoch budget per trial, ASHA's max_t (default 4)")
    p.add_argument("--epoch-s", type=float, default=0.5, help="seconds a surrogate epoch sleeps (default 0.5)")
    p.add_argument("--checkpoint-kib", type=int, default=4, help="size of each resume checkpoint and model.pt")
    p.add_argument("--family", default="scratch", help="the family whose real search space is searched")
    p.add_argument("--workers-per-trial", type=int, default=1, help="the study's setting (1: trials in process)")
    p.add_argument("--seed", type=int, default=0, help="TPE's seed and the surrogate's noise")
    p.add_argument("--dashboard", action="store_true", help="start Ray's dashboard (tune.py does by default)")
    p.add_argument("--profile", action="store_true", help="sample the driver with py-spy; print its top functions")
    p.add_argument("--dir", type=Path, help="work folder, kept (default: a temporary one)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="a knob to examine (repeatable)")
    p.add_argument("--num-to-keep", type=int, help="override the study's CheckpointConfig(num_to_keep) (0: None)")
    p.add_argument("--default-pool", action="store_true", help="MLflow's own pool, not SERVER_KNOBS (its 400s)")
    return p.parse_args(argv)


def measure(a, knobs: dict, work: Path) -> dict:
    """The study on a server of its own, then the leaderboard command on that server."""
    terminal = os.dup(1)  # the progress lines' way out while the study sends fds 1 and 2 to ray.log
    os.write(
        terminal, f"SURROGATE trainable (no training): {a.trials} trials, {a.concurrency} at once; {work}\n".encode()
    )
    with mock.patch.dict(os.environ, {} if a.default_pool else SERVER_KNOBS):
        server = MlflowServer(work).start()
    events = (work / "events.log").open("a")
    try:
        t0 = time.monotonic()
        start_ray(a, knobs)
        CONSOLE.capture(work / "ray.log")  # Ray's output (and Tune's tables) to a file, as a study does
        CONSOLE.out, term = events, CONSOLE.out  # the study's trial lines too: the progress lines stay here
        try:
            out = run_study(a, work, server, terminal)
        finally:
            CONSOLE.out = term
            ray.shutdown()
            CONSOLE.release()
        out["study_s"] = round(time.monotonic() - t0, 1)  # Ray's start to the record closed and checked
        cli_s, import_s, rows = time_leaderboard(server.uri, work)
    finally:
        ray.shutdown()  # already down, unless the study did not start
        server.stop()
        events.close()
    out.pop("_parent")
    return {
        **out,
        "leaderboard_s": round(cli_s, 2),
        "leaderboard_import_s": round(import_s, 2),
        "leaderboard_beyond_imports_s": round(cli_s - import_s, 2),
        "leaderboard_rows": rows,
    }


def acceptance(f: dict) -> dict:
    """The issue's bounds: the study within STUDY_MIN, the driver's RSS growth from the first RSS milestone to the
    last within RSS_MB_PER_TRIAL per trial ended between them, the leaderboard within LEADERBOARD_S beyond its
    imports, the record whole."""
    rss = {int(k): v for k, v in f["driver_rss_mb"].items()}
    first, last = min(rss, default=0), max(rss, default=0)
    growth, bound = rss.get(last, 0) - rss.get(first, 0), RSS_MB_PER_TRIAL * (last - first)
    return {
        "study_min": round(f["study_s"] / 60, 1),
        "study_ok": f["study_s"] <= STUDY_MIN * 60 and f["trials_ended"] == f["trials"],
        "rss_growth_mb": growth,
        "rss_bound_mb": round(bound),
        "rss_between": [first, last],
        "rss_ok": growth <= bound,
        "leaderboard_ok": f["leaderboard_beyond_imports_s"] <= LEADERBOARD_S,
        "record_ok": f["record"]["ok"],
    }


def main(argv=None) -> int:
    a = parse(argv)
    knobs = {**KNOBS, **dict(kv.split("=", 1) for kv in a.env)}
    load = os.getloadavg()
    tune_controller.TuneController.save_to_dir = _timed_save(tune_controller.TuneController.save_to_dir)
    with tempfile.TemporaryDirectory(prefix="artsweep-scale-") as tmp:
        work = (a.dir or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        out = measure(a, knobs, work)
    f = {
        "trainable": "surrogate (no training)",
        "trials": a.trials,
        "concurrency": a.concurrency,
        "epochs": a.epochs,
        "epoch_s": a.epoch_s,
        "knobs": {**knobs, **({} if a.default_pool else SERVER_KNOBS)},
        **out,
        "load_before": [round(x, 2) for x in load],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }
    f["acceptance"] = acceptance(f)
    snaps = f["snapshots"]
    print(
        f"SURROGATE study: {f['trials_ended']} trials in {f['fit_s']:.0f} s = {f['trials_per_min']} trials/min "
        f"({f['trials_per_min_after_first']} past the start-up); driver RSS {f['driver_rss_mb']} MB at trials ended; "
        f"{snaps['count']} snapshots, {snaps['mean_s']} s each ({snaps['share_of_fit']:.0%} of the time); MLflow "
        f"{f['mlflow_writes_per_s']} writes/s; leaderboard {f['leaderboard_s']:.2f} s "
        f"({f['leaderboard_beyond_imports_s']:.2f} s beyond imports); record ok: {f['record']['ok']}"
    )
    print(json.dumps(f))
    return 0 if all(v for k, v in f["acceptance"].items() if k.endswith("_ok")) else 1


if __name__ == "__main__":
    sys.exit(main())
