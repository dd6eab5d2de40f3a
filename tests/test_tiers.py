"""The test tiers hold (tests/conftest.py): a run stops when a test is in no tier or in several, and a unit test
cannot start a process."""

import multiprocessing
import subprocess
from types import SimpleNamespace

import pytest

from tests.conftest import StartsAProcess, pytest_collection_modifyitems

pytestmark = pytest.mark.unit


def _item(nodeid: str, *marks: str) -> SimpleNamespace:
    """What the collection hook reads of a test: its id and its marks."""
    return SimpleNamespace(nodeid=nodeid, iter_markers=lambda: [SimpleNamespace(name=m) for m in marks])


def test_a_test_in_no_tier_or_in_two_stops_the_run():
    ok = _item("ok", "unit", "fault")  # one tier; other marks are free
    pytest_collection_modifyitems([ok])
    with pytest.raises(pytest.UsageError, match=r"2 test\(s\)(?s:.*)none: no tier\n  two: e2e, unit$"):
        pytest_collection_modifyitems([ok, _item("none", "gpu"), _item("two", "unit", "e2e")])


def test_a_unit_test_cannot_start_a_process():
    with pytest.raises(StartsAProcess, match="mark it integration"):
        subprocess.run(["true"])
    with pytest.raises(StartsAProcess):
        multiprocessing.get_context("spawn").Process(target=print).start()
