"""Trials per hour on one GPU with packing (several single-worker trials share it) and without (one at a time).

python benchmarks/packing.py                              # 4 trials of 2 epochs each way, on the built-in data
python benchmarks/packing.py --trials 8 --dir /tmp/packing

Runs the same short real study twice: `tune.py --family scratch --smoke --no-early-stopping --num-samples N`
(CPU-sized stand-in models, 32 px, 256 images an epoch; no early stopping, so both studies train the same epochs),
first with `--pack auto` (each trial asks Ray for the share of the GPU its memory estimate needs: up to
trainables.trial.memory.MAX_PACK trials on one GPU) and then with `--pack off` (a whole GPU each: one at a time on
one GPU), each in its own folder, Ray cluster and MLflow store. The packed study goes first, so any cost of a cold
start (file caches, the memory probe's cache) falls on it. Trials per hour count the trials over their span in
MLflow, from the first trial run's start to the last one's end: Ray's start-up and the data preparation before it
and the closing steps after it are the same for both studies and left out (`study_wall_s` has them).
Trials this small are mostly start-up and reporting, so the figure is packing's gain on overhead-bound trials;
with no GPU both studies run the same way (CPUs are never packed).
The last line is one JSON object: {"packed": {...}, "unpacked": {...}, "speedup": packed / unpacked trials/hour}.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from trainables.data.builtin_dataset import ensure_builtin_dataset  # noqa: E402
from trainables.tracking.mlflow_runs import TRIAL_ID_TAG  # noqa: E402

EXPERIMENT = "packing"
PLANNED = re.compile(r"(\d+) trial\(s\) at a time")  # the study's line saying how many trials may run at once
MODES = {"packed": "auto", "unpacked": "off"}  # --pack value of each study


def spans(uri: str) -> list[tuple[float, float]]:
    """(start, end) in seconds of every trial run (tagged with its Tune trial id) that ended."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], max_results=10_000) if exp else []
    return [
        (r.info.start_time / 1000, r.info.end_time / 1000)
        for r in runs
        if TRIAL_ID_TAG in r.data.tags and r.info.end_time
    ]


def throughput(intervals: list[tuple[float, float]]) -> dict:
    """Trials, their span (first start to last end, s), trials per hour over it, and the most that overlapped."""
    if not intervals:
        return {"trials": 0, "span_s": None, "trials_per_hour": None, "max_overlap": 0}
    span = max(e for _, e in intervals) - min(s for s, _ in intervals)
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])  # an end before a start at a tie
    running = overlap = 0
    for _, change in events:
        running += change
        overlap = max(overlap, running)
    return {
        "trials": len(intervals),
        "span_s": round(span, 1),
        "trials_per_hour": round(len(intervals) * 3600 / span, 1) if span > 0 else None,
        "max_overlap": overlap,
    }


def study(mode: str, work: Path, a: argparse.Namespace) -> dict:
    """One study with --pack `mode` in its own folder; its output goes to work/tune.log."""
    work.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    cmd = [
        sys.executable,
        str(ROOT / "tune.py"),
        *("--family", "scratch", "--smoke", "--no-early-stopping", "--no-dashboard", "--confirm", "0"),
        *("--num-samples", str(a.trials), "--max-epochs", str(a.max_epochs), "--pack", mode),
        *("--experiment", EXPERIMENT, "--mlflow-uri", uri, "--storage", str(work / "ray_results")),
    ]
    print(f"--pack {mode}: {' '.join(cmd[1:])} (output: {work / 'tune.log'})", flush=True)
    t0 = time.perf_counter()
    with open(work / "tune.log", "w") as log:  # MLflow's artifacts go to the working folder's mlartifacts/
        rc = subprocess.run(cmd, cwd=work, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    text = (work / "tune.log").read_text(errors="replace")
    if rc:
        print(f"--pack {mode} failed (exit {rc}); the end of its output:\n" + "\n".join(text.splitlines()[-20:]))
    planned = PLANNED.search(text)
    return {
        "pack": mode,
        "rc": rc,
        "study_wall_s": round(wall, 1),
        "planned_at_once": int(planned.group(1)) if planned else None,
        **throughput(spans(uri)),
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=4, help="trials per study (default 4)")
    p.add_argument("--max-epochs", type=int, default=2, help="epochs per trial (default 2, as --smoke)")
    p.add_argument("--dir", type=Path, help="working folder (default: a new temporary one)")
    a = p.parse_args(argv)
    work = a.dir or Path(tempfile.mkdtemp(prefix="artsweep-packing-"))
    ensure_builtin_dataset()  # generated once, before either study's clock starts
    out = {"trials_asked": a.trials, "max_epochs": a.max_epochs}
    out.update({name: study(mode, work / name, a) for name, mode in MODES.items()})
    fast, slow = out["packed"]["trials_per_hour"], out["unpacked"]["trials_per_hour"]
    out["speedup"] = round(fast / slow, 2) if fast and slow else None
    for name in MODES:
        r = out[name]
        print(
            f"{name:9s} {r['trials']} trials in {r['span_s']} s: {r['trials_per_hour']} trials/hour "
            f"(at most {r['max_overlap']} at once, {r['planned_at_once']} planned; study wall {r['study_wall_s']} s)"
        )
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
