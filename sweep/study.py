"""One study: its data, its MLflow parent run, Ray, and Ray Tune (OptunaSearch TPE + ASHA) over trial drivers.

study = Study.start(settings, space, source)      # prints the dataset report, starts Ray and MLflow
code = study.run()                                # fit, close the record, crown the winner, print the summary
code = Study.resume(experiment, storage, uri).run()
"""

from __future__ import annotations

import functools
import os
import re
import tempfile
import time
from pathlib import Path
from shlex import quote

import psutil
import ray
from ray import tune

from analysis.publishing import closing
from search_spaces.space import KEY_PARAMS, SearchSpace
from sweep import budget, costs, phases, preflight, summary
from sweep.callbacks import CloseTrialRuns, ReleaseTrainWorkers
from sweep.cluster import cluster_problems, node_capacity, shared_storage
from sweep.console import CONSOLE, say
from sweep.events import TrialEvents, rungs
from sweep.resources import ResourcePlan, plan_resources
from sweep.search import REDUCTION_FACTOR, LatencyStopper, search_and_scheduler
from sweep.settings import UsageError, check_tracking, space_of
from trainables import objectives
from trainables.config import RunSettings
from trainables.data import dataset
from trainables.data.report import dataset_report, plot, summary_lines
from trainables.metrics import OBJECTIVE, OBJECTIVE_KEY
from trainables.paths import cache_root, local_path
from trainables.tracking import mlflow_runs, mlflow_ui
from trainables.tracking.outbox import send_pending
from trainables.tracking.retry import retrying
from trainables.trial.driver import in_process, run_trial, trial_resources

# Ray Train polls its workers every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (default 2 s), which a report
# waits for: on small epochs that is most of the wall time. 0.25 s costs nothing measurable.
RAY_ENV = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25",
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    # MLflow's download bars, and its "View run ... at" line for every run it ends: noise
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    # MLflow 3.17's client telemetry thread removes its session id from os.environ while a request reads it: about
    # once a minute under 32 writers a log_batch failed with a KeyError (benchmarks/tracking_load.py). It also
    # phones home, which a cluster with no internet cannot and a study has no reason to.
    "MLFLOW_DISABLE_TELEMETRY": "true",
    # a trial in process that Tune stopped ends its thread at that report after logging the epoch; Tune reuses the
    # actor only if the thread ended within this many seconds (default 2), and otherwise FAILS the next trial it
    # gives that actor ("Trainable runner reuse requires reset_config() to be implemented and return True"), with
    # no retry. On a crowded node threads end slowly: benchmarks/scale.py, 300 trials, 64 at once on 2 cores
    # (2026-12-03): 5 trials failed so at 10 s, none at 60 s (and the study took 340 s against 305 s)
    "TUNE_FUNCTION_THREAD_TIMEOUT_S": "60",
    # Tune's automatic CSV/JSON/TensorBoard loggers: files nobody reads (MLflow is the record), and the driver's
    # memory grows with them per trial (ray-project/ray#64231): benchmarks/scale.py, 1,000 trials, 0.115 MB
    # per trial without them against 0.27 with, and 123 trials/min after start-up against 71
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
}
# Only on the machine's own cluster (no --address): Train's preemption watcher is one more actor, one more Python
# process, per trial, watching for node drains that a single machine never has. Measured with
# benchmarks/overhead.py (4 tiny trials, idle 2-core box, 2026-12-02): 26.9 s of start-up around each trial's
# training with it, 23.2 s without. On a cluster it stays: a drained spot node then gets its grace window.
LOCAL_RAY_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
UNDECODABLE = "dataset/undecodable.json"  # the parent run's list of images the decode cache left out
PENDING_WAIT_S = 120.0  # at the study's end, wait at most this long for writes MLflow has not taken yet


