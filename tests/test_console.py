"""The study's console: trial event lines, the progress line on a terminal, Ray's output moved to a log file."""

import io
import subprocess
import sys
import textwrap

import pytest

from sweep import budget
from sweep.console import Console
from sweep.events import TrialEvents, duration, ending, key_params, reason, rungs, short
from tests.conftest import ROOT
from trainables.metrics import BEST_KEY, OBJECTIVE_KEY


class FakeTrial:
    """What a Tune callback reads of a trial (Tune's own Trial needs a running controller to exist)."""

    def __init__(self, trial_id, config=None, last_result=None):
        self.trial_id, self.config, self.last_result = trial_id, config or {}, last_result or {}

    def __str__(self):
        return f"run_trial_{self.trial_id}"

    def get_error(self):
        return 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: bad batch size 7\n'


class Tty(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def console(monkeypatch):
    """The module's CONSOLE, writing to a string that says it is a terminal."""
    from sweep import console as module

    c = Console()
    c.out = Tty()
    monkeypatch.setattr(module, "CONSOLE", c)
    yield c
    c.stop_progress()


def result(epoch, value, best):
    return {"training_iteration": epoch, OBJECTIVE_KEY: value, BEST_KEY: best}


@pytest.mark.unit
def test_rungs_are_ashas_milestones():
    assert rungs(4, 1, 4) == [1]
    assert rungs(16, 1, 4) == [1, 4]
    assert rungs(30, 2, 3) == [2, 6, 18]
    assert rungs(1, 1, 4) == []


@pytest.mark.unit
def test_how_a_trial_ended_is_said_in_words(monkeypatch):
    b = budget.Budget(wall_s=60)
    monkeypatch.setattr(budget, "_ACTIVE", b)
    assert ending(FakeTrial("a", last_result=result(4, 0.5, 0.6)), 4, [1]).startswith(
        "finished: best val_macro_f1 0.6000"
    )
    assert ending(FakeTrial("b", last_result=result(1, 0.1, 0.1)), 4, [1]).startswith(
        "stopped by ASHA at rung 1 (epoch 1)"
    )
    b.cut.add("c")
    assert ending(FakeTrial("c", last_result=result(1, 0.1, 0.1)), 4, [1]).startswith(
        "stopped by the budget after epoch 1"
    )
    failed = FakeTrial("d", last_result=result(2, 0.1, 0.2))
    assert ending(failed, 4, [1], error=failed.get_error()) == "failed after 2 epoch(s): ValueError: bad batch size 7"


@pytest.mark.unit
def test_event_lines_and_a_progress_line_on_a_terminal(console, monkeypatch):
    monkeypatch.setattr(budget, "_ACTIVE", budget.Budget())
    events = TrialEvents(num_samples=3, max_epochs=2, milestones=[1])
    events.setup(stop=None, num_samples=3, total_num_samples=3)
    a, b = FakeTrial("a", {"lr": 0.0003, "batch_size": 32, "dropout": 0.5}), FakeTrial("b", {"cnn.lr": 0.01})
    events.on_trial_start(0, [], a)
    events.on_trial_start(0, [], b)
    assert events.status().startswith("trials 0/3 done | 2 running | 1 pending | elapsed")
    a.last_result = result(1, 0.25, 0.25)
    events.on_trial_result(0, [], a, a.last_result)
    a.last_result = result(2, 0.5, 0.5)
    events.on_trial_result(0, [], a, a.last_result)
    events.on_trial_complete(0, [], a)
    status = events.status()
    assert status.startswith("trials 1/3 done | 1 running | 1 pending | best val_macro_f1 0.5000 (run_trial_a)")
    assert "ETA" in status and "ETA ?" not in status
    out = console.out.getvalue()
    assert "run_trial_a started: lr=3.00e-04 batch_size=32\n" in out  # key params only
    assert "run_trial_b started: cnn.lr=0.01\n" in out
    assert "run_trial_a epoch 2/2: val_macro_f1 0.5000 (trial best 0.5000)" in out
    assert "run_trial_a finished: best val_macro_f1 0.5000 over 2 epochs" in out
    assert "trials 1/3 done" in out  # the status line was drawn on the "terminal"


@pytest.mark.unit
def test_plain_lines_and_no_progress_line_in_a_file(monkeypatch):
    from sweep import console as module

    c = Console()
    c.out = io.StringIO()
    monkeypatch.setattr(module, "CONSOLE", c)
    events = TrialEvents(num_samples=2, max_epochs=2, milestones=[1])
    events.setup(stop=None)
    events.on_trial_start(0, [], FakeTrial("a"))
    assert c.bar is None and c.out.getvalue().count("\n") == 1 and "\r" not in c.out.getvalue()


@pytest.mark.integration  # a child Python and its `echo`
def test_capture_sends_fds_to_the_log_and_keeps_artsweeps_lines(tmp_path):
    """Real file descriptors, in a child process: what Ray's processes and C++ logging write (fd 1 and 2)
    lands in the log; CONSOLE.line still reaches the original stdout; release() restores both."""
    script = textwrap.dedent(f"""
        import os, subprocess, sys
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from sweep.console import CONSOLE, say
        CONSOLE.capture(Path({str(tmp_path)!r}) / "early.log")
        print("python print to stdout"); sys.stdout.flush()
        os.write(2, b"C++ style write to fd 2\\n")
        subprocess.run(["echo", "a child process"])
        say("artsweep line")
        CONSOLE.move_log(Path({str(tmp_path)!r}) / "run" / "ray.log")
        os.write(1, b"after the move\\n")
        CONSOLE.release()
        print("after release")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "artsweep: artsweep line\nafter release\n"
    assert proc.stderr == ""
    log = (tmp_path / "run" / "ray.log").read_text()
    assert log == "python print to stdout\nC++ style write to fd 2\na child process\nafter the move\n"
    assert not (tmp_path / "early.log").exists()


@pytest.mark.unit
def test_small_words():
    assert duration(5) == "5s" and duration(125) == "2m05s" and duration(7380) == "2h03m"
    assert short("0.11827442586893322") == "0.118" and short(0.000141) == "1.41e-04" and short("deep_cnn") == "deep_cnn"
    assert short(64) == "64" and short("64") == "64"
    assert key_params({"family": "cnn", "cnn.arch": "resnet18", "cnn.dropout": 0.1}) == "family=cnn cnn.arch=resnet18"
    assert reason("just one line") == "just one line"


@pytest.mark.integration  # a child Python
def test_the_study_processs_warnings_reach_the_console_while_captured(tmp_path):
    script = textwrap.dedent(f"""
        import logging, sys
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from sweep.console import CONSOLE
        CONSOLE.capture(Path({str(tmp_path)!r}) / "ray.log")
        logging.getLogger("artsweep").warning("artsweep: MLflow did not take a write of run x")
        CONSOLE.release()
        logging.getLogger("artsweep").warning("after release: stderr as usual")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.stdout == "artsweep: MLflow did not take a write of run x\n"
    assert proc.stderr == "after release: stderr as usual\n"
    assert "MLflow did not take a write" in (tmp_path / "ray.log").read_text()
