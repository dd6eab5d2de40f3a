"""The test tiers hold (tests/conftest.py): a run stops when a test is in no tier or in several, and a unit test
cannot start a process."""

import multiprocessing
import subprocess
import threading
from types import SimpleNamespace

import pytest

from tests.conftest import StartsAProcess, StudyBuild, check_tiers, study_readers_later

pytestmark = pytest.mark.unit


def _item(nodeid: str, *marks: str) -> SimpleNamespace:
    """What the collection hook reads of a test: its id and its marks."""
    return SimpleNamespace(nodeid=nodeid, iter_markers=lambda: [SimpleNamespace(name=m) for m in marks])


def test_a_test_in_no_tier_or_in_two_stops_the_run():
    ok = _item("ok", "unit", "fault")  # one tier; other marks are free
    check_tiers([ok])
    with pytest.raises(pytest.UsageError, match=r"2 test\(s\)(?s:.*)none: no tier\n  two: e2e, unit$"):
        check_tiers([ok, _item("none", "gpu"), _item("two", "unit", "e2e")])


def _test(nodeid: str, tier: str, *fixtures: str) -> SimpleNamespace:
    """What the ordering reads of a test: its id, its fixtures' closure and its tier."""
    return SimpleNamespace(
        nodeid=nodeid, fixturenames=fixtures, get_closest_marker=lambda name: name if name == tier else None
    )


def test_modules_without_studies_first_then_the_shared_studys_readers_then_studies_of_their_own():
    tests = [
        _test("a.py::e2e_own", "e2e", "tmp_path"),
        _test("a.py::unit", "unit"),
        _test("b.py::reads", "integration", "study_copy", "study"),
        _test("b.py::unit", "unit"),
        _test("c.py::one", "unit"),
        _test("d.py::proc", "integration", "tmp_path"),
        _test("e.py::e2e_reads", "e2e", "study"),
    ]
    order = [t.nodeid for t in study_readers_later(tests)]
    assert order == [
        "c.py::one",
        "d.py::proc",  # no study at all: they run while the shared study builds
        "b.py::reads",
        "b.py::unit",  # a module moves whole
        "e.py::e2e_reads",
        "a.py::e2e_own",
        "a.py::unit",
    ]


def test_only_the_shared_studys_builder_thread_starts_processes_beside_a_unit_test():
    done = {}

    def run(name):
        try:
            done[name] = subprocess.run(["true"]).returncode
        except StartsAProcess as e:
            done[name] = e

    for name in (StudyBuild.NAME, "another"):
        thread = threading.Thread(target=run, args=(name,), name=name)
        thread.start()
        thread.join()
    assert done[StudyBuild.NAME] == 0 and isinstance(done["another"], StartsAProcess)


def test_a_unit_test_cannot_start_a_process():
    with pytest.raises(StartsAProcess, match="mark it integration"):
        subprocess.run(["true"])
    with pytest.raises(StartsAProcess):
        multiprocessing.get_context("spawn").Process(target=print).start()