def run_name(experiment: str, parent_run_id: str) -> str:
    """The Ray run folder of a study: its experiment name (any characters) made path-safe, and its MLflow
    parent run, so two studies of one experiment never share a folder."""
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', experiment).strip('._')[:80] or 'study'}-{parent_run_id[:8]}"


def describe(s: RunSettings, num_classes: int) -> str:
    """The experiment's description in the MLflow UI (markdown): what the latest study searched, on what, for how long."""
    trials = f"{s.num_samples} trials" if s.num_samples else "as many trials as the budget allows"
    limits = [
        f"{s.time_budget_s:.0f} s" if s.time_budget_s else "",
        f"{s.gpu_hours:g} GPU-hours" if s.gpu_hours else "",
    ]
    later = (f", then its {s.confirm} best configurations x {s.confirm_seeds} new seeds" if s.confirm else "") + (
        ", then the winner's final fit on train + val" if s.final_fit else ""
    )
    return (
        f"**artsweep** study of family `{s.family}` on `{s.data_dir}`{f' by `{s.label}`' if s.label else ''} "
        f"({num_classes} classes): {trials} x <= "
        f"{s.max_epochs} epochs{later}, {s.workers_per_trial} worker(s) each; budget: "
        f"{' and '.join(x for x in limits if x) or 'none'}; {_ranked(s)}. Started {time.strftime('%Y-%m-%d %H:%M')}; "
        "every trial is a child run of the `study-...` parent run."
    )


def _ranked(s: RunSettings) -> str:
    """How the study ranks its trials, for its description."""
    budget_ms = f" within `latency_ms` <= {s.max_latency_ms:g} (slower networks stop at their first rung)"
    within = budget_ms if s.max_latency_ms else ""
    if not s.objectives:
        return f"ranked by `{OBJECTIVE_KEY}` ({OBJECTIVE.mode}){within}"
    return (
        f"Pareto search of `{s.objectives.replace(',', '` against `')}`{within}: the trials on the front are tagged "
        "`pareto=true` (the parent run's `pareto.png` draws them); crown the point you choose with "
        "`python -m analysis.registry --experiment ... --trial RUN_ID`"
    )


def ray_log(s: RunSettings) -> Path:
    """Where Ray's output goes (tune.py prints it once): ray.log in the study's run folder when storage is a
    local or shared path, else this machine's cache. Before the run folder has its name: beside it."""
    local = local_path(s.storage)
    base = Path(local) if local else cache_root() / "logs"
    return base / s.run_name / "ray.log" if s.run_name else base / f".ray-{os.getpid()}.log"


def process_start() -> float:
    """When this process started, on the time.monotonic() clock."""
    return time.monotonic() - (time.time() - psutil.Process().create_time())


def start_ray(s: RunSettings, address: str | None, dashboard: bool, verbose: bool = False) -> ResourcePlan:
    """Start or join Ray, refuse node-local stores on a multi-machine cluster, and plan concurrency. Unless
    `verbose`, Ray's output (and that of every process it starts) goes to the log file ray_log(s)."""
    address = address or os.environ.get("RAY_ADDRESS")  # joining a cluster: --address, or a Ray job's own
    env = RAY_ENV if address else {**RAY_ENV, **LOCAL_RAY_ENV}
    os.environ.update(env)
    if not verbose:
        CONSOLE.capture(ray_log(s))
    local = {} if address else {"include_dashboard": None if dashboard else False}  # joining: the cluster's
    # Otherwise a new local cluster, never one that a `ray start` on this machine left behind (Ray's own default
    # joins whatever /tmp/ray/ray_current_cluster names, even a dead head).
    ray.init(
        address=address or "local", runtime_env={"env_vars": env}, logging_level="WARNING", log_to_driver=True, **local
    )
    alive = [n for n in ray.nodes() if n["Alive"]]
    nodes = node_capacity([n["Resources"] for n in alive])
    try:
        problems = cluster_problems(alive, s.mlflow_uri, s.storage)
        if problems:
            raise UsageError(" | ".join(problems))
        preflight.workers(
            s, int(sum(n.get("CPU", 0) for n in nodes)), int(sum(n.get("GPU", 0) for n in nodes)), "the cluster"
        )
    except UsageError:
        ray.shutdown()
        CONSOLE.release()
        raise
    return plan_resources(nodes, s.workers_per_trial, s.pack)


