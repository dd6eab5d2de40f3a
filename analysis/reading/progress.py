"""Progress of a long step (prediction per batch, the evaluation's stages) on stderr: a bar on a terminal,
plain lines elsewhere (a log, CI)."""

from __future__ import annotations

import sys

from tqdm import tqdm


class _Lines:
    """tqdm's stream off a terminal (a log, CI): each refresh a plain line, not redrawn in place with \\r."""

    def __init__(self, stream):
        self.stream, self.last = stream, ""

    def write(self, s: str) -> None:
        line = s.strip("\r\n ")
        if line and line != self.last:  # tqdm draws its last state again when it closes
            self.stream.write(line + "\n")
            self.last = line

    def flush(self) -> None:
        self.stream.flush()


def progress(iterable=None, every_s: float = 10.0, **kw) -> tqdm:
    """tqdm on stderr: a bar redrawn in place on a terminal, elsewhere a plain line at most every `every_s`."""
    tty = sys.stderr.isatty()
    return tqdm(
        iterable,
        file=sys.stderr if tty else _Lines(sys.stderr),
        mininterval=0.1 if tty else every_s,
        dynamic_ncols=tty,
        **kw,
    )


def step(steps: tqdm, desc: str) -> None:
    """One step of `steps` done; `desc` the one it starts."""
    steps.set_description_str(desc, refresh=False)
    steps.update()
