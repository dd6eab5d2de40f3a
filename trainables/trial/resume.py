"""A trial's *resume* state: everything needed to continue training after a lost worker, saved every epoch.

Pure torch (no Ray, no MLflow). The worker hands the folder to `ray.train.report(checkpoint=...)`, which keeps
the latest one (CheckpointConfig(num_to_keep=1)) in the study's storage; after a restart the loop reads it
back from `ray.train.get_checkpoint()`. Separate from the *best* checkpoint (checkpoint.py) that MLflow keeps.

Files: state.pt (rank 0: model, optimizer, scheduler, AMP scaler, step, running best, the metrics of every
epoch done) and rng-<rank>.pt (each rank's torch / numpy / python RNG states: every rank draws its own
augmentation); Ray merges the ranks' files into one checkpoint folder.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from trainables import weights_only

STATE, RNG = "state.pt", "rng-{rank}.pt"
# what to do about a resume checkpoint that needs pickle: only `tune.py --resume` of a study an older artsweep
# started can meet one (a lost worker resumes from files this code wrote)
REMEDY = "run the study again instead of resuming it (tune.py without --resume, or another --storage)"


@dataclass
class Progress:
    step: int = 0  # optimizer steps done (the scheduler's clock)
    best: float = math.nan  # running best of the objective
    history: list = field(default_factory=list)  # per finished epoch: the metrics reported for it

    @property
    def epochs(self) -> int:
        return len(self.history)


def save(folder: Path, rank: int, progress: Progress, model, optimizer, scheduler, scaler) -> Path:
    """Write this rank's RNG file (and on rank 0 the state file) into `folder`: tensors and plain values only, so
    load() reads them without pickle."""
    folder = Path(folder)
    rng = {"torch": torch.get_rng_state(), "numpy": _numpy_state(), "python": random.getstate()}  # python: ints
    weights_only.save(rng, folder / RNG.format(rank=rank))
    if rank == 0:
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler else None,
            "step": progress.step,
            "best": progress.best,
            "history": progress.history,
        }
        weights_only.save(weights_only.plain(state), folder / STATE)
    return folder


def load(folder: Path, rank: int, model, optimizer, scheduler, scaler) -> Progress:
    """Restore everything save() wrote into the live objects; returns the progress to continue from.
    weights_only.NeedsPickle for a file that needs pickle (an older artsweep's, or one altered in the storage)."""
    folder = Path(folder)
    state = weights_only.load(folder / STATE, "resume state", REMEDY)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state["scaler"]:
        scaler.load_state_dict(state["scaler"])
    rng = folder / RNG.format(rank=rank)
    if rng.is_file():  # a resized worker group has new ranks: they keep their fresh seeds
        r = weights_only.load(rng, "resume RNG state", REMEDY)
        torch.set_rng_state(r["torch"])
        np.random.set_state(_numpy_tuple(r["numpy"]))
        random.setstate(r["python"])
    return Progress(state["step"], state["best"], list(state["history"]))


def _numpy_state() -> dict:
    """NumPy's legacy global generator state as tensors and numbers (its get_state() holds an ndarray)."""
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "kind": kind,  # "MT19937"
        "keys": torch.from_numpy(keys.astype(np.int64)),  # 624 uint32 words
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached_gaussian),
    }


def _numpy_tuple(state: dict) -> tuple:
    """The tuple np.random.set_state takes, from _numpy_state()'s dict."""
    keys = state["keys"].numpy().astype(np.uint32)
    return state["kind"], keys, state["pos"], state["has_gauss"], state["cached_gaussian"]


def staging_dir() -> Path:
    """Where a report's folder (the resume checkpoint, with the best checkpoint at a new best) waits for Ray to copy
    it: this machine's artsweep cache, `reports/`, one `<pid>-...` folder per report. A process that dies inside a
    report (Tune kills its actors at a study's end; a trial stopped by ASHA may leave its thread blocked there)
    never removes its folder, so each call first removes the folders of processes that no longer exist: a
    leftover lives at most until the next report on the machine (they were found in /tmp, up to 74 MB each)."""
    import shutil

    import psutil

    from trainables.paths import cache_root

    root = cache_root() / "reports"
    root.mkdir(parents=True, exist_ok=True)
    for d in root.iterdir():
        pid = d.name.split("-", 1)[0]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(d, ignore_errors=True)
    return root