def measure_costs(s: RunSettings, space: SearchSpace) -> dict:
    """sweep.costs.measure, before the study's record exists: a refusal (a latency budget no network meets) stops
    Ray and leaves nothing behind."""
    try:
        return costs.measure(s, space)
    except UsageError:
        ray.shutdown()
        CONSOLE.release()
        raise


def prepare_data(s: RunSettings, space: SearchSpace, source: dataset.Source) -> tuple[dataset.Splits, dict]:
    """Split once (seeded) and print the dataset report before anything starts."""
    splits = dataset.make_splits(source, dataset.VAL_FRACTION, dataset.TEST_FRACTION, s.seed)
    report = dataset_report(source, splits)
    for w in source.warnings:
        say(f"warning: {w}")
    for path, reason in source.skipped[:20]:
        say(f"skipped {path}: {reason}")
    if len(source.skipped) > 20:
        say(f"... {len(source.skipped) - 20} more skipped files: dataset/report.json in the MLflow parent run")
    say(f"data {s.data_dir}: " + "; ".join(summary_lines(report)))
    say(
        f"{s.family}: {f'{s.num_samples} trials' if s.num_samples else 'trials while the budget lasts'} "
        f"x <= {s.max_epochs} epochs, {s.image_size or 'family default'} px, "
        f"{'stand-in' if s.standins else 'real'} architectures, {weights(s, space)}"
        + "".join(f", {k}={v} fixed" for k, v in s.pins.items())
    )
    return splits, report


def report_undecodable(s: RunSettings, bad: list[dict]) -> None:
    """The images the decode cache could not read or decode (objects and Parquet rows are first opened there):
    left out of training and evaluation, named like the scan's skipped files, and logged as
    dataset/undecodable.json on the parent run."""
    for b in bad[:20]:
        say(f"left out {b['path']}: {b['reason']}")
    if len(bad) > 20:
        say(f"... {len(bad) - 20} more left out: dataset/undecodable.json in the MLflow parent run")
    if bad:  # a tracking server restarting meanwhile is waited for, as every write of the study is
        client = mlflow_runs.MlflowClient(s.mlflow_uri)
        retrying(lambda: client.log_dict(s.parent_run_id, {"undecodable": bad}, UNDECODABLE), "logging " + UNDECODABLE)


def view_params(space: SearchSpace) -> list[str]:
    """The params the saved runs view shows: what tells trials apart (a --family all study: the family first)."""
    lead = ["family"] if space.qualified else ["arch"]  # params of every trial run (trainables.trial.driver.run_params)
    return lead + [n for n in KEY_PARAMS if n in space.distributions()]


def weights(s: RunSettings, space: SearchSpace) -> str:
    """What the trials start from, as they really do (a family that has no pretrained weights starts random)."""
    loads = [f.name for f in space.families if f.pretrained and s.pretrained != "none"]
    if not loads:
        return "random init"
    where = f"from {s.weights_dir}" if s.weights_dir else "timm's"
    if len(loads) == len(space.families):
        return f"{where} pretrained weights"
    return f"{where} pretrained weights for {', '.join(loads)}, random init for the rest"


