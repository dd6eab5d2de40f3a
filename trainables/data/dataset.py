"""Labelled images -> fixed splits, and a class-weighted DDP sampler (augmentation: trainables.data.augment).

Pure torch/torchvision: no Ray, no MLflow. What --data holds is read by trainables.data.scan into a Source;
its class order is the one every trial, evaluation and logged model shares. The split is written once as a
manifest (write_manifest: path,label,split,version) that every trial, --resume and evaluation read, so they all
read the same images at the same versions.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

VAL_FRACTION = 0.1275  # share of each class held out for validation (WikiArt study: 12.75 %)
TEST_FRACTION = 0.1525  # share held out for the final test, never used for selection (15.25 %)


class DataError(ValueError):
    """The data the user pointed at cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class Splits:
    classes: list[str]
    paths: list[str]
    labels: np.ndarray  # int64, index into classes
    train: np.ndarray  # indices into paths
    val: np.ndarray
    test: np.ndarray
    versions: list[str] | None = None  # per path, "<bytes>:<mtime ns>" as scanned (None: a manifest from before them)


@dataclass(frozen=True)
class Source:
    """What --data holds after the scan (trainables.data.scan): usable images, the files skipped and why."""

    classes: list[str]
    paths: list[str]  # references: local paths, object URIs, Parquet rows (trainables.data.storage)
    labels: np.ndarray
    given_split: list[str] | None  # a CSV's or Parquet source's own split column, if any
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    warnings: list[str] = field(default_factory=list)
    info: list[tuple[str, int, int]] = field(default_factory=list)  # (format, width, height): checked files only
    versions: list[str] = field(default_factory=list)  # per path: storage.version, as listed or stat-ed
    origin: dict = field(default_factory=dict)  # data (the URI), kind (folder|objects|csv|parquet), label column...


def split_indices(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int):
    """Per-class (stratified) deterministic split; every class with >= 3 images keeps one in each part.
    Smaller classes go to train only (the caller warns)."""
    rng = np.random.default_rng(seed)
    parts = ([], [], [])
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = len(idx)
        n_test = max(1, round(n * test_fraction)) if n >= 3 else 0
        n_val = max(1, round(n * val_fraction)) if n >= 3 else 0
        parts[2].append(idx[:n_test])
        parts[1].append(idx[n_test : n_test + n_val])
        parts[0].append(idx[n_test + n_val :])
    return tuple(np.sort(np.concatenate(p)) for p in parts)


def make_splits(source: Source, val_fraction: float, test_fraction: float, seed: int) -> Splits:
    if source.given_split is not None:
        names = np.asarray(source.given_split)
        parts = [np.flatnonzero(names == n) for n in ("train", "val", "test")]
    else:
        parts = split_indices(source.labels, val_fraction, test_fraction, seed)
        small = [source.classes[c] for c, n in enumerate(np.bincount(source.labels)) if n < 3]
        if small:
            source.warnings.append(f"classes with fewer than 3 images go to train only (no val/test): {small}")
    return Splits(source.classes, source.paths, source.labels, *parts, versions=list(source.versions) or None)


def write_manifest(splits: Splits, path: Path) -> Path:
    """The split every trial and the final evaluation read: path,label,split,version (label = class name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    names = np.empty(len(splits.paths), dtype=object)
    for name, idx in (("train", splits.train), ("val", splits.val), ("test", splits.test)):
        names[idx] = name
    versions = splits.versions or [""] * len(splits.paths)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split", "version"])
        rows = zip(splits.paths, splits.labels, names, versions)
        w.writerows((p, splits.classes[c], n, v) for p, c, n, v in rows if n)
    return path


def read_manifest(path: str | Path, classes: list[str]) -> Splits:
    return parse_manifest(Path(path).read_text(encoding="utf-8"), classes)


def parse_manifest(text: str, classes: list[str]) -> Splits:
    """A manifest's CSV text (as write_manifest wrote it) -> Splits, labels indexed by `classes`."""
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    index = {c: i for i, c in enumerate(classes)}
    names = np.asarray([r["split"] for r in rows])
    versions = [r.get("version") or "" for r in rows]
    return Splits(
        classes,
        [r["path"] for r in rows],
        np.asarray([index[r["label"]] for r in rows], dtype=np.int64),
        *(np.flatnonzero(names == n) for n in ("train", "val", "test")),
        versions=versions if all(versions) else None,
    )


def class_weights(labels: np.ndarray, num_classes: int, power: float) -> torch.Tensor:
    """Loss weight per class ∝ count^-power, mean 1 over classes (0 = unweighted; the study used 0.5)."""
    counts = np.bincount(labels, minlength=num_classes).clip(min=1).astype(np.float64)
    w = counts**-power
    return torch.tensor(w / w.mean(), dtype=torch.float32)


class WeightedShardSampler(Sampler[int]):
    """Class-weighted sampling that shards correctly across DDP ranks.

    Each epoch the dataset is shuffled (seed, epoch) and dealt class by class to the ranks, so every rank
    owns a disjoint, class-stratified share. Each rank then draws `len(self)` indices from its own share
    with weight ∝ class_count^-power (global counts): power 0 = natural frequencies (a plain shuffle),
    1 = every class equally often. All ranks yield the same number of indices, so DDP steps stay in lockstep.
    """

    def __init__(
        self,
        labels: Sequence[int],
        power: float,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        num_samples: int | None = None,
    ):
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self.power, self.num_replicas, self.rank, self.seed = float(power), num_replicas, rank, seed
        total = num_samples or len(self.labels)
        self.per_rank = math.ceil(total / num_replicas)
        counts = torch.bincount(self.labels).double().clamp(min=1)
        self.weights = counts[self.labels] ** -self.power
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def rank_seed(self) -> int:
        """This epoch's seed for this rank's draws (trainables.data.loaders derives each draw's own from it)."""
        return (self.seed * 100_003 + self.epoch) * 1_009 + self.rank

    def shard(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        perm = torch.randperm(len(self.labels), generator=g)
        by_class = perm[torch.argsort(self.labels[perm], stable=True)]
        return by_class[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        own = self.shard()
        g = torch.Generator().manual_seed(self.rank_seed())
        if self.power == 0:  # natural frequencies: each own sample once, wrapped to the common length
            order = own[torch.randperm(len(own), generator=g)]
            order = order.repeat(math.ceil(self.per_rank / max(1, len(order))))[: self.per_rank]
        else:
            order = own[torch.multinomial(self.weights[own], self.per_rank, replacement=True, generator=g)]
        return iter(order.tolist())

    def __len__(self) -> int:
        return self.per_rank
