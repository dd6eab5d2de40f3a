"""Labelled image folders -> fixed splits -> augmented tensors, and a class-weighted DDP sampler.

Pure torch/torchvision: no Ray, no MLflow. A folder dataset is `root/<class>/<...>/image`, class names
sorted so every trial, evaluation and logged model shares one order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class DataError(ValueError):
    """The data the user pointed at cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class Splits:
    classes: list[str]
    paths: list[str]
    labels: np.ndarray            # int64, index into classes
    train: np.ndarray             # indices into paths
    val: np.ndarray
    test: np.ndarray


def scan_folder(root: str | Path) -> tuple[list[str], list[str], np.ndarray]:
    """(classes, paths, labels) of a folder with one sub-folder per class, files at any depth."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"--data {root}: no such folder; pass a folder with one sub-folder per class")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths, labels = [], []
    for ci, c in enumerate(classes):
        files = sorted(p for p in (root / c).rglob("*")
                       if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file())
        paths += [str(p) for p in files]
        labels += [ci] * len(files)
    if len([c for c in set(labels)]) < 2:
        raise DataError(f"--data {root}: found {len(set(labels))} class sub-folder(s) with images; "
                        "need at least 2 (layout: DATA/<class name>/<image files>)")
    return classes, paths, np.asarray(labels, dtype=np.int64)


def split_indices(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int):
    """Per-class (stratified) deterministic split; every class with >= 3 images keeps one in each part."""
    rng = np.random.default_rng(seed)
    parts = ([], [], [])
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = len(idx)
        n_test = max(1, round(n * test_fraction)) if n >= 3 else 0
        n_val = max(1, round(n * val_fraction)) if n >= 3 else 0
        parts[2].append(idx[:n_test])
        parts[1].append(idx[n_test:n_test + n_val])
        parts[0].append(idx[n_test + n_val:])
    return tuple(np.sort(np.concatenate(p)) for p in parts)


def load_splits(root: str | Path, val_fraction: float, test_fraction: float, seed: int) -> Splits:
    classes, paths, labels = scan_folder(root)
    train, val, test = split_indices(labels, val_fraction, test_fraction, seed)
    return Splits(classes, paths, labels, train, val, test)


def build_transform(image_size: int, train: bool, aug_strength: float = 0.0,
                    mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
    """uint8 CHW tensor -> normalised float tensor. aug_strength in [0, 1] scales crop range and jitter."""
    s = float(aug_strength)
    if train:
        ops = [v2.RandomResizedCrop(image_size, scale=(1.0 - 0.65 * s, 1.0), antialias=True)]
        if s > 0:
            ops += [v2.RandomHorizontalFlip(),
                    v2.ColorJitter(brightness=0.4 * s, contrast=0.4 * s, saturation=0.4 * s, hue=0.05 * s)]
    else:  # validation: resize 1.14x then centre crop, as in the WikiArt study
        ops = [v2.Resize(int(round(image_size * 1.14)), antialias=True), v2.CenterCrop(image_size)]
    return v2.Compose(ops + [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])


class ImageFiles(Dataset):
    """Decodes by content (JPEG/PNG/WebP/GIF) with torchvision.io, converts to RGB, then transforms."""

    def __init__(self, paths: Sequence[str], labels: Sequence[int], transform):
        self.paths, self.labels, self.transform = list(paths), [int(x) for x in labels], transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        img = decode_image(self.paths[i], mode=ImageReadMode.RGB)
        return self.transform(img), self.labels[i]


class WeightedShardSampler(Sampler[int]):
    """Class-weighted sampling that shards correctly across DDP ranks.

    Each epoch the dataset is shuffled (seed, epoch) and dealt class by class to the ranks, so every rank
    owns a disjoint, class-stratified share. Each rank then draws `len(self)` indices from its own share
    with weight ∝ class_count^-power (global counts): power 0 = natural frequencies (a plain shuffle),
    1 = every class equally often. All ranks yield the same number of indices, so DDP steps stay in lockstep.
    """

    def __init__(self, labels: Sequence[int], power: float, num_replicas: int = 1, rank: int = 0,
                 seed: int = 0, num_samples: int | None = None):
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self.power, self.num_replicas, self.rank, self.seed = float(power), num_replicas, rank, seed
        total = num_samples or len(self.labels)
        self.per_rank = math.ceil(total / num_replicas)
        counts = torch.bincount(self.labels).double().clamp(min=1)
        self.weights = counts[self.labels] ** -self.power
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def shard(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        perm = torch.randperm(len(self.labels), generator=g)
        by_class = perm[torch.argsort(self.labels[perm], stable=True)]
        return by_class[self.rank::self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        own = self.shard()
        g = torch.Generator().manual_seed((self.seed * 100_003 + self.epoch) * 1_009 + self.rank)
        if self.power == 0:  # natural frequencies: each own sample once, wrapped to the common length
            order = own[torch.randperm(len(own), generator=g)]
            order = order.repeat(math.ceil(self.per_rank / max(1, len(order))))[: self.per_rank]
        else:
            order = own[torch.multinomial(self.weights[own], self.per_rank, replacement=True, generator=g)]
        return iter(order.tolist())

    def __len__(self) -> int:
        return self.per_rank
