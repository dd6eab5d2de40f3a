"""The test tiers hold (tests/conftest.py): a run stops when a test is in no tier or in several, and a unit test
cannot start a process; the xdist workers take whole modules in the order and groups of `in_groups`, and a test
`alone` has the machine to itself (`turn`)."""

import multiprocessing
import subprocess
import threading
from types import SimpleNamespace

import pytest

from tests.conftest import SHARED_STUDY, StartsAProcess, check_tiers, in_groups, turn

pytestmark = pytest.mark.unit


def _item(nodeid: str, *marks: str) -> SimpleNamespace:
    """What the collection hook reads of a test: its id and its marks."""
    return SimpleNamespace(nodeid=nodeid, iter_markers=lambda: [SimpleNamespace(name=m) for m in marks])


def test_a_test_in_no_tier_or_in_two_stops_the_run():
    ok = _item("ok", "unit", "fault")  # one tier; other marks are free
    check_tiers([ok])
    with pytest.raises(pytest.UsageError, match=r"2 test\(s\)(?s:.*)none: no tier\n  two: e2e, unit$"):
        check_tiers([ok, _item("none", "gpu"), _item("two", "unit", "e2e")])


class _Test(SimpleNamespace):
    """What the grouping reads of a test: its id, its fixtures' closure and its marks; it adds an xdist_group."""

    def __init__(self, nodeid: str, marks: tuple, fixtures: tuple = ()):
        super().__init__(nodeid=nodeid, fixturenames=fixtures, marks=[SimpleNamespace(name=m) for m in marks])

    def iter_markers(self, name=None):
        return [m for m in self.marks if name in (None, m.name)]

    def add_marker(self, mark):
        self.marks.append(SimpleNamespace(name=mark.name, args=mark.args))

    @property
    def group(self) -> str:
        return self.iter_markers("xdist_group")[0].args[0]


def test_whole_modules_as_groups_the_study_first_then_by_tier_and_alone_last():
    tests = [
        _Test("a.py::e2e_own", ("e2e",), ("tmp_path",)),
        _Test("a.py::unit", ("unit",)),
        _Test("b.py::reads", ("integration",), ("study_copy", "study")),
        _Test("b.py::unit", ("unit",)),
        _Test("c.py::one", ("unit",)),
        _Test("d.py::proc", ("integration",), ("tmp_path",)),
        _Test("e.py::e2e_reads", ("e2e",), ("study",)),
        _Test("f.py::timed", ("e2e", "alone")),
        _Test("f.py::unit", ("unit",)),
    ]
    order = in_groups(tests)
    assert [(t.nodeid, t.group) for t in order] == [
        ("b.py::reads", SHARED_STUDY),  # its readers: one group, and the first a worker takes
        ("b.py::unit", SHARED_STUDY),  # a module moves whole
        ("e.py::e2e_reads", SHARED_STUDY),
        ("a.py::e2e_own", "a.py"),  # studies of their own
        ("a.py::unit", "a.py"),
        ("d.py::proc", "d.py"),  # processes
        ("c.py::one", "c.py"),  # unit
        ("f.py::timed", "f.py"),  # alone: last
        ("f.py::unit", "f.py"),
    ]


def _hold(lock, alone, entered, release):
    with turn(lock, alone):
        entered.set()
        release.wait(10)


def test_a_test_alone_waits_for_the_running_test_and_the_next_waits_for_it(tmp_path):
    """Three workers' turns (threads: flock locks belong to each open file, so they contend as processes do)."""
    lock, ev = tmp_path / "turn.lock", {k: (threading.Event(), threading.Event()) for k in ("running", "alone", "next")}
    start = {k: threading.Thread(target=_hold, args=(lock, k == "alone", *ev[k])) for k in ev}
    start["running"].start()
    assert ev["running"][0].wait(5)
    start["alone"].start()
    assert not ev["alone"][0].wait(0.5)  # a test is running: the one alone waits
    start["next"].start()
    assert not ev["next"][0].wait(0.5)
    ev["running"][1].set()  # the running test ends: the one alone goes first, though the next one asked too
    assert ev["alone"][0].wait(5) and not ev["next"][0].wait(0.5)
    ev["alone"][1].set()
    assert ev["next"][0].wait(5)
    ev["next"][1].set()
    for thread in start.values():
        thread.join(5)


def test_a_unit_test_cannot_start_a_process():
    with pytest.raises(StartsAProcess, match="mark it integration"):
        subprocess.run(["true"])
    with pytest.raises(StartsAProcess):
        multiprocessing.get_context("spawn").Process(target=print).start()
