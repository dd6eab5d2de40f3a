"""A decode cache shared by every trial on a node, and by every node of a study: each image is decoded and resized
once, then read back by mmap.

Key: the images' references and versions (files, objects or Parquet rows, with size and mtime: the study's
manifest records them), the cached side and the resize policy, so other images, another --image-size or another
policy makes a new cache and nothing else does; a build first checks the versions still hold. Layout under decoded_root()/<key>/
(ARTSWEEP_CACHE/decoded): images.npy (uint8 [N, S, S, 3], memory-mapped), meta.json (written last: its presence
means complete). A file lock makes concurrent trials on a node wait for one builder or downloader.

Getting a missing cache, in order: (1) with `storage` (the study's Ray storage: a path, file://, s3://, gs://...),
download <storage>/decoded/<key>/ if a node published it: no decoding; (2) else build it: read each image (a file,
an object streamed into memory, or a Parquet row, by row group) and decode.decode_fit it (a large JPEG is decoded at 1/2-1/8 scale by libjpeg, then an antialiased resize) in a pool of spawned
processes (default: one per CPU, at most one per IMAGES_PER_PROCESS images), each writing its rows of
images.npy: byte-identical for any number of processes; (3) after a build, publish it to storage (images.npy,
then meta.json) for the other nodes. A storage failure only warns: the node builds, or keeps what it built.
meta["source"]: "built" or "downloaded".
Trials read it through trainables.data.loaders.CachedImages (per-sample crop + flip after the cache).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import multiprocessing as mp
import os
import socket
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from trainables.data import decode
from trainables.data.dataset import DataError
from trainables.data.storage import tasks as read_tasks
from trainables.data.storage import versions as current_versions
from trainables.paths import cache_root

VERSION = 2  # 2: reduced-scale JPEG decoding, area-averaging resize (pixels differ from version 1 caches)
POLICIES = ("crop", "letterbox")  # crop: shorter side to S, centre crop; letterbox: longer side to S, pad
# Auto pool size: at most one process per this many images. A spawned process re-imports the caller's main
# module (a Ray worker: ~1-2 s), worth it only with seconds of decoding (~400 images/s per process) ahead.
IMAGES_PER_PROCESS = 500
PROGRESS_S = 30.0  # not on a terminal: a progress line at least this often (s), besides one per 25 %


def decoded_root() -> Path:
    """This node's decode caches, one folder per key."""
    return cache_root() / "decoded"


def cached_side(image_size: int) -> int:
    """Cache a margin around the model input (validation resizes 1.14x then centre-crops)."""
    return int(round(image_size * 1.14))


def cache_key(paths: Sequence[str], side: int, policy: str, versions: Sequence[str] | None = None) -> str:
    """From the references and their versions (storage.version, as the study's manifest recorded them; without
    them, each local file's size and mtime now: FileNotFoundError for a missing one)."""
    if versions is None:
        versions = [f"{st.st_size}:{st.st_mtime_ns}" for st in map(os.stat, paths)]
    h = hashlib.sha1(f"v{VERSION}|{side}|{policy}".encode())
    for p, v in zip(paths, versions):
        h.update(f"|{p}|{v.replace(':', '|')}".encode())  # the same key as before versions were recorded
    return h.hexdigest()[:20]


def check_versions(paths: Sequence[str], versions: Sequence[str]) -> None:
    """DataError unless every file or object is still at its recorded version: the study's split, cache and
    results belong to those bytes, and a cache built from others would silently differ."""
    now = current_versions(paths)
    changed = [i for i, (a, b) in enumerate(zip(versions, now)) if a != b]
    if changed:
        i = changed[0]
        raise DataError(
            f"{len(changed):,} of the study's {len(paths):,} images changed or are missing since the study scanned "
            f"them (e.g. {paths[i]}: {versions[i]} -> {now[i] or 'missing'}); run where the study's data is as it "
            "was, or start a new study on the data as it is now"
        )


def fit(img: torch.Tensor, side: int, policy: str) -> np.ndarray:
    """uint8 [3, H, W] -> uint8 [side, side, 3], aspect preserved, with the cache's own resize (decode.fit_image):
    what serving (checkpoint.Classifier) applies to a decoded upload."""
    return decode.fit_image(Image.fromarray(img.permute(1, 2, 0).numpy()), side, policy)


