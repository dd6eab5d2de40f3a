"""A decode cache shared by every trial on a node: decode + resize each image once, read it back by mmap.

Key: the files (path, size, mtime), the cached side and the resize policy, so a changed file, another
--image-size or another policy builds a new cache and nothing else does. Layout under
~/.cache/artsweep/decoded/<key>/: images.npy (uint8 [N, S, S, 3], memory-mapped), meta.json (written last:
its presence means complete). A file lock makes concurrent trials wait for one builder.
Augmentation still runs per sample, after the cache (CachedImages).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from trainables import decode

VERSION = 1
ROOT = Path(os.environ.get("ARTSWEEP_CACHE", Path.home() / ".cache" / "artsweep")) / "decoded"
POLICIES = ("crop", "letterbox")   # crop: shorter side to S, centre crop; letterbox: longer side to S, pad


def cached_side(image_size: int) -> int:
    """Cache a margin around the model input (validation resizes 1.14x then centre-crops)."""
    return int(round(image_size * 1.14))


def cache_key(paths: Sequence[str], side: int, policy: str) -> str:
    h = hashlib.sha1(f"v{VERSION}|{side}|{policy}".encode())
    for p in paths:
        st = os.stat(p)
        h.update(f"|{p}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def fit(img: torch.Tensor, side: int, policy: str) -> np.ndarray:
    """uint8 [3, H, W] -> uint8 [side, side, 3], aspect preserved (Pillow's antialiased bicubic)."""
    pil = Image.fromarray(img.permute(1, 2, 0).numpy())
    w, h = pil.size
    scale = side / (min(w, h) if policy == "crop" else max(w, h))
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    pil = pil.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=3.0)
    if policy == "crop":
        left, top = (nw - side) // 2, (nh - side) // 2
        return np.asarray(pil.crop((left, top, left + side, top + side)))
    out = np.zeros((side, side, 3), np.uint8)   # letterbox: black padding, image centred
    top, left = (side - nh) // 2, (side - nw) // 2
    out[top:top + nh, left:left + nw] = np.asarray(pil)
    return out


def _build(folder: Path, paths: Sequence[str], side: int, policy: str) -> None:
    tmp = folder / "images.partial.npy"
    mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), side, side, 3))
    bad, t0, shown = [], time.monotonic(), -1
    for i, p in enumerate(paths):
        try:
            mm[i] = fit(decode.decode_rgb(p, max_side=side * 2), side, policy)
        except decode.BadImage as e:
            bad.append({"index": i, "path": p, "reason": str(e)})
        pct = 100 * (i + 1) // len(paths)
        if pct // 5 != shown:
            shown = pct // 5
            rate = (i + 1) / max(1e-6, time.monotonic() - t0)
            print(f"artsweep: decode cache {pct:3d}% ({i + 1}/{len(paths)}, {rate:.0f} images/s)",
                  file=sys.stderr, flush=True)
    mm.flush()
    del mm
    tmp.rename(folder / "images.npy")
    meta = {"key": folder.name, "side": side, "policy": policy, "n": len(paths), "bad": bad}
    (folder / "meta.json").write_text(json.dumps(meta))


def open_or_build(paths: Sequence[str], image_size: int, policy: str = "crop", root: Path = ROOT):
    """(uint8 memmap [N, S, S, 3], meta dict, built_here). Builds at most once per node and key."""
    if policy not in POLICIES:
        raise ValueError(f"resize policy must be one of {POLICIES}, got {policy!r}")
    side = cached_side(image_size)
    folder = Path(root) / cache_key(paths, side, policy)
    built = False
    if not (folder / "meta.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)          # another trial building it: wait, then reuse
            if not (folder / "meta.json").exists():
                _build(folder, paths, side, policy)
                built = True
    meta = json.loads((folder / "meta.json").read_text())
    return np.load(folder / "images.npy", mmap_mode="r"), meta, built


class CachedImages(Dataset):
    """Samples `indices` of a decode cache; per-sample augmentation runs on the cached uint8 tensor."""

    def __init__(self, images: np.ndarray, indices: Sequence[int], labels: Sequence[int], transform):
        self.images, self.indices = images, np.asarray(indices)
        self.labels, self.transform = [int(x) for x in labels], transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        img = torch.from_numpy(np.array(self.images[self.indices[i]])).permute(2, 0, 1)  # copy out of the mmap
        return self.transform(img), self.labels[i]
