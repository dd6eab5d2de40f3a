"""benchmarks/gpu_check.sh, the GPU check prepared for a GPU machine, checked here without one: its syntax and
steps, the record a dry run of its quick steps writes, a spent budget, and how the record reads a step's output
(benchmarks/gpu_check_report.py); the packing benchmark's trials-per-hour arithmetic. The whole dry run (studies
and all, several minutes on 2 cores) is `OUT=/tmp/x GPU_CHECK_DRY=1 bash benchmarks/gpu_check.sh`."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
REPORT = ROOT / "benchmarks" / "gpu_check_report.py"
STEPS = [  # what the issue asks the check to run, in the script's order
    "env",
    "install",
    "gpu_tests",
    "throughput_cnn",
    "throughput_vit",
    "smoke",
    "leaderboard",
    "packing",
    "throughput_cnn_compile",
    "throughput_vit_compile",
]


def check(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """A dry run of the script into tmp_path/out, logs left unpacked."""
    env = {**os.environ, "OUT": str(tmp_path / "out"), "GPU_CHECK_DRY": "1", "GPU_CHECK_ARCHIVE": "0", **env}
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120)


def test_the_script_parses_and_lists_the_steps_within_eight_minutes():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    listed = subprocess.run(["bash", str(SCRIPT), "--list"], capture_output=True, text=True, check=True).stdout
    rows = [line.split() for line in listed.splitlines()]
    assert [r[0] for r in rows] == STEPS
    assert all(int(r[1]) > 0 for r in rows)
    source = SCRIPT.read_text()
    assert "resnet50" in source and "vit_base_patch16_224" in source and "--compile" in source
    assert "BUDGET=${GPU_CHECK_BUDGET_S:-470}" in source  # 8 minutes on the GPU machine, the archive included


def test_a_dry_run_of_the_quick_steps_records_the_machine(tmp_path):
    run = check(tmp_path, GPU_CHECK_STEPS="env install")
    assert run.returncode == 0, run.stdout + run.stderr
    record = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert record["dry"] is True and record["budget_s"] == 1800 and list(record["steps"]) == ["env", "install"]
    env = record["steps"]["env"]
    assert env["status"] == "ok" and env["rc"] == 0 and env["seconds"] > 0
    assert env["figures"]["torch"].split("+")[0] == importlib.metadata.version("torch")  # less the local tag
    assert record["gpu"] == env["figures"]["gpu"]
    assert "installed" in (tmp_path / "out" / "logs" / "install.log").read_text()


def test_a_spent_budget_skips_every_step_and_still_writes_the_record(tmp_path):
    run = check(tmp_path, GPU_CHECK_BUDGET_S="0")
    assert run.returncode == 0, run.stdout + run.stderr
    steps = json.loads((tmp_path / "out" / "gpu_check.json").read_text())["steps"]
    assert list(steps) == STEPS
    assert all(s["status"] == "skipped" and s["note"].startswith("out of time") for s in steps.values())


def test_an_unknown_step_is_refused_before_anything_runs(tmp_path):
    run = check(tmp_path, GPU_CHECK_STEPS="env gpu_test")
    assert run.returncode == 2 and "unknown step 'gpu_test'" in run.stderr
    assert not (tmp_path / "out" / "gpu_check.json").exists()


def report(*args) -> str:
    return subprocess.run(
        [sys.executable, str(REPORT), *map(str, args)], capture_output=True, text=True, check=True
    ).stdout


def test_the_record_reads_junit_xml_the_leaderboard_and_the_last_json_line(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "tests.log").write_text("3 passed, 1 failed\n")
    (logs / "tests.xml").write_text(
        '<testsuites><testsuite tests="5" failures="1" errors="0" skipped="1">'
        '<testcase classname="tests.test_gpu" name="test_a"><failure message="x"/></testcase>'
        "</testsuite></testsuites>"
    )
    (logs / "board.log").write_text("table\n")
    (logs / "board.csv").write_text("rank,trial,val_macro_f1\n1,t2,0.61\n2,t1,0.40\n3,t3,\n")
    (logs / "bench.log").write_text('{"old": 1}\nnoise\n{"artsweep_img_s": 2900.5, "ratio": 0.97}\nnot json {\n')
    (logs / "slow.log").write_text("".join(f"line {i}\n" for i in range(40)))
    report("start", tmp_path, "--dry", 0, "--budget", 470)
    for name, rc in (("tests", 1), ("board", 0), ("bench", 0), ("slow", 124)):
        report("step", tmp_path, name, "--rc", rc, "--since", 0, "--limit", 60)
    report("step", tmp_path, "packing", "--skipped", "missing python packages: ray")
    steps = json.loads((tmp_path / "gpu_check.json").read_text())["steps"]
    assert steps["tests"]["status"] == "failed" and steps["tests"]["figures"]["tests"] == {
        "tests": 5,
        "failures": 1,
        "errors": 0,
        "skipped": 1,
        "passed": 3,
        "failed_tests": ["tests.test_gpu::test_a"],
    }
    assert steps["board"]["figures"]["leaderboard"] == {
        "trials": 3,
        "scored": 2,
        "best_val_macro_f1": "0.61",
        "best": "t2",
    }
    assert steps["bench"]["figures"] == {"artsweep_img_s": 2900.5, "ratio": 0.97} and "log_tail" not in steps["bench"]
    assert steps["slow"]["status"] == "timeout" and steps["slow"]["log_tail"][-1] == "line 39"
    assert steps["packing"] == {"status": "skipped", "note": "missing python packages: ray"}


def test_packing_counts_trials_per_hour_over_their_span_and_the_most_at_once():
    spec = importlib.util.spec_from_file_location("packing", ROOT / "benchmarks" / "packing.py")
    packing = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(packing)
    one_by_one = packing.throughput([(0, 60), (60, 120), (120, 180)])  # one ends as the next starts
    assert one_by_one == {"trials": 3, "span_s": 180, "trials_per_hour": 60.0, "max_overlap": 1}
    packed = packing.throughput([(0, 60), (5, 70), (10, 75), (70, 90)])
    assert packed["max_overlap"] == 3 and packed["trials_per_hour"] == 160.0
    assert packing.throughput([])["trials"] == 0
