"""Augmentation in two halves: cheap per-sample work in the loader processes, the rest batched on the device.

Loader process, per sample, uint8 (torchvision v2): random-resized crop + horizontal flip (validation: centre
crop). Training device, per batch (kornia; every sample draws its own parameters): the recipe's geometric and
colour ops, normalisation, random erasing. A GPU then never waits on one CPU core of RandAugment, and on a
CPU-only trial the "device" is the CPU: the same code runs in CI.

Recipes (aug_strength s in [0, 1] scales every random op; s = 0 is resize + normalise only):
  conservative (transformers; the WikiArt study's winner): crops keeping >= 1 - 0.1 s of the image, flip,
    colour jitter <= 0.1 s.
  strong (CNNs): crops keeping >= 1 - 0.65 s, flip, rotation <= 15 s degrees, RandAugment-style ops at
    magnitude 9 s of 30 (torchvision's 14 ops, ranges and num_ops=2, but drawn per sample, not per batch),
    colour jitter <= 0.4 s, random erasing with p = 0.25 s (after normalisation, value 0, as torchvision's).
"""

from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import kornia.enhance as KE
import kornia.geometry.transform as KG
import torch
from timm.data.random_erasing import RandomErasing
from torch import nn
from torchvision.transforms import v2

from trainables.data.cache import cached_side

RECIPES = ("strong", "conservative")  # per family: CNNs take strong augmentation, pretrained ViTs conservative
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CROP_LOSS = {"strong": 0.65, "conservative": 0.1}  # share of the image a crop may drop at s = 1
JITTER = {"strong": 0.4, "conservative": 0.1}  # brightness/contrast/saturation range at s = 1 (no hue: 5x cost)
RAND_AUG_MAGNITUDE = 9  # of torchvision's 30 (num_magnitude_bins=31), at s = 1


def check_recipe(recipe: str) -> None:
    if recipe not in RECIPES:
        raise ValueError(f"augmentation recipe must be one of {RECIPES}, got {recipe!r}")


