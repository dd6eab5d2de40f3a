"""Checkpoint files that load without pickle: every file artsweep writes with torch.save is read back with
`torch.load(weights_only=True)`, which rebuilds only tensors, numbers, strings, None and plain containers (dict,
list, tuple) and never calls a function the file names. A file that needs more (an older artsweep's, which stored
NumPy values, or one altered to run code when unpickled) is refused with one line, never loaded with pickle.

Whoever can write an MLflow artifact or the study's --storage can write these files, so they are data, not code.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import torch


class NeedsPickle(ValueError):
    """A checkpoint file that only pickle could load: refused, since unpickling can run any code."""


def plain(value):
    """`value` with NumPy scalars and arrays as Python numbers and lists, in dicts, lists and tuples at any depth:
    what metrics and Optuna hand over, in the form weights_only loading accepts."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [plain(v) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return value


def save(obj, path: Path) -> Path:
    """torch.save `obj` to `path`, then check that load() will take it back: a value that needs pickle (a NumPy
    scalar, a class of ours) fails here, when it is written, not when a lost worker resumes from it."""
    torch.save(obj, path)
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    if unsafe:
        raise TypeError(f"{path} would need pickle to load ({', '.join(unsafe)}): store tensors and plain values")
    return Path(path)


def load(path: Path, what: str, remedy: str, map_location: str = "cpu"):
    """`path` as save() wrote it, loaded with weights_only=True; NeedsPickle (one line: the file, what it needs,
    `remedy`) for a file that needs pickle. `what` names the file for a reader ("trial checkpoint")."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise NeedsPickle(
            f"{what} {path} needs pickle to load ({_needs(path, e)}), which can run any code, so it is refused: "
            f"it was written by an older artsweep or altered since; {remedy}"
        ) from None


def _needs(path: Path, error: pickle.UnpicklingError) -> str:
    """What a refused file would make pickle import: every global it names (read from its opcodes, nothing run),
    else the one torch's error names (a file in torch's legacy, non-zip format)."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a zip checkpoint
        names = []
    found = re.search(r"GLOBAL ([\w.]+)", str(error))
    return ", ".join(names) or (found.group(1) if found else "values other than tensors, numbers and containers")