class Study:
    def __init__(self, s: RunSettings, space: SearchSpace, plan: ResourcePlan, tuner: tune.Tuner, t0: float):
        self.s, self.space, self.plan, self.tuner, self.t0 = s, space, plan, tuner, t0
        if CONSOLE.log_path is not None:  # now that the run folder has its name
            CONSOLE.move_log(ray_log(s))
            say(f"Ray's output: {CONSOLE.log_path} (tune.py --verbose shows it here)")

    @classmethod
    def start(
        cls,
        s: RunSettings,
        space: SearchSpace,
        source: dataset.Source,
        address: str | None = None,
        dashboard: bool = True,
        started: float | None = None,
        verbose: bool = False,
    ) -> "Study":
        """`started`: time.monotonic() when the study began (default: when this process started, imports
        included: a --time-budget counts from there). `verbose`: Ray's output interleaves with the study's."""
        t0 = process_start() if started is None else started
        splits, report = prepare_data(s, space, source)
        costs.refuse_before_ray(s, space, address)
        plan = start_ray(s, address, dashboard, verbose)
        serving = measure_costs(s.replace(classes=tuple(splits.classes), use_gpu=plan.use_gpu), space)
        exp_id, parent = mlflow_runs.setup_study(
            s.mlflow_uri,
            s.experiment,
            {
                "family": s.family,
                "num_samples": s.num_samples,
                "max_epochs": s.max_epochs,
                "workers_per_trial": s.workers_per_trial,
                "image_size": s.image_size,
                "data": s.data_dir,
                "label": s.label,
                "seed": s.seed,
                "smoke": s.smoke,
                "resize": s.resize_policy,
                "max_concurrent_trials": plan.max_concurrent,
                "confirm": s.confirm,
                "confirm_seeds": s.confirm_seeds,
                "final_fit": s.final_fit,
                "objectives": s.objectives or OBJECTIVE_KEY,
                "max_latency_ms": s.max_latency_ms,
            },
            artifact_root=Path.cwd() / "mlartifacts",
            description=describe(s, len(splits.classes)),
            view_params=view_params(space),
        )
        mlflow_runs.claim_study(s.mlflow_uri, parent)
        s = s.replace(
            run_name=run_name(s.experiment, parent),
            classes=tuple(splits.classes),
            mlflow_experiment_id=exp_id,
            parent_run_id=parent,
            cpus_per_worker=plan.cpus_per_worker,
            use_gpu=plan.use_gpu,
            loader_workers=plan.loader_workers,
            gpu_gib=plan.gpu_gib,
            cache_storage=s.storage if shared_storage(s.storage) else "",
            costs=serving,  # in the record: --resume and every trial get the same figures
        )
        with tempfile.TemporaryDirectory() as tmp:  # every trial fetches the split from the parent run: any node can
            manifest = dataset.write_manifest(splits, Path(tmp) / "splits.csv")
            mlflow_runs.log_dataset(s.mlflow_uri, parent, manifest, report, plot(report, Path(tmp)))
            s = s.replace(dataset=mlflow_ui.dataset_input(manifest, s.data_dir))
            mlflow_ui.log_input(mlflow_runs.MlflowClient(s.mlflow_uri), parent, s.dataset, "train/val/test")
        mlflow_runs.log_study(s.mlflow_uri, parent, s.to_dict(), space.to_json())  # what --resume and analysis read
        if s.image_size:  # build the shared decode cache here, with progress, before any trial waits on it
            from trainables.data import cache

            _, meta, built = cache.open_or_build(
                splits.paths, s.image_size, s.resize_policy, storage=s.cache_storage or None, versions=splits.versions
            )
            how = "built" if built else "downloaded" if meta.get("source") == "downloaded" else "reused"
            say(f"decode cache {how} ({meta['n']} images, {meta['side']} px, {len(meta['bad'])} undecodable)")
            report_undecodable(s, meta["bad"])
        say(
            f"{plan.max_concurrent} trial(s) at a time, {s.workers_per_trial} worker(s) each "
            f"({'1 GPU' if plan.use_gpu else f'{plan.cpus_per_worker} CPU'} per worker); MLflow run {parent}"
        )
        budget.activate(budget.for_study(s, plan, _grace(s, space), started=t0))
        return cls(s, space, plan, _tuner(s, space, plan), t0)

    @classmethod
    def resume(
        cls,
        experiment: str,
        storage: str | None,
        uri: str,
        address: str | None = None,
        dashboard: bool = True,
        started: float | None = None,
        verbose: bool = False,
    ) -> "Study":
        """Continue the latest study of `experiment` where Tune's saved state left it: finished trials are
        kept, interrupted or errored ones start again, the restored Optuna searcher proposes the rest;
        all of it lands in the same MLflow parent run. `storage`: where the study's folder is now (default:
        where it was written)."""
        check_tracking(uri, experiment)
        try:
            s = RunSettings.from_dict(mlflow_runs.read_settings(uri, experiment))
        except LookupError as e:
            raise UsageError(f"--resume: {e}") from None
        s = s.replace(storage=storage or s.storage)
        live = mlflow_runs.live_driver(mlflow_runs.MlflowClient(uri).get_run(s.parent_run_id))
        if live:
            raise UsageError(
                f"--resume: study {experiment!r} is still running ({live}); two drivers must not run "
                "one study: stop it first (Ctrl-C or `ray job stop`)"
            )
        path = s.run_path
        if not tune.Tuner.can_restore(path):
            raise UsageError(
                f"--resume: no saved study state at {path}; pass the --experiment and --storage of the "
                "study to continue (tune.py prints them when a study stops)"
            )
        t0 = process_start() if started is None else started
        plan = start_ray(s, address, dashboard, verbose)
        mlflow_runs.reopen_study(uri, s.parent_run_id)
        say(f"resuming study {path} (MLflow run {s.parent_run_id})")
        space = space_of(s)
        budget.activate(
            budget.for_study(
                s,
                plan,
                _grace(s, space),
                started=t0,
                spent=mlflow_runs.MlflowClient(uri).get_run(s.parent_run_id).data.metrics,
            )
        )  # the spend so far: a resumed study continues its budget
        tuner = tune.Tuner.restore(
            path, trainable=_trainable(s, space, plan), resume_unfinished=True, restart_errored=True
        )
        return cls(s, space, plan, tuner, t0)

    def run(self) -> int:
        """Fit, then end the MLflow parent run however the study ended. Ctrl-C (or `ray job stop`) makes Tune
        save its state and return early: the study is marked KILLED and can be continued with --resume."""
        s = self.s
        status, done, phase = "FAILED", 0, "the search"
        try:
            results, interrupted = phases.fit(self.tuner)
            done = results.num_terminated + results.num_errors
            b = budget.active()
            ran_out = b is not None and b.limited and b.exhausted()  # a budget that ran out ends a study
            ended = ran_out or (s.num_samples and done >= s.num_samples)
            status = "FINISHED" if ended and not interrupted else "KILLED"
            if status == "FINISHED" and (s.confirm or s.final_fit):
                phase = "the confirm or final phase"
                status = phases.after_search(s, self.space, self.plan, _trainable(s, self.space, self.plan), results)
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            ray.shutdown()
            CONSOLE.release()
            finish_record(s, status)
            if budget.active():
                budget.remember(s, self.plan, budget.active())  # the next study of this shape starts with its costs
            if status == "KILLED":
                say(
                    f"study stopped in {phase}, after {done} of {s.num_samples or 'its budget of'} search trials; "
                    "continue it with:\n"
                    f"  python tune.py --resume --experiment {quote(s.experiment)} --storage {quote(s.storage)} "
                    f"--mlflow-uri {quote(s.mlflow_uri)}"
                )
        wall_s = time.monotonic() - self.t0
        return summary.print_summary(s, closing.close(s), wall_s)  # score, crown and register; then say so


