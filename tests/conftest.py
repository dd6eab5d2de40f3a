"""Shared fixtures: small real image folders written by the tests themselves, and one real study (read-only to
its readers; a test that writes gets `study_copy`). Every test is in exactly one tier (pyproject.toml's markers):
unit (no process, server or Ray: enforced here), integration (processes or servers) or e2e (real studies)."""

from __future__ import annotations

import multiprocessing.process
import os
import subprocess
import sys
import threading
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from tests.servers import MlflowServer, forget_artifact_locations
from trainables.data.builtin_dataset import render
from trainables.tracking import new_store
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
    yield
    items[:] = study_readers_later(items)


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


def study_readers_later(items) -> list:
    """The selected tests, whole modules in file order within each group: first the modules with neither an e2e
    test nor a reader of the shared study (the study builds meanwhile: `StudyBuild`), then those reading it, then
    the rest (studies of their own, timed or faulted, with the CPUs to themselves). A module never splits, so its
    module-scoped fixtures are set up once."""
    modules: dict[str, list] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)

    def group(tests) -> int:
        if any(_needs_study(t) for t in tests):
            return 1
        return 2 if any(t.get_closest_marker("e2e") for t in tests) else 0

    return [t for tests in sorted(modules.values(), key=group) for t in tests]


def _needs_study(item) -> bool:
    return "study" in getattr(item, "fixturenames", ())  # the closure: study_copy's users too


start_process = subprocess.Popen._execute_child  # as the unit tests' patch finds it


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

    def refuse_here(self, *args, **kwargs):  # the shared study's builder thread goes on meanwhile
        if threading.current_thread().name == StudyBuild.NAME:
            return start_process(self, *args, **kwargs)
        refuse()

    with ExitStack() as stack:
        stack.enter_context(mock.patch.object(subprocess.Popen, "_execute_child", refuse_here))  # Popen, run, Ray
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


def _tune(work: Path, uri: str, *flags: str, timeout: int, family: str = "scratch", env=None, procs=None) -> str:
    """tune.py's output (stdout + stderr) after it succeeded; `procs` collects the process while it runs."""
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
    with subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        if procs is not None:
            procs.append(proc)
        out = proc.communicate(timeout=timeout)[0]
    assert proc.returncode == 0, out[-4000:]
    return out


class StudyBuild(threading.Thread):
    """The shared study's two tune.py runs (see `study`), in a thread started before the first test: the modules
    that need no study run meanwhile (pytest_collection_modifyitems puts them first), on the CPU time a study leaves
    idle (imports, start-ups and closings use one core of two: ~30 % of 2 cores went unused over a whole run)."""

    NAME = "artsweep-shared-study"  # the unit tests' process check lets this thread start processes

    def __init__(self, work: Path):
        super().__init__(name=self.NAME, daemon=True)
        self.env = dict(os.environ)  # as the session started: the tests change theirs meanwhile
        new_store.seed(f"sqlite:///{work / 'server.db'}")  # here too: the cache folder from this environment
        self.server = MlflowServer(work, env=self.env)
        self.work, self.uri = work, self.server.uri
        self.procs: list[subprocess.Popen] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        from search_spaces import ALL, FAMILIES

        try:
            self.server.start()
            every = ("--num-samples", str(len(FAMILIES)), "--max-epochs", "1", "--final-fit")  # a trial per family
            first = _tune(self.work, self.uri, *every, timeout=600, family=ALL, env=self.env, procs=self.procs)
            (self.work / "first.txt").write_text(first)
            narrow = [f for k, v in STUDY_PINS.items() for f in ("--set", f"{k}={v}")]
            flags = ("--num-samples", "6", "--max-epochs", "4", "--confirm", "2", "--confirm-seeds", "2", "--final-fit")
            out = _tune(self.work, self.uri, *narrow, *flags, timeout=1200, env=self.env, procs=self.procs)
            (self.work / "out.txt").write_text(out)
        except BaseException as e:  # noqa: BLE001 - raised again in the test that waits for the study
            self.error = e

    def wait(self) -> str:
        """The main study's output, once both runs ended; what failed in the thread is raised here."""
        self.join()
        if self.error is not None:
            raise self.error
        return (self.work / "out.txt").read_text()

    def cancel(self) -> None:
        """End a run still going (a session that stopped early): tune.py's local Ray ends with its driver."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()


@pytest.fixture(scope="session", autouse=True)
def _build_study(request, tmp_path_factory):
    """Start building the shared study before the first test, when a selected test needs it (else nothing)."""
    if not any(_needs_study(item) for item in request.session.items):
        yield None
        return
    build = StudyBuild(tmp_path_factory.mktemp("study"))
    build.start()
    yield build
    build.cancel()
    build.join(timeout=60)
    build.server.stop()


@pytest.fixture(scope="session")
def study(_build_study) -> Study:
    """One real smoke study for every test that needs one: local Ray, Optuna + ASHA, 6 trials (1 worker each, 2 at
    a time: 2-worker DDP trials are the faults and DDP tests'; width fixed by STUDY_PINS), 4 epochs, then its 2 best
    configurations confirmed with 2 new seeds each and the winner's final fit, recorded by a real `mlflow server`
    (SQLite store, proxied artifacts) as a team's tracking server would. The analysis and MLflow UI tests read its
    runs, checkpoints and logged model. (1 worker: 2-worker trials, one at a time, took 60 s longer.)
    Before it, in the same experiment, a `--family all` study (one 1-epoch trial per family, then a final fit), so
    the study's champion has a previous one; tests/test_families_e2e.py reads that study (`first`, its output in
    first.txt): one study's fixed costs (~40 s on 2 cores) instead of two. Both are built while the tests that need
    no study run (StudyBuild).
    Read-only: at the session's end its store and artifacts must be as the study left them (a test that writes
    takes `study_copy`), else the teardown fails naming what changed."""
    build = _build_study
    out, server = build.wait(), build.server
    client = MlflowClient(server.uri)
    exp = client.get_experiment_by_name("e2e")
    first = client.search_runs(
        [exp.experiment_id], f"tags.`{STUDY_TAG}` = '1'", order_by=["attributes.start_time ASC"], max_results=1
    )[0]
    built = server.record()
    yield Study(out, client, server.uri, server.work, server, first.info.run_id)
    changed = server.changes_since(built)
    assert not changed, f"a test wrote to the shared study (its writers use `study_copy`): {changed}"


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
