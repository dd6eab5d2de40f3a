"""Checks that refuse, before Ray starts, what cannot work: each raises UsageError with one line saying what
is wrong and what to do. (sweep.settings calls them; resources that only Ray knows are checked in
sweep.study.start_ray the moment it has joined.)"""

from __future__ import annotations

import fcntl
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from search_spaces.space import SearchSpace
from sweep.errors import UsageError
from trainables.config import RunSettings
from trainables.data import cache
from trainables.paths import local_path, sqlite_file
from trainables.pretrained import WeightsError, available

MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 1024  # px: below 16 a stride-16 ViT has one patch; 1024 is 4x ViT-L/14's 518


def image_size(s: RunSettings, num_images: int) -> None:
    if s.image_size and not MIN_IMAGE_SIZE <= s.image_size <= MAX_IMAGE_SIZE:
        side = cache.cached_side(s.image_size)
        gb = num_images * side * side * 3 / 1e9
        raise UsageError(
            f"--image-size {s.image_size} is outside [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}] px: its decode "
            f"cache alone would take {gb:,.1f} GB for {num_images} images; pick a size in that range"
        )


def workers(s: RunSettings, cpus: int, gpus: int, where: str) -> None:
    """Each Train worker needs a GPU, or on a CPU-only cluster a whole CPU (gloo)."""
    most = gpus or cpus
    if s.workers_per_trial > most:
        kind = "GPUs" if gpus else "CPUs"
        raise UsageError(
            f"--workers-per-trial {s.workers_per_trial} is more than the {most} {kind} {where} can ever "
            f"run; use at most {most}"
        )


def local_capacity() -> tuple[int, int]:
    """(CPUs, GPUs) of this machine, as a local Ray cluster will count them (CUDA_VISIBLE_DEVICES, else the
    NVIDIA device files: no CUDA initialisation here)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        gpus = len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    else:
        gpus = len([p for p in Path("/dev").glob("nvidia[0-9]*")])
    return os.cpu_count() or 1, gpus


def storage(path: str) -> None:
    """A local --storage folder must be creatable and writable (URIs are checked by their own client later)."""
    local = local_path(path)
    if local is None:
        return
    folder = Path(local).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise UsageError(
            f"--storage {path}: cannot write there ({e.strerror or e}); pass a folder you can write to "
            "or an s3:// / gs:// URI"
        ) from None


def weights(space: SearchSpace, s: RunSettings) -> None:
    """With --pretrained timm, every architecture the study can draw has weights (--weights-dir, the Hugging Face
    cache, or the network when it answers); the message names every missing one."""
    if s.pretrained != "timm":
        return
    missing = []
    for fam in (f for f in space.families if f.pretrained):
        for arch, name in fam.arch_choices(s.standins).items():
            if s.arch in (None, arch):
                try:
                    available(name, s.weights_dir or None)
                except WeightsError as e:
                    missing.append((name, e))
    if len(missing) == 1:
        raise UsageError(str(missing[0][1]))
    if missing:
        raise UsageError(f"no pretrained weights for {', '.join(n for n, _ in missing)} ({missing[0][1]})")


@contextmanager
def store_lock(uri: str):
    """Serialise the first use of a new SQLite store: MLflow's schema migration races when two processes create
    one at once and can leave it unusable. Other stores need no lock."""
    db = sqlite_file(uri)
    if db is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
