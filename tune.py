"""artsweep: search hyper-parameters and train the best image classifier the budget allows.

  python tune.py                                     # demo: scratch CNNs on the built-in dataset
  python tune.py --family scratch --data /data/wikiart --num-samples 32 --max-epochs 15
  python tune.py --smoke                             # a tiny study to check the wiring (about a minute)
  mlflow ui --backend-store-uri sqlite:///mlflow.db  # browse every trial afterwards

Ray Tune proposes configurations with Optuna (TPE) and stops poor trials early with ASHA on
val_macro_f1; each trial is a Ray Train DDP run; MLflow records every trial, stopped ones included.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from trainables.metrics import OBJECTIVE

SMOKE = dict(num_samples=4, max_epochs=2, image_size=32, max_train_images=256)   # --smoke defaults
DEMO = dict(num_samples=8, max_epochs=5, builtin_image_size=32)                  # plain defaults
# Ray Train polls its workers every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (default 2 s), which a report
# waits for: on small epochs that is most of the wall time. 0.25 s costs nothing measurable.
RAY_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25", "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit code 2, like every other input error here
        self.exit(2, f"tune.py: error: {message} (see python tune.py --help)\n")


def parse_args(argv=None) -> argparse.Namespace:
    from search_spaces import ALL, FAMILIES
    p = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", default="scratch", help=f"model family to search: {', '.join(FAMILIES)}, or {ALL} to let every family compete "
                   "in one study (default: scratch)")
    p.add_argument("--arch", default=None, help="pin one architecture of the family instead of searching it")
    p.add_argument("--data", default=None, help="folder with one sub-folder of images per class "
                   "(default: the built-in generated 'painting styles' set, written to ~/.cache/artsweep once)")
    p.add_argument("--num-samples", type=int, default=None, help=f"trials to run (default {DEMO['num_samples']}, smoke {SMOKE['num_samples']})")
    p.add_argument("--max-epochs", type=int, default=None, help=f"epoch budget per trial = ASHA max_t (default {DEMO['max_epochs']}, smoke {SMOKE['max_epochs']})")
    p.add_argument("--workers-per-trial", type=int, default=1, help="DDP workers per trial: GPUs on a cluster, CPU processes (gloo) otherwise (default 1)")
    p.add_argument("--image-size", type=int, default=None, help="input side in px (default: the family's; 32 on the built-in set)")
    p.add_argument("--experiment", default=None, help="MLflow experiment name, also the Ray run name (default artsweep-FAMILY)")
    p.add_argument("--mlflow-uri", default=None, help="MLflow tracking URI (default: sqlite:///./mlflow.db; a server: http://host:5000)")
    p.add_argument("--storage", default=None, help="Ray results and checkpoints folder or URI (default ./ray_results)")
    p.add_argument("--seed", type=int, default=0, help="seeds the split, the sampler, model init and TPE (default 0)")
    p.add_argument("--address", default=None, help="join a running Ray cluster ('auto' or host:port) instead of starting one")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"], help="mixed precision (default auto: bf16 where supported, fp16 on older GPUs)")
    p.add_argument("--pretrained", default=None, choices=["timm", "none"], help="timm: start from pretrained "
                   "weights (downloaded, from the HF cache, or from --weights-dir); none: random init (default timm; "
                   "none with --smoke)")
    p.add_argument("--weights-dir", default=None, help="offline weights: DIR/<timm name>.safetensors (or .pth/.bin) per model")
    p.add_argument("--standins", action="store_true", help="search each family's CPU-sized stand-in architectures "
                   "(timm test models) instead of the real ones; implied by --smoke; logged as the arch")
    p.add_argument("--resize", default="crop", choices=["crop", "letterbox"], help="resize policy: aspect-preserving "
                   "resize + centre crop (default) or letterbox padding; the decode cache keeps one copy per policy")
    p.add_argument("--resume", action="store_true", help="continue the stopped study of --experiment (same "
                   "--storage and --mlflow-uri): finished trials stay, interrupted ones start again, the rest of "
                   "its --num-samples run, all in the same MLflow parent run; other flags are taken from the study")
    p.add_argument("--no-dashboard", action="store_true", help="don't start Ray's dashboard (saves memory and CPU on "
                   "small machines; artsweep still frees the workers of trials ASHA stops)")
    p.add_argument("--smoke", action="store_true", help="tiny budget for a quick check: 4 trials, 2 epochs, 32 px, 256 images/epoch, CPU-sized "
                   "stand-in architectures, no pretrained weights (explicit flags win)")
    return p.parse_args(argv)


def _fail(message: str) -> None:
    sys.stderr.write(f"tune.py: error: {message}\n")
    raise SystemExit(2)


def resolve(a: argparse.Namespace):
    """Validate everything that can be checked before Ray starts; returns (family, data_dir, budget)."""
    from search_spaces import ALL, FAMILIES, arch_choices, get_family
    from trainables.pretrained import WeightsError, weight_file
    from trainables import data
    from trainables.builtin_dataset import ensure_builtin_dataset
    a.standins = a.standins or a.smoke
    a.pretrained = a.pretrained or ("none" if a.smoke else "timm")
    try:
        families = list(FAMILIES.values()) if a.family == ALL else [get_family(a.family)]
    except ValueError as e:
        _fail(str(e))
    if a.arch is not None:
        if a.family == ALL:
            _fail("--arch pins an architecture of one --family; it cannot be used with --family all")
        known = {**families[0].ARCHS, **families[0].STANDINS}
        if a.arch not in known:
            _fail(f"--arch {a.arch!r} is not in family {a.family!r}: {', '.join(known)}")
    if a.pretrained == "timm" and a.weights_dir:  # check the offline files now, not in every trial
        for fam in (f for f in families if f.PRETRAINED):
            for arch, name in arch_choices(fam, a.standins).items():
                if a.arch in (None, arch):
                    try:
                        weight_file(a.weights_dir, name)
                    except WeightsError as e:
                        _fail(str(e))
    mode = SMOKE if a.smoke else DEMO
    budget = {"num_samples": a.num_samples or mode["num_samples"], "max_epochs": a.max_epochs or mode["max_epochs"],
              "workers_per_trial": a.workers_per_trial}
    for flag in ("num_samples", "max_epochs", "workers_per_trial", "image_size"):
        value = getattr(a, flag)
        if value is not None and value <= 0:
            _fail(f"--{flag.replace('_', '-')} must be a positive integer, got {value}")
    data_dir = Path(a.data).expanduser().resolve() if a.data else ensure_builtin_dataset()
    try:
        source = data.scan(data_dir)
    except data.DataError as e:
        _fail(str(e))
    # 0 = each family's own default, so `--family all` gives every family its usual input size
    budget["image_size"] = a.image_size or (SMOKE["image_size"] if a.smoke else
                                            DEMO["builtin_image_size"] if a.data is None else 0)
    return data_dir, source, budget


def describe_data(a: argparse.Namespace, data_dir: Path, source, budget: dict):
    """Split once (seeded) and print the dataset report before anything starts."""
    from trainables import data
    from trainables.report import dataset_report, summary_lines
    splits = data.make_splits(source, data.VAL_FRACTION, data.TEST_FRACTION, a.seed)
    report = dataset_report(source, splits)
    for w in source.warnings:
        print(f"artsweep: warning: {w}")
    for path, reason in source.skipped[:20]:
        print(f"artsweep: skipped {path}: {reason}")
    if len(source.skipped) > 20:
        print(f"artsweep: ... {len(source.skipped) - 20} more skipped files: dataset/report.json in the MLflow parent run")
    print(f"artsweep: data {data_dir}: " + "; ".join(summary_lines(report)))
    print(f"artsweep: {a.family}: {budget['num_samples']} trials x <= {budget['max_epochs']} epochs, "
          f"{budget['image_size'] or 'family default'} px, {'stand-in' if a.standins else 'real'} architectures, "
          f"pretrained={a.pretrained}", flush=True)
    return splits, report


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.resume:
        return resume(a)
    data_dir, source, budget = resolve(a)
    from trainables import tracking
    workdir = Path.cwd()
    uri = a.mlflow_uri or tracking.default_uri(workdir)
    try:
        tracking.check_reachable(uri)
    except ConnectionError as e:
        _fail(str(e))
    storage = a.storage or str(workdir / "ray_results")
    experiment = a.experiment or f"artsweep-{a.family}"
    splits, report = describe_data(a, data_dir, source, budget)

    from trainables.config import RunSettings
    from trainables.study import build_tuner
    os.environ.update(RAY_ENV)
    t0 = time.perf_counter()
    plan = start_ray(a, uri, storage, budget["workers_per_trial"])
    exp_id, parent = tracking.setup_study(uri, experiment, {**budget, "family": a.family, "arch": a.arch or "searched",
                                                            "data": str(data_dir), "seed": a.seed, "smoke": a.smoke, "resize": a.resize,
                                                            "max_concurrent_trials": plan.max_concurrent},
                                          artifact_root=workdir / "mlartifacts")
    from trainables import data
    from trainables.report import plot
    settings = RunSettings(
        data_dir=str(data_dir), split_manifest=tracking.SPLIT_MANIFEST, classes=tuple(splits.classes),
        image_size=budget["image_size"], max_epochs=budget["max_epochs"],
        workers_per_trial=budget["workers_per_trial"], cpus_per_worker=plan.cpus_per_worker, use_gpu=plan.use_gpu,
        seed=a.seed, experiment=experiment, mlflow_uri=uri, mlflow_experiment_id=exp_id, parent_run_id=parent,
        storage=storage, amp=a.amp, max_train_images=SMOKE["max_train_images"] if a.smoke else 0,
        pretrained=a.pretrained, weights_dir=str(Path(a.weights_dir).resolve()) if a.weights_dir else "",
        resize_policy=a.resize)
    with tempfile.TemporaryDirectory() as tmp:  # every trial fetches the split from the parent run: any node can
        manifest = data.write_manifest(splits, Path(tmp) / tracking.SPLIT_MANIFEST.split("/")[-1])
        tracking.log_dataset(uri, parent, manifest, report, plot(report, Path(tmp)))
    tracking.log_settings(uri, parent, settings.to_dict())   # what --resume rebuilds the study from
    if settings.image_size:  # build the shared decode cache here, with progress, before any trial waits on it
        from trainables import cache
        _, meta, built = cache.open_or_build(splits.paths, settings.image_size, a.resize)
        print(f"artsweep: decode cache {'built' if built else 'reused'} ({meta['n']} images, {meta['side']} px, "
              f"{len(meta['bad'])} undecodable)", flush=True)
    print(f"artsweep: {plan.max_concurrent} trial(s) at a time, {budget['workers_per_trial']} worker(s) each "
          f"({'1 GPU' if plan.use_gpu else f'{plan.cpus_per_worker} CPU'} per worker); MLflow run {parent}", flush=True)
    tuner = build_tuner(settings, a.family, a.arch, a.standins, budget["num_samples"], plan)
    return run_study(tuner, settings, budget["num_samples"], t0)


def start_ray(a: argparse.Namespace, uri: str, storage: str, workers_per_trial: int):
    """Start or join Ray, refuse node-local stores on a multi-machine cluster, and plan concurrency."""
    import ray
    from trainables.cluster import node_capacity, shared_storage_problems
    from trainables.study import plan_resources
    local = {} if a.address else {"include_dashboard": False if a.no_dashboard else None}  # joining: the cluster's
    ray.init(address=a.address, runtime_env={"env_vars": RAY_ENV}, logging_level="WARNING", log_to_driver=True, **local)
    machines = len({n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]})
    problems = shared_storage_problems(machines, uri, storage)
    if problems:
        ray.shutdown()
        _fail(" | ".join(problems))
    return plan_resources(node_capacity([n["Resources"] for n in ray.nodes() if n["Alive"]]), workers_per_trial)


def run_study(tuner, settings, num_samples: int, t0: float) -> int:
    """Fit, then end the MLflow parent run however the study ended. Ctrl-C (or `ray job stop`) makes Tune
    save its state and return early: the study is marked KILLED and can be continued with --resume."""
    import ray
    from trainables import tracking
    uri, exp_id, parent = settings.mlflow_uri, settings.mlflow_experiment_id, settings.parent_run_id
    status, done = "FAILED", 0
    try:
        results = tuner.fit()
        done = results.num_terminated + results.num_errors
        status = "FINISHED" if done >= num_samples else "KILLED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        killed = tracking.close_study(uri, exp_id, parent, status)
        if killed:
            print(f"artsweep: marked {len(killed)} unfinished trial run(s) KILLED")
        ray.shutdown()
        if status == "KILLED":
            print(f"artsweep: study stopped after {done} of {num_samples} trials; continue it with:\n"
                  f"  python tune.py --resume --experiment {settings.experiment} --storage {settings.storage} "
                  f"--mlflow-uri {uri}", flush=True)
    return summarize(uri, settings.experiment, exp_id, parent, time.perf_counter() - t0)


def resume(a: argparse.Namespace) -> int:
    """--resume: continue the latest study of --experiment where Tune's saved state left it. Finished
    trials are kept, interrupted or errored ones start again, the remaining samples are proposed by the
    restored Optuna searcher; all of it lands in the same MLflow parent run."""
    from ray import tune as ray_tune
    from trainables import tracking
    from trainables.config import RunSettings
    from trainables.study import trainable
    uri = a.mlflow_uri or tracking.default_uri(Path.cwd())
    try:
        tracking.check_reachable(uri)
    except ConnectionError as e:
        _fail(str(e))
    experiment = a.experiment or f"artsweep-{a.family}"
    storage = a.storage or str(Path.cwd() / "ray_results")
    path = f"{storage.rstrip('/')}/{experiment}"
    if not ray_tune.Tuner.can_restore(path):
        _fail(f"--resume: no saved study state at {path}; pass the --experiment and --storage of the study to "
              "continue (tune.py prints them when a study stops)")
    try:
        settings = RunSettings(**tracking.read_settings(uri, experiment))
    except LookupError as e:
        _fail(f"--resume: {e}")
    os.environ.update(RAY_ENV)
    t0 = time.perf_counter()
    plan = start_ray(a, uri, storage, settings.workers_per_trial)
    tracking.reopen_study(uri, settings.parent_run_id)
    print(f"artsweep: resuming study {path} (MLflow run {settings.parent_run_id})", flush=True)
    tuner = ray_tune.Tuner.restore(path, trainable=trainable(settings, plan), resume_unfinished=True,
                                   restart_errored=True)
    return run_study(tuner, settings, int(tracking.read_param(uri, settings.parent_run_id, "num_samples")), t0)


def summarize(uri: str, experiment: str, exp_id: str, parent: str, wall_s: float) -> int:
    from mlflow.tracking import MlflowClient
    from analysis.runs import best_per_family, trial_rows
    rows = trial_rows(MlflowClient(uri), exp_id, parent)
    done = [r for r in rows if r.epochs]
    stopped = sum(r.stopped_early for r in rows)
    print(f"\nartsweep: {len(rows)} trials in {wall_s:.0f} s ({stopped} stopped early by ASHA, "
          f"{sum(r.status == 'FAILED' for r in rows)} failed)")
    if not done:
        print("artsweep: no trial reported a result; see the errors above")
        return 1
    best = done[0]
    print(f"best trial {best.name}: family={best.family} arch={best.arch} {OBJECTIVE}={best.best:.4f} "
          f"(epoch {best.best_epoch} of {best.epochs})")
    print("  config: " + ", ".join(f"{k}={v}" for k, v in sorted(best.params.items())))
    families = best_per_family(rows)
    if len(families) > 1:
        print("families ranked by their best trial:")
        for i, (fam, r) in enumerate(families.items(), 1):
            print(f"  {i}. {fam:<13} {OBJECTIVE}={r.best:.4f}  ({r.arch}, {r.name})")
    print(f"browse the study:  mlflow ui --backend-store-uri {uri}   (experiment {experiment!r})")
    print(f"pick the winner:   python -m analysis.leaderboard | study_plots | evaluate | registry "
          f"--experiment {experiment} --mlflow-uri {uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
