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

STATE, RNG = "state.pt", "rng-{rank}.pt"


@dataclass
class Progress:
    step: int = 0  # optimizer steps done (the scheduler's clock)
    best: float = math.nan  # running best of the objective
    history: list = field(default_factory=list)  # per finished epoch: the metrics reported for it

    @property
    def epochs(self) -> int:
        return len(self.history)


def save(folder: Path, rank: int, progress: Progress, model, optimizer, scheduler, scaler) -> Path:
    folder = Path(folder)
    torch.save(
        {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
        folder / RNG.format(rank=rank),
    )
    if rank == 0:
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler else None,
                "step": progress.step,
                "best": progress.best,
                "history": progress.history,
            },
            folder / STATE,
        )
    return folder


def load(folder: Path, rank: int, model, optimizer, scheduler, scaler) -> Progress:
    """Restore everything save() wrote into the live objects; returns the progress to continue from."""
    folder = Path(folder)
    state = torch.load(folder / STATE, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state["scaler"]:
        scaler.load_state_dict(state["scaler"])
    rng = folder / RNG.format(rank=rank)
    if rng.is_file():  # a resized worker group has new ranks: they keep their fresh seeds
        r = torch.load(rng, weights_only=False)
        torch.set_rng_state(r["torch"])
        np.random.set_state(r["numpy"])
        random.setstate(r["python"])
    return Progress(state["step"], state["best"], list(state["history"]))
