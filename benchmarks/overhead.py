"""Where a trial's life goes: training steps vs everything around them, phase by phase, on the real path.

python benchmarks/overhead.py [--trials 6] [--dir /tmp/artsweep-overhead]        # runs N tiny trials, then reports
python benchmarks/overhead.py --experiment artsweep-scratch --mlflow-uri sqlite:///mlflow.db   # a study you ran

The tiny trials are `tune.py --smoke --max-epochs 1` (one epoch of 256 images, 32 px, stand-in models) on the
built-in data: a real Ray cluster, Tune, Train controller and worker, MLflow store. Per trial, from Tune
starting it to Tune ending it (its `spend_wall_s`):
  driver     Tune starts the trial's actor -> its MLflow run exists (process, imports, run creation)
  controller run exists -> Train's controller asks for workers (controller process and imports)
  workers    -> the worker group trains (worker process, torch process group; Train's controller log)
  imports    the worker's training stack (torch, timm, ...; worker metric time_import_s)
  setup      data and model on the worker (time_setup_s)
  train/val  training steps and validation (time_train_s, time_val_s)
  reports    per-epoch reports, checkpoints and MLflow logging (the rest until the last epoch is logged)
  teardown   last epoch logged -> Tune ends the trial (worker group shutdown, driver exit)
The controller log is read from this machine's Ray session folder; phases it cannot find count in `reports`.
Last line: one JSON object with overhead_s_per_trial (life - train - val) and train_share (train / life).
"""

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
from pathlib import Path

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--dir", default=None, help="working folder (default: a new temporary one)")
    p.add_argument("--experiment", help="report on this experiment's latest study instead of running one")
    p.add_argument("--mlflow-uri", default="sqlite:///mlflow.db")
    a = p.parse_args()
    if a.experiment is None:
        work = Path(a.dir or tempfile.mkdtemp(prefix="artsweep-overhead-"))
        work.mkdir(parents=True, exist_ok=True)
        a.experiment, a.mlflow_uri = "overhead", f"sqlite:///{work / 'mlflow.db'}"
        cmd = [
            sys.executable,
            str(Path(__file__).resolve().parents[1] / "tune.py"),
            "--smoke",
            "--max-epochs",
            "1",
            "--num-samples",
            str(a.trials),
            "--experiment",
            a.experiment,
            "--mlflow-uri",
            a.mlflow_uri,
            "--storage",
            str(work / "ray_results"),
            "--no-dashboard",
        ]
        print("running:", " ".join(cmd), f"(output: {work / 'tune.log'})", flush=True)
        with open(work / "tune.log", "w") as log:
            subprocess.run(cmd, cwd=work, check=True, stdout=log, stderr=subprocess.STDOUT)
    print(json.dumps(report(a.mlflow_uri, a.experiment)))


if __name__ == "__main__":
    main()
