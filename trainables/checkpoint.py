"""A trial's checkpoint (`checkpoint/model.pt` in its MLflow run) and the classifier it rebuilds.

save() is called by worker rank 0 at each new best epoch; load() rebuilds the model from its family
(random init, then the saved weights: no download) with the exact validation preprocessing of training:
decode (torchvision.io / Pillow) -> cache.fit to the cached side with the study's resize policy ->
validation preprocessing (augment.preprocess: 1.14x resize, centre crop, the weights' normalisation). Evaluation, the
registered MLflow model and analysis.predict all go through Classifier, so they agree with training.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from search_spaces import get_family
from search_spaces.space import TrialConfig
from trainables import engine, weights_only
from trainables.data import augment, cache, decode, storage
from trainables.pretrained import Weights
from trainables.tracking.artifacts import FILENAME


def save(
    folder: Path,
    model: nn.Module,
    classes: Sequence[str],
    cfg: TrialConfig,
    image_size: int,
    norm: dict,
    resize_policy: str,
    epoch: int,
    values: dict,
) -> Path:
    # tensors and plain values only: load() reads it with weights_only=True (no pickle)
    return weights_only.save(
        {
            "model": model.state_dict(),
            "classes": list(classes),
            "family": cfg.family.name,
            "family_module": cfg.family.module,  # where a process that never registered the family finds it
            "params": weights_only.plain(cfg.values),
            "image_size": int(image_size),
            "normalization": weights_only.plain(norm),
            "resize_policy": resize_policy,
            "epoch": int(epoch),
            "metrics": weights_only.plain(values),
        },
        Path(folder) / FILENAME,
    )


@dataclass
class Classifier:
    model: nn.Module  # eval mode, on CPU unless moved
    classes: list[str]
    image_size: int  # model input side, px
    resize_policy: str  # crop | letterbox, as in training's decode cache
    normalization: dict  # mean / std the weights were trained with
    trial_config: TrialConfig  # its family, and every parameter value (searched and fixed)
    epoch: int  # epoch (1-based) the checkpoint was taken at
    metrics: dict = field(default_factory=dict)  # validation metrics at that epoch

    def __post_init__(self):
        self.transform = augment.preprocess(self.image_size, **self.normalization)

    @property
    def head(self) -> nn.Module:
        """The final classifier layer, as the family names it: its input is the embedding."""
        return self.trial_config.family.head(self.model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def fit(self, image, max_pixels: int | None = None) -> np.ndarray:
        """bytes | path | uint8 array [H, W, 3] or [H, W] -> uint8 [side, side, 3] as the decode cache holds it.
        Raises decode.BadImage for bytes or files that are not an image (or, as bytes, over max_pixels)."""
        side = cache.cached_side(self.image_size)
        if isinstance(image, (bytes, bytearray, memoryview)):
            img = decode.decode_bytes(bytes(image), max_side=side * 2, max_pixels=max_pixels)
        elif isinstance(image, (str, Path)):  # a file, an object or a Parquet row (trainables.data.storage)
            img = decode.decode_bytes(storage.read_bytes(str(image)), max_side=side * 2)
        else:
            arr = np.asarray(image)
            if arr.ndim == 2:
                arr = np.repeat(arr[..., None], 3, axis=2)
            if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.dtype != np.uint8:
                raise decode.BadImage(f"an image array must be uint8 [H, W, 3], got {arr.dtype} {list(arr.shape)}")
            img = torch.from_numpy(np.ascontiguousarray(arr[..., :3])).permute(2, 0, 1)
        return cache.fit(img, side, self.resize_policy)

    def preprocess(self, image) -> torch.Tensor:
        """One image -> float [3, S, S], exactly as validation saw it."""
        return self.transform(torch.tensor(self.fit(image)).permute(2, 0, 1))  # copy: fit() may be read-only

    def logits(self, images: Iterable, batch_size: int = 64) -> np.ndarray:
        """[N, C] logits through engine.predict, batch_size images at a time (preprocessed lazily)."""
        it = iter(images)
        batches = (
            (torch.stack(b), torch.zeros(len(b), dtype=torch.long))
            for b in iter(lambda: [self.preprocess(x) for x in itertools.islice(it, batch_size)], [])
        )
        logits, _ = engine.predict(self.model, batches, self.device)
        return logits if len(logits) else np.zeros((0, len(self.classes)), np.float32)

    def probabilities(self, images: Iterable) -> np.ndarray:
        return torch.from_numpy(self.logits(images)).softmax(1).numpy()

    def top_k(self, images: Iterable, k: int = 5) -> list[list[tuple[str, float]]]:
        """Per image: the k most probable (class, probability), most probable first."""
        return top_k(self.probabilities(images), self.classes, k)


def top_k(probs: np.ndarray, classes: Sequence[str], k: int) -> list[list[tuple[str, float]]]:
    """Per row of probs [N, C]: the k most probable (class, probability), most probable first."""
    k = min(k, len(classes))
    return [[(classes[i], float(p[i])) for i in np.argsort(-p)[:k]] for p in probs]


def average(probabilities: Sequence[np.ndarray]) -> np.ndarray:
    """An ensemble's class probabilities [N, C]: the mean of its members' [N, C] (the served ensemble's and
    analysis.ensemble's scores)."""
    return np.mean(np.stack(probabilities), axis=0)


@dataclass
class Ensemble:
    """Several classifiers of one study as one: the mean of their softmax outputs (analysis.ensemble). The same
    fit / probabilities / top_k as a Classifier, so the served model and analysis.predict take either."""

    members: list[Classifier]

    def __post_init__(self):
        if any(m.classes != self.members[0].classes for m in self.members):
            raise ValueError("ensemble members must predict the same classes in the same order")
        self.classes = self.members[0].classes
        self.largest = max(self.members, key=lambda m: m.image_size)

    def fit(self, image, max_pixels: int | None = None) -> np.ndarray:
        """The image at the largest member's cached side; each member fits it to its own side (the identity when
        the sides are equal, as in one study with one --image-size)."""
        return self.largest.fit(image, max_pixels)

    def probabilities(self, images: Iterable) -> np.ndarray:
        images = list(images)
        return average([m.probabilities(images) for m in self.members])

    def top_k(self, images: Iterable, k: int = 5) -> list[list[tuple[str, float]]]:
        return top_k(self.probabilities(images), self.classes, k)


def load(path: str | Path, map_location: str = "cpu") -> Classifier:
    """Rebuild the model of a checkpoint written by save() through its family; no pretrained weights are fetched.
    A family this process has not registered (one added at run time) is imported from the module the checkpoint
    names (search_spaces.get_family: only search_spaces' own modules and those listed in ARTSWEEP_FAMILY_MODULES);
    a checkpoint without that name needs the family registered. Read without pickle (weights_only.NeedsPickle for
    a checkpoint that needs it: an older artsweep's, or an altered one)."""
    ckpt = weights_only.load(
        path, "trial checkpoint", "re-run the study (or that trial) to write it again", map_location
    )
    cfg = TrialConfig(get_family(ckpt["family"], ckpt.get("family_module")), ckpt["params"])
    model = cfg.family.build(cfg, len(ckpt["classes"]), ckpt["image_size"], Weights("none"))
    model.load_state_dict(ckpt["model"])
    model.eval()
    return Classifier(
        model,
        list(ckpt["classes"]),
        int(ckpt["image_size"]),
        ckpt.get("resize_policy", "crop"),
        dict(ckpt["normalization"]),
        cfg,
        int(ckpt["epoch"]),
        ckpt.get("metrics", {}),
    )
