"""A trial's data path: decode cache -> loader processes (per-sample crop + flip, uint8) -> device (batched
augmentation, normalisation). Pure torch: the worker, the tests and benchmarks/throughput.py build it here.

Each draw's crop and flip are seeded from (seed, epoch, rank, position) by the sampler, not by whichever loader
process runs it, so a trial trains on the same pixels with 0 or 8 loader processes, and its validation metrics
are the same too (the device half draws from the training process's own generator, which no loader touches).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from trainables.data import augment, dataset

PREFETCH_BATCHES = 4  # batches each loader process keeps ready (DataLoader prefetch_factor; its default is 2)


class CachedImages(Dataset):
    """Entries `indices` of a decode cache; `transform` (the loader half of trainables.data.augment) runs per sample
    on the cached uint8 tensor. A key is a position, or (position, seed) to draw the transform's randomness
    from that seed. Pickles without its pixels (spawned loader processes reopen the memory map)."""

    def __init__(self, images: np.ndarray, indices: Sequence[int], labels: Sequence[int], transform):
        self.images, self.indices = images, np.asarray(indices)
        self.labels, self.transform = [int(x) for x in labels], transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key):
        i, seed = key if isinstance(key, tuple) else (key, None)
        img = torch.from_numpy(np.array(self.images[self.indices[i]])).permute(2, 0, 1)  # copy out of the mmap
        if seed is None:
            return self.transform(img), self.labels[i]
        with torch.random.fork_rng(devices=[]):  # the CPU generator's state, restored after this sample
            # the CPU generator alone (the transform's): torch.manual_seed would also queue a reseed of every
            # accelerator with a formatted stack trace each call (about half of this method's time on a CPU)
            torch.default_generator.manual_seed(seed)
            return self.transform(img), self.labels[i]

    def __getstate__(self):
        state = dict(self.__dict__)
        if isinstance(self.images, np.memmap):
            state["images"] = str(self.images.filename)  # a Path under numpy >= 2.3: str marks "reopen me"
        return state

    def __setstate__(self, state):
        if isinstance(state["images"], str):
            state["images"] = np.load(state["images"], mmap_mode="r")
        self.__dict__.update(state)


class SeededDraws(torch.utils.data.Sampler):
    """A sampler's indices, each paired with its own seed for the per-sample transform."""

    def __init__(self, sampler: dataset.WeightedShardSampler):
        self.sampler = sampler

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self):
        base = self.sampler.rank_seed() * 1_000_003  # room for a million draws per rank and epoch
        return ((i, base + n) for n, i in enumerate(self.sampler))

    def __len__(self) -> int:
        return len(self.sampler)


@dataclass
class Loaders:
    sampler: SeededDraws  # call set_epoch(epoch) before each training pass
    train: augment.DeviceLoader  # (augmented float images, labels) on the device
    val: augment.DeviceLoader  # this rank's share of the validation split, normalised


def _loader(ds, batch_size: int, workers: int, device: torch.device, **kw) -> DataLoader:
    return DataLoader(
        ds,
        batch_size,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=PREFETCH_BATCHES if workers else None,
        generator=torch.Generator(),
        **kw,
    )  # own generator: the trainer's RNG stream stays put


def make(
    images: np.ndarray,
    splits: dataset.Splits,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    *,
    image_size: int,
    batch_size: int,
    aug_strength: float,
    recipe: str,
    sampler_power: float,
    norm: dict,
    seed: int,
    rank: int,
    world: int,
    device: torch.device,
    workers: int = 0,
    num_samples: int = 0,
    channels_last: bool = False,
) -> Loaders:
    """batch_size is the global batch (split over `world` ranks); val_idx is already this rank's share."""
    sampler = SeededDraws(
        dataset.WeightedShardSampler(
            splits.labels[train_idx], sampler_power, world, rank, seed, num_samples=num_samples or None
        )
    )
    per_rank = min(max(1, batch_size // world), len(sampler))
    train_ds = CachedImages(
        images, train_idx, splits.labels[train_idx], augment.sample_transform(image_size, True, aug_strength, recipe)
    )
    val_ds = CachedImages(images, val_idx, splits.labels[val_idx], augment.sample_transform(image_size, False))
    train = _loader(train_ds, per_rank, workers, device, sampler=sampler, drop_last=True)
    val = _loader(val_ds, max(64, per_rank), workers, device, shuffle=False)
    return Loaders(
        sampler,
        augment.DeviceLoader(train, device, augment.BatchAugment(True, aug_strength, recipe, **norm), channels_last),
        augment.DeviceLoader(val, device, augment.BatchAugment(False, **norm), channels_last),
    )