def finish_record(s: RunSettings, status: str) -> None:
    """Send what MLflow did not take during the study (bounded wait), then end the parent run and any child run
    still open (KILLED). What cannot be sent stays on disk, and the study says where and how to send it."""
    left = send_pending(s.mlflow_uri, Path(s.spool), PENDING_WAIT_S)
    spend = budget.study_spend(budget.active(), s) if budget.active() else {}

    def close() -> list[str]:
        mlflow_runs.log_metrics(s.mlflow_uri, s.parent_run_id, spend)  # what the study cost (--resume goes on from it)
        return mlflow_runs.close_study(s.mlflow_uri, s.mlflow_experiment_id, s.parent_run_id, status)

    try:
        killed = retrying(close, "ending the study's MLflow runs", timeout_s=PENDING_WAIT_S if not left else 0)
        if killed:
            say(f"marked {len(killed)} unfinished trial run(s) KILLED")
    except Exception as e:  # noqa: BLE001 - the trials are done; say what the record lacks
        say(
            f"warning: could not end the study's MLflow runs ({type(e).__name__}); "
            "`python -m analysis.sync --end-study FINISHED` ends them when the server answers"
        )
    if left:
        say(
            f"warning: MLflow has not taken the writes of {len(left)} trial run(s); they are kept in {s.spool}. "
            f"Send them when the server answers: python -m analysis.sync --experiment {quote(s.experiment)} "
            f"--mlflow-uri {quote(s.mlflow_uri)}"
        )