def pool_size(n: int, processes: int | None) -> int:
    """Processes for decoding n images: `processes` (>= 1), or by default the CPUs this process may run on,
    capped by IMAGES_PER_PROCESS; never more than the images, and 1 in a daemonic process (a multiprocessing
    pool's worker), which may not start any."""
    if mp.current_process().daemon:
        return 1
    if processes is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        processes = min(cpus, n // IMAGES_PER_PROCESS)
    return max(1, min(int(processes), n))


class _Progress:
    """On a terminal, a live bar (tqdm) on stderr; elsewhere (files, CI, Ray workers' logs) one line per 25 % or
    per PROGRESS_S seconds: percent, count, rate and time left."""

    def __init__(self, n: int):
        self.n, self.done, self.t0 = n, 0, time.monotonic()
        self.shown_pct, self.shown_t = 0, self.t0
        self.bar = (
            tqdm(total=n, desc="artsweep: decode cache", unit="img", file=sys.stderr, dynamic_ncols=True, leave=False)
            if sys.stderr.isatty()
            else None
        )

    def add(self, k: int) -> None:
        self.done += k
        if self.bar is not None:
            self.bar.update(k)
            if self.done >= self.n:
                self.bar.close()
            return
        now, pct = time.monotonic(), 100 * self.done // max(1, self.n)
        if pct // 25 == self.shown_pct // 25 and now - self.shown_t < PROGRESS_S and self.done < self.n:
            return
        self.shown_pct, self.shown_t = pct, now
        rate = self.done / max(1e-6, now - self.t0)
        eta = (self.n - self.done) / max(rate, 1e-6)
        print(
            f"artsweep: decode cache {pct:3d}% ({self.done:,}/{self.n:,}, {rate:,.0f} images/s, ETA {eta:,.0f} s)",
            file=sys.stderr,
            flush=True,
        )


def _build(folder: Path, paths: Sequence[str], side: int, policy: str, processes: int | None) -> dict:
    """Decodes every image into folder/images.npy; the meta to write. Bad files stay black rows, listed in meta."""
    n, procs, t0 = len(paths), pool_size(len(paths), processes), time.monotonic()
    tmp = folder / "images.partial.npy"
    mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, side, side, 3))
    offset = mm.offset  # the header's size: row i starts at offset + i * side * side * 3
    del mm
    chunk = max(4, min(64, n // (32 * procs)))  # images per task: ~32 tasks per process keep the last one short
    tasks = [(str(tmp), offset, a, list(paths[a:b]), side, policy) for a, b in read_tasks(paths, chunk)]
    progress, bad = _Progress(n), []
    if procs == 1:
        for k, errors in map(decode.decode_into, tasks):
            bad += errors
            progress.add(k)
    else:  # spawn, not fork: callers are Ray workers with threads running
        with mp.get_context("spawn").Pool(procs) as pool:
            for k, errors in pool.imap_unordered(decode.decode_into, tasks):
                bad += errors
                progress.add(k)
    tmp.rename(folder / "images.npy")
    return {
        "key": folder.name,
        "side": side,
        "policy": policy,
        "n": n,
        "source": "built",
        "host": socket.gethostname(),
        "processes": procs,
        "seconds": round(time.monotonic() - t0, 1),
        "bad": [{"index": i, "path": paths[i], "reason": reason} for i, reason in sorted(bad)],
    }


def _remote(storage: str):
    """(pyarrow FileSystem, path of the decoded/ folder in it) for a Ray storage path or URI."""
    from pyarrow import fs as pafs

    uri = storage if "://" in storage else Path(storage).expanduser().resolve().as_uri()
    filesystem, base = pafs.FileSystem.from_uri(uri)
    return filesystem, f"{base.rstrip('/')}/decoded"


def _download(storage: str, folder: Path) -> dict | None:
    """The published meta, after copying the published images.npy into folder; None if none is published."""
    from pyarrow import fs as pafs

    filesystem, base = _remote(storage)
    src = f"{base}/{folder.name}"
    if filesystem.get_file_info(f"{src}/meta.json").type != pafs.FileType.File:
        return None
    with filesystem.open_input_stream(f"{src}/meta.json") as f:
        meta = json.loads(f.read())
    t0, tmp = time.monotonic(), folder / "images.download.npy"
    pafs.copy_files(
        f"{src}/images.npy", str(tmp), source_filesystem=filesystem, destination_filesystem=pafs.LocalFileSystem()
    )
    shape = np.load(tmp, mmap_mode="r").shape  # a short copy fails here, not in a trial
    if shape != (meta["n"], meta["side"], meta["side"], 3):
        raise ValueError(f"published images.npy is {shape}, meta says {meta['n']} x {meta['side']} px")
    tmp.rename(folder / "images.npy")
    seconds, mib = time.monotonic() - t0, (folder / "images.npy").stat().st_size / 2**20
    print(
        f"artsweep: decode cache downloaded from {storage} ({mib:,.0f} MiB in {seconds:.1f} s, "
        f"{mib / max(seconds, 1e-6):,.0f} MiB/s)",
        file=sys.stderr,
        flush=True,
    )
    return {
        **meta,
        "source": "downloaded",
        "built_by": meta.get("host"),
        "host": socket.gethostname(),
        "downloaded_from": storage,
        "seconds": round(seconds, 1),
    }


def _publish(storage: str, folder: Path) -> None:
    """Copies folder's images.npy, then meta.json, to <storage>/decoded/<key>/ unless already there whole.
    On a local or shared file system each lands under a temporary name first (rename is atomic there);
    on object stores an upload appears whole."""
    from pyarrow import fs as pafs

    filesystem, base = _remote(storage)
    dst, t0 = f"{base}/{folder.name}", time.monotonic()
    meta, images = filesystem.get_file_info([f"{dst}/meta.json", f"{dst}/images.npy"])
    if meta.type == pafs.FileType.File and images.size == (folder / "images.npy").stat().st_size:
        return  # another node published the same key (the same bytes); a damaged copy is replaced
    filesystem.create_dir(dst, recursive=True)
    local = isinstance(filesystem, pafs.LocalFileSystem)
    for name in ("images.npy", "meta.json"):
        part = f"{dst}/{name}.{socket.gethostname()}-{os.getpid()}.partial" if local else f"{dst}/{name}"
        try:
            pafs.copy_files(
                str(folder / name), part, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=filesystem
            )
            if local:
                filesystem.move(part, f"{dst}/{name}")
        except Exception:
            with contextlib.suppress(Exception):  # no half-copied file left behind where it can be removed
                filesystem.delete_file(part)
            raise
    seconds, mib = time.monotonic() - t0, (folder / "images.npy").stat().st_size / 2**20
    print(
        f"artsweep: decode cache published to {storage}/decoded/{folder.name} ({mib:,.0f} MiB in {seconds:.1f} s)",
        file=sys.stderr,
        flush=True,
    )


def _warn(action: str, storage: str, e: Exception) -> None:
    print(
        f"artsweep: warning: could not {action} the decode cache in {storage} ({type(e).__name__}: {e}); "
        "going on without it",
        file=sys.stderr,
        flush=True,
    )


def _obtain(folder: Path, paths: Sequence[str], versions, side: int, policy: str, processes, published) -> bool:
    """Downloads or builds folder's cache (caller holds the lock); True when built here."""
    meta = None
    if published:
        try:
            meta = _download(published, folder)
        except Exception as e:  # unreachable storage, missing credentials, a short copy: build instead
            _warn("download", published, e)
            (folder / "images.download.npy").unlink(missing_ok=True)
    built = meta is None
    if built:
        if versions is not None:
            check_versions(paths, versions)
        meta = _build(folder, paths, side, policy, processes)
    tmp = folder / "meta.partial.json"
    tmp.write_text(json.dumps(meta))
    tmp.rename(folder / "meta.json")
    return built


def open_or_build(
    paths: Sequence[str],
    image_size: int,
    policy: str = "crop",
    root: Path | None = None,
    *,
    processes: int | None = None,
    storage: str | None = None,
    versions: Sequence[str] | None = None,
):
    """(uint8 memmap [N, S, S, 3], meta dict, built_here: True only when this call decoded the images), under
    `root` (default decoded_root()). `paths`: references (trainables.data.storage); `versions`: theirs as the
    study's manifest recorded them (a build first checks they still hold: DataError otherwise).
    A node missing the cache downloads it from `storage` if published there, else builds it with `processes`
    processes (default: pool_size) and publishes it there. At most one builder or downloader per node and key."""
    if policy not in POLICIES:
        raise ValueError(f"resize policy must be one of {POLICIES}, got {policy!r}")
    side = cached_side(image_size)
    folder = Path(root or decoded_root()) / cache_key(paths, side, policy, versions)
    built = False
    if not (folder / "meta.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another trial building or downloading it: wait, then reuse
            if not (folder / "meta.json").exists():
                built = _obtain(folder, paths, versions, side, policy, processes, storage)
    if built and storage:  # outside the lock: trials on this node need not wait for the upload
        try:
            _publish(storage, folder)
        except Exception as e:
            _warn("publish", storage, e)
    meta = json.loads((folder / "meta.json").read_text())
    return np.load(folder / "images.npy", mmap_mode="r"), meta, built
