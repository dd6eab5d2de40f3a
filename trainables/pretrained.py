"""timm models with pretrained weights: online as timm does it, offline from local files.

Offline, `--weights-dir DIR` holds one file per model, named after its timm name:
  DIR/vit_base_patch16_224.augreg_in21k.safetensors   (or .pth / .bin, or DIR/<name>/model.safetensors)
timm loads it through `pretrained_cfg_overlay=dict(file=...)`, which replaces the classifier for the
dataset's classes and resizes ViT position embeddings to another input size. A missing file is an error
naming the file and `--pretrained none`; nothing silently trains from scratch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import timm
from torch import nn

SUFFIXES = (".safetensors", ".pth", ".bin")


class WeightsError(RuntimeError):
    """Pretrained weights were asked for and cannot be had; the message says what to do."""


def weight_file(weights_dir: str | Path, timm_name: str) -> Path:
    root = Path(weights_dir)
    candidates = [root / f"{timm_name}{s}" for s in SUFFIXES]
    candidates += [root / timm_name / f for f in ("model.safetensors", "pytorch_model.bin")]
    for c in candidates:
        if c.is_file():
            return c
    raise WeightsError(f"no weights for {timm_name} in {root}: looked for {candidates[0]} (or .pth/.bin); "
                       "put the file there, or pass --pretrained none to train from random init")


@dataclass(frozen=True)
class Weights:
    mode: str = "timm"                 # timm: pretrained weights; none: random init (stated, never silent)
    weights_dir: str | None = None     # offline weight files; None: timm downloads or reads the HF cache

    def create(self, timm_name: str, num_classes: int, **kwargs) -> nn.Module:
        """timm.create_model with a new head for `num_classes` and the requested weights."""
        if self.mode == "none":
            return timm.create_model(timm_name, pretrained=False, num_classes=num_classes, **kwargs)
        overlay = {"file": str(weight_file(self.weights_dir, timm_name))} if self.weights_dir else None
        try:
            return timm.create_model(timm_name, pretrained=True, num_classes=num_classes,
                                     pretrained_cfg_overlay=overlay, **kwargs)
        except (OSError, RuntimeError, ValueError) as e:
            if isinstance(e, WeightsError) or overlay:
                raise
            raise WeightsError(f"could not get pretrained weights for {timm_name} ({type(e).__name__}: "
                               f"{str(e).splitlines()[0][:200]}); offline, pass --weights-dir DIR holding "
                               f"{timm_name}.safetensors, or --pretrained none") from None
