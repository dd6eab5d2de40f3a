"""timm models with pretrained weights: online as timm does it, offline from local files.

Offline, `--weights-dir DIR` holds one file per model, named after its timm name:
  DIR/vit_base_patch16_224.augreg_in21k.safetensors   (or .pth / .bin, or DIR/<name>/model.safetensors)
timm loads it through `pretrained_cfg_overlay=dict(file=...)`, which replaces the classifier for the
dataset's classes and resizes ViT position embeddings to another input size. A missing file is an error
naming the file and `--pretrained none`; nothing silently trains from scratch.
"""

from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import timm
from timm.models import get_pretrained_cfg
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
    raise WeightsError(
        f"no weights for {timm_name} in {root}: looked for {candidates[0]} (or .pth/.bin); "
        "put the file there, or pass --pretrained none to train from random init"
    )


@dataclass(frozen=True)
class Weights:
    mode: str = "timm"  # timm: pretrained weights; none: random init (stated, never silent)
    weights_dir: str | None = None  # offline weight files; None: timm downloads or reads the HF cache

    def create(self, timm_name: str, num_classes: int, **kwargs) -> nn.Module:
        """timm.create_model with a new head for `num_classes` and the requested weights."""
        if self.mode == "none":
            return timm.create_model(timm_name, pretrained=False, num_classes=num_classes, **kwargs)
        overlay = {"file": str(weight_file(self.weights_dir, timm_name))} if self.weights_dir else None
        try:
            return timm.create_model(
                timm_name, pretrained=True, num_classes=num_classes, pretrained_cfg_overlay=overlay, **kwargs
            )
        except (OSError, RuntimeError, ValueError) as e:
            if isinstance(e, WeightsError) or overlay:
                raise
            raise WeightsError(
                f"could not get pretrained weights for {timm_name} ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:200]}); offline, pass --weights-dir DIR holding "
                f"{timm_name}.safetensors, or --pretrained none"
            ) from None


def _cached(cfg) -> bool:
    """The weights of a timm pretrained config are already on this machine (Hugging Face or torch hub cache)."""
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        for filename in (cfg.hf_hub_filename, "model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
            if filename and isinstance(try_to_load_from_cache(cfg.hf_hub_id, filename), str):
                return True
    if cfg.url:
        import torch.hub

        return (Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(cfg.url).path).name).is_file()
    return False


def _reachable(cfg) -> bool:
    """The host timm would download from answers (never when HF_HUB_OFFLINE is set)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        return False
    return _answers("huggingface.co" if cfg.hf_hub_id else urlparse(cfg.url or "").hostname)


@functools.lru_cache(maxsize=None)
def _answers(host: str | None, timeout_s: float = 3.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except (OSError, TypeError):
        return False


def available(timm_name: str, weights_dir: str | None = None) -> None:
    """WeightsError unless `timm_name`'s pretrained weights can be had: a file in weights_dir, timm's cache, or
    the network. Checked by the study before anything starts, instead of failing every trial minutes in."""
    if weights_dir:
        weight_file(weights_dir, timm_name)
        return
    cfg = get_pretrained_cfg(timm_name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise WeightsError(f"timm has no pretrained weights for {timm_name}; pass --pretrained none")
    if (cfg.file and Path(cfg.file).is_file()) or _cached(cfg) or _reachable(cfg):
        return
    raise WeightsError(
        f"no pretrained weights for {timm_name}: not in the Hugging Face or torch hub cache and "
        f"the network does not answer; offline, pass --weights-dir DIR holding {timm_name}.safetensors, "
        "or --pretrained none"
    )
