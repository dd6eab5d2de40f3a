"""Where a trial's life goes: training steps vs everything around them, phase by phase, on the real path; and
what each running trial holds in memory, process by process.

python benchmarks/overhead.py [--trials 6] [--dir /tmp/artsweep-overhead]        # runs N tiny trials, then reports
python benchmarks/overhead.py --baseline HEAD~1        # the same study on another commit too, side by side
python benchmarks/overhead.py --workers-per-trial 2    # distributed trials (DDP): Train's controller and workers
python benchmarks/overhead.py --experiment artsweep-scratch --mlflow-uri sqlite:///mlflow.db   # a study you ran

The tiny trials are `tune.py --smoke --max-epochs 1` (one epoch of 256 images, 32 px, stand-in models) on the
built-in data: a real Ray cluster, Tune, MLflow store; one-worker trials train in their Tune actor, distributed
ones in a Train worker group (trainables/trial/driver.py). Per trial, from Tune starting it to Tune ending it
(its `spend_wall_s`):
  driver     Tune starts the trial's actor -> its MLflow run exists (process, imports, run creation)
  controller run exists -> Train's controller asks for workers (controller process and imports; distributed)
  workers    -> the worker group trains (worker process, torch process group; Train's controller log; distributed)
  imports    the training stack (torch, timm, ...; metric time_import_s: ~0 in a reused Tune actor)
  setup      data and model (time_setup_s)
  train/val  training steps and validation (time_train_s, time_val_s)
  reports    per-epoch reports, checkpoints and MLflow logging (the rest until the last epoch is logged)
  teardown   last epoch logged -> Tune ends the trial (worker group shutdown, driver exit)
The controller log is read from this machine's Ray session folder; phases it cannot find count in `reports`.
While the study runs, every second, the resident memory (RSS, and PSS: shared pages split between the processes
that map them) of each process under tune.py, by role: the study's driver (tune.py), trial actors (Tune's, on
the head for a distributed trial; for a trial in process, on the node it trains on), Train controllers and
placement-group cleaners (on the head), Train workers, Ray's own daemons. "head per trial" is what one running
trial adds to the head: actor + controller + cleaner for a distributed trial, nothing for one in process.
--baseline REV runs the same study on commit REV (a git worktree, its modules first on PYTHONPATH) before this
tree's, and prints both and their ratio.
Last line: one JSON object with overhead_s_per_trial (life - train - val), train_share (train / life), the
memory by role, and with --baseline the baseline's figures and overhead_ratio (this tree / baseline).
"""

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import psutil
from mlflow.tracking import MlflowClient

from analysis.reading.runs import trial_rows
from trainables.tracking.mlflow_runs import latest_study

PHASES = ("driver", "controller", "workers", "imports", "setup", "train", "val", "reports", "teardown")
RAY_LOGS = Path(tempfile.gettempdir()) / "ray" / "session_latest" / "logs" / "train"


