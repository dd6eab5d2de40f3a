"""Shared fixtures: small real image folders written by the tests themselves, and one real study (read-only to
its readers; a test that writes gets `study_copy`). Every test is in exactly one tier (pyproject.toml's markers):
unit (no process, server or Ray: enforced here), integration (processes or servers) or e2e (real studies)."""

from __future__ import annotations

import fcntl
import multiprocessing.process
import os
import subprocess
import sys
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch  # noqa: F401  its first import in a process runs `ldconfig` (cuda.pathfinder): here, not in a unit test
from mlflow.tracking import MlflowClient

from tests.servers import MlflowServer, forget_artifact_locations
from trainables.data.builtin_dataset import render
from trainables.tracking.mlflow_runs import STUDY_TAG

ROOT = Path(__file__).resolve().parents[1]
TINY_COUNTS = {"impressionism": 40, "pointillism": 24, "cubism": 12, "pop_art": 8}  # 5:1, 84 images
TIERS = frozenset({"unit", "integration", "e2e"})
# the shared study fixes scratch's width at its smallest (--set): every path runs as at full width, and its epochs
# take 1-2 s instead of ~10 (the study's set-up: 351 s on 6fdd7c3, 131 s on a2c1208; 2 cores, docs/benchmarks.md)
STUDY_PINS = {"width": 0.25}


@pytest.hookimpl(hookwrapper=True)
def pytest_collection_modifyitems(items):
    check_tiers(items)  # before -m and -k deselect
    items[:] = in_groups(items)  # before xdist reads the groups (its hook adds them to the test ids)
    yield


def check_tiers(items) -> None:
    """Refuse to run when a test is in no tier or in several: checked before `-m` deselects, so a test without
    a tier fails every run instead of silently running in none."""
    wrong = [(item.nodeid, sorted(TIERS & {m.name for m in item.iter_markers()})) for item in items]
    wrong = [f"  {nodeid}: {', '.join(tiers) or 'no tier'}" for nodeid, tiers in wrong if len(tiers) != 1]
    if wrong:
        raise pytest.UsageError(
            f"{len(wrong)} test(s) not in exactly one of the tiers {sorted(TIERS)} (pyproject.toml markers; "
            "a module-level `pytestmark` or a mark per test):\n" + "\n".join(wrong)
        )


SHARED_STUDY = "shared-study"  # the xdist group of every module reading the shared study: built once, on one worker


def in_groups(items) -> list:
    """Whole modules, each an xdist group (`--dist loadgroup`: a module runs on one worker, so its module-scoped
    fixtures are set up once), the modules reading the shared study in one group (it is built once), in the order
    the workers take them (`--no-loadscope-reorder`), longest work first: the shared study (its build, then its
    readers: the run's longest chain), the modules with studies of their own, those starting processes, the unit
    modules, and last the modules holding a test that must run `alone` (it waits for the other worker's test)."""
    modules: dict[str, list] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)

    def rank(tests) -> int:
        if any(_needs_study(t) for t in tests):
            return 0
        marks = {m.name for t in tests for m in t.iter_markers()}
        return 4 if "alone" in marks else 1 if "e2e" in marks else 2 if "integration" in marks else 3

    ranks = {module: rank(tests) for module, tests in modules.items()}
    ordered = []
    for module in sorted(modules, key=ranks.get):  # stable: file order within a rank
        for t in modules[module]:
            t.add_marker(pytest.mark.xdist_group(SHARED_STUDY if ranks[module] == 0 else module))
        ordered += modules[module]
    return ordered


def _needs_study(item) -> bool:
    return "study" in getattr(item, "fixturenames", ())  # the closure: study_copy's users too


@contextmanager
def turn(lock: Path, alone: bool):
    """A test's turn on the machine among the xdist workers: a test `alone` waits until no other worker runs a
    test and keeps the others waiting until it ends (an exclusive flock), any other test shares it. `lock` + ".gate"
    is taken first, exclusively by a test alone and briefly shared by the others, so a worker that runs tests back
    to back cannot keep a test alone waiting."""
    with open(f"{lock}.gate", "a") as gate, open(lock, "a") as held:
        fcntl.flock(gate, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        fcntl.flock(held, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        if not alone:
            fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)
            fcntl.flock(gate, fcntl.LOCK_UN)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item):
    """Under xdist (a worker has a `workerinput`), every test takes its `turn`: setup, call and teardown. The lock
    lies in the run's temporary folder, which holds each worker's (xdist gives a worker `<run's>/popen-gwN`)."""
    if not hasattr(item.config, "workerinput"):  # in-process (-n 0, -p no:xdist): one test at a time anyway
        yield
        return
    with turn(Path(item.config.option.basetemp).parent / "turn.lock", item.get_closest_marker("alone") is not None):
        yield


class StartsAProcess(RuntimeError):
    """A unit test tried to start a process (a subprocess, multiprocessing, Ray, a server)."""


