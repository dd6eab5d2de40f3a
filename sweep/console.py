"""Where a study's lines go: artsweep's own reach the user's terminal (or file), with a live progress line on a
terminal; Ray's own output (its processes, Tune's tables, worker logs) goes to a log file in the run folder.

    CONSOLE.capture(path)      # from here on, file descriptors 1 and 2 (Ray, MLflow, C++ logs) write to `path`
    CONSOLE.line("...")        # artsweep's lines still reach the user's terminal or file
    CONSOLE.release()          # back to normal (the summary prints after this)

sweep.events.TrialEvents writes the trial events and keeps the progress line current.
`tune.py --verbose` captures nothing: Ray's output then interleaves with these lines as before.
"""

from __future__ import annotations

import atexit
import io
import logging
import os
import sys
from pathlib import Path
from typing import Optional, TextIO

from tqdm import tqdm


# shown when a trial starts (their study names end with these: `cnn.lr` in a --family all study);
# every other searched value is in the trial's MLflow run and the leaderboard
class Console:
    """artsweep's output stream, which survives redirecting the process's stdout and stderr to a log file."""

    def __init__(self):
        self.out: TextIO = sys.stdout
        self.log_path: Optional[Path] = None
        self.bar: Optional[tqdm] = None
        self._saved: Optional[tuple[int, int]] = None
        self._warnings = _Warnings(self)

    @property
    def tty(self) -> bool:
        return _isatty(self.out)

    def line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.clear()
        self.out.write(text + "\n")
        self.out.flush()
        if self.bar is not None:
            self.bar.refresh()

    def capture(self, path: Path) -> None:
        """Send fds 1 and 2 (and so every process Ray starts from here) to `path`; keep our own copy of stdout."""
        if self._saved is not None:
            return
        sys.stdout.flush()
        sys.stderr.flush()
        path.parent.mkdir(parents=True, exist_ok=True)
        tty = self.tty
        self._saved = (os.dup(1), os.dup(2))
        self.out = _Terminal(os.dup(1), tty)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        self.log_path = path
        logging.getLogger("artsweep").addHandler(self._warnings)  # this process's warnings stay in sight
        atexit.register(self.release)

    def move_log(self, path: Path) -> None:
        """The log file keeps its open descriptors when renamed (same file system), so it can move into the run
        folder once the study knows that folder's name."""
        if self.log_path is None or path == self.log_path:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(self.log_path, path)
            self.log_path = path
        except OSError:  # another file system: leave it where it is (the path printed is where it is)
            pass

    def release(self) -> None:
        """Undo capture(): the summary and any error after the study print as usual."""
        self.stop_progress()
        if self._saved is None:
            return
        logging.getLogger("artsweep").removeHandler(self._warnings)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)
        for fd in self._saved:
            os.close(fd)
        self._saved = None
        self.out.close()
        self.out = sys.stdout

    def start_progress(self, total: Optional[int]) -> None:
        """A status line under the event lines, on a terminal only (files and CI get plain lines)."""
        if self.tty and self.bar is None:  # a terminal that reports no size (a bare pty) gets 160 columns
            wide = _columns(self.out) > 0
            self.bar = tqdm(
                total=total,
                file=self.out,
                bar_format="{desc}",
                dynamic_ncols=wide,
                ncols=None if wide else 160,
                leave=False,
            )

    def progress(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_description_str(text, refresh=True)

    def stop_progress(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class _Warnings(logging.Handler):
    """The study process's own warnings (logger "artsweep": an MLflow write retried, a run it could not close) on
    the console as well as in the log. Those of trial processes stay in the log."""

    def __init__(self, console: Console):
        super().__init__(logging.WARNING)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        self.console.line(text if text.startswith("artsweep") else f"artsweep: {text}")
        sys.stderr.write(text + "\n")  # and in the log, among what led to it (fd 2 is the log while captured)
        sys.stderr.flush()


class _Terminal(io.TextIOWrapper):
    """A dup of the original stdout that still answers isatty() as the original did (tqdm and rich ask)."""

    def __init__(self, fd: int, tty: bool):
        super().__init__(io.FileIO(fd, "w"), encoding="utf-8", errors="replace", line_buffering=True)
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def _columns(stream) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return 0


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


CONSOLE = Console()


def say(message: str) -> None:
    """One artsweep line (the dataset report, warnings, where things are)."""
    CONSOLE.line(f"artsweep: {message}")