def _grace(s: RunSettings, space: SearchSpace) -> int:
    """Epochs before ASHA's first decision: the least of the families' own (and at most the epoch budget)."""
    return min(min(f.grace_epochs for f in space.families), s.max_epochs)


def _trainable(s: RunSettings, space: SearchSpace, plan: ResourcePlan):
    """The trial driver with the study's settings and space bound, and its resources: its one worker's when it
    trains in process, else the tiny reservation of a driver that waits on its worker group."""
    return tune.with_resources(
        tune.with_parameters(run_trial, settings=s, space=space), trial_resources(s, space, plan.driver)
    )


def _stopper(s: RunSettings, space: SearchSpace) -> tune.Stopper:
    """The budget's stopper, and with a latency budget the one that stops infeasible trials at their first rung."""
    if not s.max_latency_ms:
        return budget.BudgetStopper()
    return tune.stopper.CombinedStopper(budget.BudgetStopper(), LatencyStopper(s.max_latency_ms, _grace(s, space)))


def _tuner(s: RunSettings, space: SearchSpace, plan: ResourcePlan) -> tune.Tuner:
    goals = objectives.parse(s.objectives)
    milestones = rungs(s.max_epochs, _grace(s, space), REDUCTION_FACTOR) if s.early_stopping else []
    search, asha = search_and_scheduler(
        space,
        seed=s.seed,
        num_samples=s.num_samples,
        max_t=s.max_epochs,
        grace=_grace(s, space),
        first_points=space.first_points(s.recipes, s.starts),
        early_stopping=s.early_stopping,
        record=functools.partial(
            mlflow_runs.objective_histories, s.mlflow_uri, s.mlflow_experiment_id, s.parent_run_id, goals.keys
        ),
        objectives=goals,
        max_latency_ms=s.max_latency_ms,
    )
    return tune.Tuner(
        _trainable(s, space, plan),
        tune_config=tune.TuneConfig(
            metric=OBJECTIVE_KEY,
            mode=OBJECTIVE.mode,
            search_alg=search,
            scheduler=asha,
            num_samples=s.num_samples or -1,  # -1: until the budget ends it
            max_concurrent_trials=plan.max_concurrent,
            # a trial in process: the next one starts in the same Tune actor, torch and the data path imported
            reuse_actors=in_process(s),
        ),
        run_config=tune.RunConfig(
            name=s.run_name,
            storage_path=s.storage,
            stop=_stopper(s, space),
            # saved with Tune's state: a resumed study gets them back
            callbacks=[
                ReleaseTrainWorkers(distributed=not in_process(s)),
                CloseTrialRuns(s, space, milestones),
                TrialEvents(s.num_samples, s.max_epochs, milestones),
            ],
            verbose=1,
            **phases.trial_keeping(s),
        ),
    )