@contextmanager
def _no_processes(item):
    """While a unit test sets up (its fixtures included) and runs, starting any process raises StartsAProcess."""
    if item.get_closest_marker("unit") is None:
        yield
        return

    def refuse(*args, **kwargs):
        raise StartsAProcess(f"{item.nodeid} is marked unit but starts a process: mark it integration")

    with ExitStack() as stack:
        stack.enter_context(mock.patch.object(subprocess.Popen, "_execute_child", refuse))  # Popen, run, Ray
        stack.enter_context(mock.patch.object(multiprocessing.process.BaseProcess, "start", refuse))  # pools, spawn
        stack.enter_context(mock.patch.object(os, "fork", refuse))
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    with _no_processes(item):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    with _no_processes(item):
        yield


def write_folder(root, counts, seed=0):
    rng = np.random.default_rng(seed)
    for style, n in counts.items():
        (root / style).mkdir(parents=True)
        for i in range(n):
            render(style, rng).save(root / style / f"{i:03d}.{'png' if i % 2 else 'jpg'}")
    return root


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("tiny"), TINY_COUNTS)


@pytest.fixture(scope="session")
def served(tmp_path_factory):
    """The registered model behind one real `mlflow models serve` (tests/served_model.py), classes TINY_COUNTS'
    names: the serving tests share it, as its start-up takes ~15 s."""
    from tests.served_model import serve  # MLflow's model code: imported only by the tests that serve

    with serve(tmp_path_factory, sorted(TINY_COUNTS)) as served:
        yield served


@dataclass
class Study:
    out: str  # tune.py's stdout + stderr
    client: MlflowClient
    uri: str  # MLflow tracking URI: the real `mlflow server` below
    work: Path  # tune.py's working directory (ray_results)
    server: MlflowServer  # still running for the whole session
    first: str = ""  # the parent run of the `--family all` study that ran first in the same experiment
    experiment: str = "e2e"


def _tune(work: Path, uri: str, *flags: str, timeout: int, family: str = "scratch") -> str:
    """tune.py's output (stdout + stderr) after it succeeded."""
    cmd = [
        sys.executable,
        str(ROOT / "tune.py"),
        "--family",
        family,
        "--smoke",
        "--experiment",
        "e2e",
        "--mlflow-uri",
        uri,
        "--storage",
        str(work / "ray_results"),
        "--no-dashboard",
        *flags,
    ]
    proc = subprocess.run(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-4000:]
    return proc.stdout


@pytest.fixture(scope="session")
def study(tmp_path_factory) -> Study:
    """One real smoke study for every test that needs one: local Ray, Optuna + ASHA, 6 trials (1 worker each, 2 at
    a time: 2-worker DDP trials are the faults and DDP tests'; width fixed by STUDY_PINS), 4 epochs, then its 2 best
    configurations confirmed with 2 new seeds each and the winner's final fit, recorded by a real `mlflow server`
    (SQLite store, proxied artifacts) as a team's tracking server would. The analysis and MLflow UI tests read its
    runs, checkpoints and logged model. (1 worker: 2-worker trials, one at a time, took 60 s longer.)
    Before it, in the same experiment, a `--family all` study (one 1-epoch trial per family, then a final fit), so
    the study's champion has a previous one; tests/test_families_e2e.py reads that study (`first`, its output in
    first.txt): one study's fixed costs (~40 s on 2 cores) instead of two. Its readers are one xdist group
    (`in_groups`), the first one a worker takes: the other worker runs the rest of the suite meanwhile.
    Read-only: at the session's end its store and artifacts must be as the study left them (a test that writes
    takes `study_copy`), else the teardown fails naming what changed."""
    from search_spaces import ALL, FAMILIES

    server = MlflowServer(tmp_path_factory.mktemp("study")).start()
    work = server.work
    try:
        every = ("--num-samples", str(len(FAMILIES)), "--max-epochs", "1", "--final-fit")  # a trial per family
        (work / "first.txt").write_text(_tune(work, server.uri, *every, timeout=600, family=ALL))
        narrow = [f for k, v in STUDY_PINS.items() for f in ("--set", f"{k}={v}")]
        flags = ("--num-samples", "6", "--max-epochs", "4", "--confirm", "2", "--confirm-seeds", "2", "--final-fit")
        out = _tune(work, server.uri, *narrow, *flags, timeout=1200)
        client = MlflowClient(server.uri)
        exp = client.get_experiment_by_name("e2e")
        first = client.search_runs(
            [exp.experiment_id], f"tags.`{STUDY_TAG}` = '1'", order_by=["attributes.start_time ASC"], max_results=1
        )[0]
        built = server.record()
        yield Study(out, client, server.uri, work, server, first.info.run_id)
        changed = server.changes_since(built)
        assert not changed, f"a test wrote to the shared study (its writers use `study_copy`): {changed}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def study_copy(study, tmp_path_factory) -> Study:
    """The session's study on a server of its own (a copy of its store and artifacts), for the tests of one
    module that write to it (crown a winner, register a model, log artifacts): the shared `study` stays as
    tune.py left it for its readers, whatever order the tests run in."""
    server = study.server.copy(tmp_path_factory.mktemp("study-copy")).start()
    forget_artifact_locations()  # the copy's runs have the shared study's ids
    yield replace(study, client=MlflowClient(server.uri), uri=server.uri, server=server)
    server.stop()
    forget_artifact_locations()
