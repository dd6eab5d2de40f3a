"""A report's folder (resume and best checkpoints waiting for Ray) outlives a process killed inside the report:
the next report on the machine removes the folders of processes that no longer exist, and only those."""

import os

import pytest

from trainables.trial import resume

pytestmark = pytest.mark.unit
NO_SUCH_PID = 2**22 + 12_345  # above Linux's largest pid_max (4,194,304): never a live process


def test_folders_of_dead_processes_go_and_live_ones_stay(tmp_path, monkeypatch):
    monkeypatch.setenv("ARTSWEEP_CACHE", str(tmp_path))
    root = tmp_path / "reports"
    dead, live, other = root / f"{NO_SUCH_PID}-abc", root / f"{os.getpid()}-def", root / "notes"
    for d in (dead, live, other):
        d.mkdir(parents=True)
        (d / "state.pt").write_bytes(b"\0" * 1024)
    assert resume.staging_dir() == root
    assert not dead.exists() and live.exists() and other.exists()  # a name that is not <pid>-... is not ours