def sample_transform(image_size: int, train: bool, aug_strength: float = 0.0, recipe: str = "strong"):
    """uint8 [3, H, W] (a decode cache entry, side 1.14 x image_size) -> uint8 [3, S, S]: the loader's share."""
    s = float(aug_strength)
    if not train or s == 0:  # validation (and s = 0): resize 1.14x then centre crop, as in the WikiArt study
        return v2.Compose([v2.Resize(cached_side(image_size), antialias=True), v2.CenterCrop(image_size)])
    check_recipe(recipe)
    return v2.Compose(
        [
            v2.RandomResizedCrop(image_size, scale=(1.0 - CROP_LOSS[recipe] * s, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
        ]
    )


def _signed(n: int, magnitude: float, device) -> torch.Tensor:
    """n values of +-magnitude, the sign drawn per sample (torchvision's signed RandAugment ops)."""
    return magnitude * (torch.randint(0, 2, (n,), device=device) * 2 - 1)


def _uniform(n: int, low: float, high: float, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, device=device)


class BatchAugment(nn.Module):
    """uint8 [B, 3, S, S] on the training device -> normalised float [B, 3, S, S]: the device's share.

    Strong: one affine warp per sample carries the rotation and whichever RandAugment geometric ops the sample
    drew (kornia builds and applies the matrices); RandAugment's colour ops run on just the samples that drew
    them (kornia.enhance, per-sample factors). Each sample draws 2 of torchvision's 14 ops (identity included).
    """

    GEOMETRIC = ("shear_x", "shear_y", "translate_x", "translate_y", "rotate")
    COLOUR = ("brightness", "color", "contrast", "sharpness", "posterize", "solarize", "autocontrast", "equalize")
    OPS = ("identity",) + GEOMETRIC + COLOUR
    NUM_OPS = 2

    def __init__(
        self,
        train: bool,
        aug_strength: float = 0.0,
        recipe: str = "strong",
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ):
        super().__init__()
        self.s = float(aug_strength) if train else 0.0
        if self.s > 0:
            check_recipe(recipe)
        self.strong = recipe == "strong" and self.s > 0
        self.f = RAND_AUG_MAGNITUDE * self.s / 30  # RandAugment magnitude as a fraction of its maximum
        self.jitter = JITTER[recipe] * self.s if self.s > 0 else 0.0
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        # timm's batch eraser (PrefetchLoader's): per sample, p = 0.25 s, value 0 after normalisation
        self.erase = RandomErasing(0.25 * self.s, mode="const", device="cpu") if self.strong else None

    def _geometry(self, x: torch.Tensor, drawn: torch.Tensor) -> torch.Tensor:
        n, dev, f, side = len(x), x.device, self.f, x.shape[-1]
        pick = {op: (drawn == self.OPS.index(op)).any(1).float() for op in self.GEOMETRIC}
        angle = _uniform(n, -15 * self.s, 15 * self.s, dev) + pick["rotate"] * _signed(n, 30 * f, dev)  # degrees
        shear = [pick[k] * torch.atan(_signed(n, 0.3 * f, dev)) for k in ("shear_x", "shear_y")]  # radians
        shift = torch.stack(
            [pick[k] * _signed(n, 150 / 331 * side * f, dev) for k in ("translate_x", "translate_y")], 1
        )
        centre = torch.full((n, 2), (side - 1) / 2, device=dev)
        m = KG.get_affine_matrix2d(shift, centre, torch.ones(n, 2, device=dev), angle, *shear)
        return KG.warp_affine(x, m[:, :2], (x.shape[-2], side), align_corners=True)

    def _colour(self, sub: torch.Tensor, op: str) -> torch.Tensor:
        n, dev, f = len(sub), sub.device, self.f
        factor = 1 + _signed(n, 0.9 * f, dev)
        if op == "brightness":
            return KE.adjust_brightness_accumulative(sub, factor)
        if op == "color":
            return KE.adjust_saturation_with_gray_subtraction(sub, factor)
        if op == "contrast":
            return KE.adjust_contrast_with_mean_subtraction(sub, factor)
        if op == "sharpness":
            return KE.sharpness(sub, factor)
        if op == "posterize":  # torchvision keeps 8 - round(m / 7.5) bits
            return KE.posterize(sub, torch.full((n,), 8 - round(f * 4), device=dev, dtype=torch.int32))
        if op == "solarize":
            return KE.solarize(sub, torch.full((n,), 1.0 - f, device=dev))
        if op == "autocontrast":
            return KE.normalize_min_max(sub)
        return KE.equalize(sub)

    def _rand_augment(self, x: torch.Tensor, drawn: torch.Tensor) -> torch.Tensor:
        """Each colour op on just the samples that drew it (in the table's order; an op drawn twice runs once)."""
        for op in self.COLOUR:
            idx = (drawn == self.OPS.index(op)).any(1).nonzero().flatten()
            if len(idx):
                x[idx] = self._colour(x[idx], op)
        return x

    def _jitter(self, x: torch.Tensor) -> torch.Tensor:
        """Brightness, contrast, saturation (torchvision ColorJitter's factors, in this fixed order)."""
        n, dev, j = len(x), x.device, self.jitter
        x = KE.adjust_brightness_accumulative(x, _uniform(n, max(0.0, 1 - j), 1 + j, dev))
        x = KE.adjust_contrast_with_mean_subtraction(x, _uniform(n, max(0.0, 1 - j), 1 + j, dev))
        return KE.adjust_saturation_with_gray_subtraction(x, _uniform(n, max(0.0, 1 - j), 1 + j, dev))

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().div_(255)
        if self.strong:
            drawn = torch.randint(0, len(self.OPS), (len(x), self.NUM_OPS), device=x.device)
            x = self._rand_augment(self._geometry(x, drawn), drawn)
        if self.jitter > 0:
            x = self._jitter(x)
        x = (x - self.mean) / self.std
        if self.erase is not None:
            self.erase.device = x.device  # timm makes its fill values on .device
            x = self.erase(x)
        return x


class DeviceLoader:
    """Wraps a DataLoader of uint8 batches: moves each batch to `device` (on CUDA one batch ahead, on a side
    stream, as timm's PrefetchLoader), runs BatchAugment there and yields (float images, labels)."""

    def __init__(self, loader: Iterable, device: torch.device, augment: BatchAugment, channels_last: bool = False):
        self.loader, self.device, self.augment = loader, device, augment.to(device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __len__(self) -> int:
        return len(self.loader)

    def _prepare(self, x: torch.Tensor, y: torch.Tensor):
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        return self.augment(x).contiguous(memory_format=self.memory_format), y

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.device.type != "cuda":
            for x, y in self.loader:
                yield self._prepare(x, y)
            return
        stream, ready = torch.cuda.Stream(self.device), None
        for x, y in self.loader:
            with torch.cuda.stream(stream):
                nxt = self._prepare(x, y)
            if ready is not None:
                yield ready
            torch.cuda.current_stream(self.device).wait_stream(stream)
            for t in nxt:
                t.record_stream(torch.cuda.current_stream(self.device))
            ready = nxt
        if ready is not None:
            yield ready


def preprocess(image_size: int, mean: Sequence[float], std: Sequence[float]):
    """One uint8 [3, H, W] image -> float [3, S, S] exactly as validation sees it (serving, analysis)."""
    sample, batch = sample_transform(image_size, False), BatchAugment(False, mean=mean, std=std)
    return lambda img: batch(sample(img)[None])[0]
