"""benchmarks/gpu_check.sh's record: one JSON object, $OUT/gpu_check.json, rewritten after every step.

python benchmarks/gpu_check_report.py start OUT --dry 0 --budget 470      # a new record
python benchmarks/gpu_check_report.py step OUT NAME --rc 0 --since 1767225600.25 --limit 120
python benchmarks/gpu_check_report.py step OUT NAME --skipped "missing python packages: ray"

{"gpu": "NVIDIA H200", "dry": false, "budget_s": 470, "started": "...", "total_s": 433.1,
 "steps": {"env": {"status": "ok", "rc": 0, "seconds": 2.1, "limit_s": 30, "figures": {...}}, ...}}
A step's figures come from what it left in OUT/logs: the last line of NAME.log that is a JSON object
(throughput.py, packing.py, the env step), NAME.xml (pytest's JUnit XML: tests, failures, errors, skipped) and
NAME.csv (the leaderboard: trials, the best val_macro_f1). A step that did not pass keeps its log's last lines.
Standard library only: it records the steps whether or not the project's packages could be installed.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import time
import xml.etree.ElementTree as ET
from pathlib import Path

RECORD = "gpu_check.json"
TAIL_LINES = 15  # lines of a failed step's log kept in the record
TIMED_OUT = {124, 137}  # timeout(1): 124 after SIGTERM, 137 (128 + 9) when it had to SIGKILL
OBJECTIVE = "val_macro_f1"  # the leaderboard's score column (trainables.metrics.OBJECTIVE_KEY)


def last_json(log: Path) -> dict | None:
    """The last line of the log that parses as a JSON object (the benchmarks' result line)."""
    for line in reversed(log.read_text(errors="replace").splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def junit(path: Path) -> dict:
    """Test counts from pytest's JUnit XML (a <testsuites> root holding one <testsuite>, or the suite itself)."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    counts["failed_tests"] = [
        f"{case.get('classname')}::{case.get('name')}"
        for suite in suites
        for case in suite.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    return counts


def leaderboard(path: Path) -> dict:
    """Trials and the best one from the leaderboard's CSV (best first; a trial that never reported is empty)."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    scored = [r for r in rows if r.get(OBJECTIVE)]
    best = scored[0] if scored else {}
    return {
        "trials": len(rows),
        "scored": len(scored),
        f"best_{OBJECTIVE}": best.get(OBJECTIVE),
        "best": best.get("trial"),
    }


def figures(logs: Path, name: str) -> dict:
    found = {}
    if (logs / f"{name}.xml").is_file():
        found["tests"] = junit(logs / f"{name}.xml")
    if (logs / f"{name}.csv").is_file():
        found["leaderboard"] = leaderboard(logs / f"{name}.csv")
    if (logs / f"{name}.log").is_file() and (result := last_json(logs / f"{name}.log")) is not None:
        found.update(result)
    return found


def tail(log: Path) -> list[str]:
    return log.read_text(errors="replace").splitlines()[-TAIL_LINES:] if log.is_file() else []


def write(out: Path, record: dict) -> None:
    started = dt.datetime.fromisoformat(record["started"])
    record["total_s"] = round((dt.datetime.now(dt.timezone.utc) - started).total_seconds(), 1)
    tmp = out / f".{RECORD}.{os.getpid()}"
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(out / RECORD)  # atomic: a run cut short still leaves a whole record


def start(out: Path, dry: bool, budget: int) -> None:
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    write(out, {"gpu": None, "dry": dry, "budget_s": budget, "started": now, "steps": {}})


def step(out: Path, a: argparse.Namespace) -> dict:
    """Adds one step's outcome to the record; the env step also names the GPU at the top."""
    record = json.loads((out / RECORD).read_text())
    logs = out / "logs"
    if a.skipped:
        entry = {"status": "skipped", "note": a.skipped}
    else:
        status = "ok" if a.rc == 0 else "timeout" if a.rc in TIMED_OUT else "failed"
        seconds = round(time.time() - a.since, 1)
        entry = {"status": status, "rc": a.rc, "seconds": seconds, "limit_s": a.limit, "figures": figures(logs, a.name)}
        if status != "ok":
            entry["log_tail"] = tail(logs / f"{a.name}.log")
    record["steps"][a.name] = entry
    if a.name == "env" and "gpu" in entry.get("figures", {}):
        record["gpu"] = entry["figures"]["gpu"]
    write(out, record)
    return entry


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("start", help="a new record")
    s.add_argument("out", type=Path)
    s.add_argument("--dry", type=int, choices=[0, 1], default=0)
    s.add_argument("--budget", type=int, required=True, help="seconds the whole check may take")
    s = sub.add_parser("step", help="one step's outcome")
    s.add_argument("out", type=Path)
    s.add_argument("name")
    s.add_argument("--rc", type=int)
    s.add_argument("--since", type=float, help="when the step started (seconds since the epoch)")
    s.add_argument("--limit", type=int, help="the step's time limit (s)")
    s.add_argument("--skipped", metavar="REASON", help="the step did not run, and why")
    a = p.parse_args(argv)
    if a.command == "start":
        start(a.out, bool(a.dry), a.budget)
    else:
        entry = step(a.out, a)
        print(
            f"{a.name}: {entry['status']}"
            + (f" in {entry['seconds']:.0f} s" if "seconds" in entry else f" ({a.skipped})")
        )


if __name__ == "__main__":
    main()
