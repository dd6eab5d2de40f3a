"""Model hooks that families share: which layer classifies, which layer Grad-CAM explains.

A family names its hooks in its `Family` value; nothing else guesses a model's structure.
Grad-CAM's map has the resolution of the layer it reads: stride 32 for timm CNNs (7 x 7 at 224 px,
2 x 2 at 64 px), 16 for ViT-B/16; it is upsampled bilinearly to the input crop.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # torch is imported by whoever builds a model; importing a family must stay cheap (no torch)
    import torch
    from torch import nn

Layer = "tuple[nn.Module, Optional[Callable[[torch.Tensor], torch.Tensor]]]"  # (layer, token reshape or None)


def timm_classifier(model: nn.Module) -> nn.Module:
    """The final classifier layer of a timm model (its input is the embedding)."""
    return model.get_classifier()


def last_stage(model: nn.Module) -> Layer:
    """A timm CNN's map before pooling: EfficientNet's bn2 (conv_head + BN + act, what its head pools),
    else the last stage timm's feature_info names (ResNet, ConvNeXt, Xception, VGG)."""
    if hasattr(model, "bn2") and hasattr(model, "conv_head"):
        return model.bn2, None
    return model.get_submodule(model.feature_info[-1]["module"]), None


def tokens_to_grid(num_prefix_tokens: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """[B, prefix + h*w, D] tokens -> [B, D, h, w] map (square inputs, so a square patch grid)."""

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, num_prefix_tokens:, :]
        side = math.isqrt(patches.shape[1])
        if side * side != patches.shape[1]:
            raise ValueError(f"{patches.shape[1]} patch tokens do not form a square grid")
        return patches.reshape(patches.shape[0], side, side, patches.shape[2]).permute(0, 3, 1, 2)

    return reshape


def vit_tokens(model: nn.Module) -> Layer:
    """A timm ViT / EVA02: the last block's norm1, prefix (class, register) tokens dropped, as a patch grid."""
    last = model.blocks[-1]
    return getattr(last, "norm1", last), tokens_to_grid(int(model.num_prefix_tokens))