def controller_times(trial_id: str) -> dict:
    """Epoch seconds of 'Requesting resources' and 'Started training worker group' in the trial's Train
    controller log (first attempt), or {} when this machine has no such log."""
    for f in RAY_LOGS.glob("ray-train-sys-controller-*.log"):
        text = f.read_text(errors="replace")
        if f"trial-{trial_id}" not in text:
            continue
        out = {}
        for line in text.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            t = dt.datetime.strptime(rec["asctime"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            for key, marker in (("request", "Requesting resources"), ("started", "Started training worker group")):
                if marker in rec.get("message", "") and key not in out:
                    out[key] = t
        return out
    return {}


def trial_phases(client: MlflowClient, run) -> dict:
    m = run.data.metrics
    hist = lambda key: client.get_metric_history(run.info.run_id, key)  # noqa: E731
    start, end = run.info.start_time / 1000, (run.info.end_time or run.info.start_time) / 1000
    life = m.get("spend_wall_s", end - start)
    last_logged = max((x.timestamp / 1000 for x in hist("val_macro_f1")), default=end)
    ctl = controller_times(run.data.tags.get("trial_id", ""))
    p = dict(
        driver=life - (end - start),
        imports=m.get("time_import_s", 0.0),
        setup=m.get("time_setup_s", 0.0),
        train=sum(x.value for x in hist("time_train_s")),
        val=sum(x.value for x in hist("time_val_s")),
        teardown=end - last_logged,
    )
    p["controller"] = ctl["request"] - start if "request" in ctl else 0.0
    p["workers"] = ctl["started"] - ctl["request"] if len(ctl) == 2 else 0.0
    p["reports"] = life - sum(p.values())
    return {"life": life, **p}


def report(uri: str, experiment: str) -> dict:
    client = MlflowClient(uri)
    exp, study = latest_study(client, experiment)
    rows = [
        trial_phases(client, client.get_run(r.run_id)) for r in trial_rows(client, exp.experiment_id, study.info.run_id)
    ]
    print(f"{'phase':<12}" + "".join(f"{'trial ' + str(i + 1):>9}" for i in range(len(rows))) + f"{'mean':>9}")
    for key in ("life",) + PHASES:
        values = [r[key] for r in rows]
        print(f"{key:<12}" + "".join(f"{v:>9.1f}" for v in values) + f"{sum(values) / len(values):>9.1f}")
    life = sum(r["life"] for r in rows)
    train = sum(r["train"] for r in rows)
    overhead = (life - train - sum(r["val"] for r in rows)) / len(rows)
    wall = ((study.info.end_time or study.info.start_time) - study.info.start_time) / 1000
    print(
        f"\n{len(rows)} trials, study wall {wall:.0f} s; per trial {life / len(rows):.1f} s of life, "
        f"{overhead:.1f} s of it not training or validating; training steps {100 * train / life:.0f} % of life"
    )
    return {
        "trials": len(rows),
        "overhead_s_per_trial": round(overhead, 2),
        "train_share": round(train / life, 3),
        "phases_s": {k: round(sum(r[k] for r in rows) / len(rows), 2) for k in PHASES},
    }


ROLES = (  # (role, what its process title holds), first match wins
    ("trial actor", ("ImplicitFunc", "run_trial")),
    ("train controller", ("TrainController",)),
    ("pg cleaner", ("PlacementGroupCleaner",)),
    ("train worker", ("RayTrainWorker",)),
    ("study driver", ("tune.py",)),
)
HEAD_ROLES = ("trial actor", "train controller", "pg cleaner")  # what a distributed trial keeps on the head


def role(cmdline: str) -> str:
    return next((name for name, marks in ROLES if any(m in cmdline for m in marks)), "ray daemons")


class MemorySampler(threading.Thread):
    """Every `period_s`, RSS and PSS (MiB) of each process under `pid` (and `pid` itself), by role."""

    def __init__(self, pid: int, period_s: float = 1.0):
        super().__init__(daemon=True)
        self.pid, self.period_s, self.samples, self.done = pid, period_s, [], threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                root = psutil.Process(self.pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            sample = []
            for p in procs:
                try:
                    info = p.memory_full_info()
                    sample.append(
                        (role(" ".join(p.cmdline())), info.rss / 2**20, getattr(info, "pss", info.rss) / 2**20)
                    )
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    pass
            self.samples.append(sample)
            self.done.wait(self.period_s)

    def summary(self) -> dict:
        """Per role: its most processes at once and their mean RSS / PSS per process (MiB) over the samples that
        held it; the study driver's peak RSS; head MiB per running trial (distributed: the head's roles per
        trial actor; in process: 0)."""
        out = {}
        for name in [r for r, _ in ROLES] + ["ray daemons"]:
            held = [[(rss, pss) for r, rss, pss in s if r == name] for s in self.samples]
            held = [h for h in held if h]
            if not held:
                continue
            flat = [x for h in held for x in h]
            out[name] = {
                "processes_max": max(len(h) for h in held),
                "rss_mib": round(sum(x[0] for x in flat) / len(flat), 1),
                "pss_mib": round(sum(x[1] for x in flat) / len(flat), 1),
                "rss_mib_max": round(max(x[0] for x in flat), 1),
            }
        return out


def head_per_trial(memory: dict) -> dict:
    """MiB one running trial adds to the head (RSS and PSS): a trial run by Train's controller (a distributed
    one, or any trial on code before trials trained in process: --baseline) keeps its actor, controller and
    cleaner there; a trial in process trains off the head (on a GPU node) and adds none of its processes."""
    if "train controller" not in memory:
        return {"rss_mib": 0.0, "pss_mib": 0.0}
    return {k: round(sum(memory.get(r, {}).get(k, 0.0) for r in HEAD_ROLES), 1) for k in ("rss_mib", "pss_mib")}


def run_study(tree: Path, work: Path, trials: int, workers: int) -> tuple[str, dict]:
    """Run the tiny study with `tree`'s tune.py (and its modules first on the path) in `work`; sample memory."""
    work.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    cmd = [
        sys.executable,
        str(tree / "tune.py"),
        "--smoke",
        "--max-epochs",
        "1",
        "--num-samples",
        str(trials),
        "--workers-per-trial",
        str(workers),
        "--experiment",
        "overhead",
        "--mlflow-uri",
        uri,
        "--storage",
        str(work / "ray_results"),
        "--no-dashboard",
    ]
    print("running:", " ".join(cmd), f"(output: {work / 'tune.log'})", flush=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    with open(work / "tune.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
        sampler = MemorySampler(proc.pid)
        sampler.start()
        if proc.wait() != 0:
            sys.exit(f"the study failed (exit {proc.returncode}): see {work / 'tune.log'}")
        sampler.done.set()
        sampler.join()
    return uri, sampler.summary()


def print_memory(memory: dict, head: dict) -> None:
    print(f"\n{'process role':<18}{'at most':>9}{'RSS MiB':>9}{'PSS MiB':>9}")
    for name, m in memory.items():
        print(f"{name:<18}{m['processes_max']:>9}{m['rss_mib']:>9.0f}{m['pss_mib']:>9.0f}")
    print(f"head per running trial: RSS {head['rss_mib']:.0f} MiB, PSS {head['pss_mib']:.0f} MiB")


def measure(tree: Path, work: Path, a) -> dict:
    uri, memory = run_study(tree, work, a.trials, a.workers_per_trial)
    out = report(uri, "overhead")
    head = head_per_trial(memory)
    print_memory(memory, head)
    return {**out, "memory_mib": memory, "head_per_trial_mib": head}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--workers-per-trial", type=int, default=1, help="1: trials in process; >1: Train worker groups")
    p.add_argument("--dir", default=None, help="working folder (default: a new temporary one)")
    p.add_argument("--baseline", metavar="REV", help="also run the study on this commit first, and compare")
    p.add_argument("--experiment", help="report on this experiment's latest study instead of running one")
    p.add_argument("--mlflow-uri", default="sqlite:///mlflow.db")
    a = p.parse_args()
    if a.experiment is not None:
        print(json.dumps(report(a.mlflow_uri, a.experiment)))
        return
    repo = Path(__file__).resolve().parents[1]
    work = Path(a.dir or tempfile.mkdtemp(prefix="artsweep-overhead-"))
    base = None
    if a.baseline:
        rev = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", a.baseline], capture_output=True, text=True, check=True
        ).stdout.strip()
        tree = work / f"tree-{rev}"
        subprocess.run(
            ["git", "-C", str(repo), "worktree", "add", "--detach", "-f", str(tree), rev],
            check=True,
            capture_output=True,
        )
        try:
            print(f"baseline {rev}:")
            base = {"commit": rev, **measure(tree, work / "baseline", a)}
        finally:
            subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(tree)], check=False)
        print("\nthis tree:")
    out = measure(repo, work / "current", a)
    if base:
        ratio = out["overhead_s_per_trial"] / base["overhead_s_per_trial"]
        print(
            f"\noverhead per trial: {base['overhead_s_per_trial']:.1f} s at {base['commit']} -> "
            f"{out['overhead_s_per_trial']:.1f} s here ({ratio:.2f}x); train share {base['train_share']:.2f} -> "
            f"{out['train_share']:.2f}"
        )
        out = {**out, "baseline": base, "overhead_ratio": round(ratio, 3)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
