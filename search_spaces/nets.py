"""The networks only families use: the seeds' SimpleCNN and DeepCNN (study 000) and seed 003's CNN-RNN hybrid.

SimpleCNN / DeepCNN are registered as timm models (`simple_cnn`, `deep_cnn`), so the scratch family builds them
through timm.create_model like every other family (pretrained=False: there are no published weights).
`width` scales every channel count (1.0 = the seeds' exact layers) so a study on a 2-core laptop can
search narrower variants; it is a searched knob of the `scratch` family, never applied silently.
"""

from __future__ import annotations

import torch
from timm.models import register_model
from torch import nn


def _ch(c: int, width: float) -> int:
    return max(8, int(round(c * width)))


class SimpleCNN(nn.Module):
    """3 x [conv3x3 32/64/128 + BN + ReLU + maxpool], flatten, dropout, FC 512, BN1d, dropout, FC."""

    def __init__(self, num_classes: int, image_size: int, dropout: float = 0.3, width: float = 1.0):
        super().__init__()
        layers, c_in = [], 3
        for c in (32, 64, 128):
            c = _ch(c, width)
            layers += [
                nn.Conv2d(c_in, c, 3, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c_in = c
        self.features = nn.Sequential(*layers)
        side = image_size // 8  # three 2x max-pools
        hidden = _ch(512, width)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(c_in * side * side, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class DeepCNN(nn.Module):
    """4 blocks of 2 x conv3x3 64/128/256/512 + BN + ReLU + maxpool, global avg pool, dropout, FC 256,
    BN1d, dropout, FC."""

    def __init__(self, num_classes: int, image_size: int, dropout: float = 0.5, width: float = 1.0):
        super().__init__()
        layers, c_in = [], 3
        for c in (64, 128, 256, 512):
            c = _ch(c, width)
            for _ in range(2):
                layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
                c_in = c
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        hidden = _ch(256, width)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(c_in, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _AttentionPool(nn.Module):
    """Softmax-weighted mean over a sequence: [B, T, D] -> [B, D]."""

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        return (self.score(seq).softmax(1) * seq).sum(1)


class _SequenceBranch(nn.Module):
    """2-layer bidirectional GRU over a sequence of map positions; mean + attention pooling -> 4*hidden."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gru = nn.GRU(dim, hidden, num_layers=2, batch_first=True, bidirectional=True)
        self.attn = _AttentionPool(2 * hidden)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(seq)
        return torch.cat([out.mean(1), self.attn(out)], 1)


class HybridCNNRNN(nn.Module):
    """The CNN-RNN of seed 003: a CNN feature map (ResNet-50: 2048 x 7 x 7 at 224 px), global average pool
    (2048-d), 1x1 projection to 320 channels read row by row and column by column through two separate
    2-layer bidirectional GRUs (hidden 128, mean + attention pooling -> 512-d each), concatenated to
    2048 + 512 + 512 = 3072-d, dropout, linear head."""

    def __init__(
        self, backbone: nn.Module, num_classes: int, dropout: float = 0.3, proj_dim: int = 320, hidden: int = 128
    ):
        super().__init__()
        self.backbone = backbone  # a timm model built with num_classes=0, global_pool=""
        self.pretrained_cfg = getattr(backbone, "pretrained_cfg", {})  # normalisation follows the backbone
        c = backbone.num_features
        self.proj = nn.Conv2d(c, proj_dim, 1)
        self.rows, self.cols = _SequenceBranch(proj_dim, hidden), _SequenceBranch(proj_dim, hidden)
        self.num_features = c + 8 * hidden
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(self.num_features, num_classes)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        fmap = self.backbone.forward_features(x)  # [B, C, H, W]
        p = self.proj(fmap)  # [B, 320, H, W]
        rows = p.flatten(2).transpose(1, 2)  # [B, H*W, 320], row-major
        cols = p.transpose(2, 3).flatten(2).transpose(1, 2)  # [B, W*H, 320], column-major
        return torch.cat([fmap.mean((2, 3)), self.rows(rows), self.cols(cols)], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.pooled(x)))

    def new_parameters(self):
        """Everything but the pretrained backbone (gets the full LR; the backbone is scaled or frozen)."""
        return [p for m in (self.proj, self.rows, self.cols, self.head) for p in m.parameters()]


def _scratch(
    cls,
    pretrained: bool,
    num_classes: int,
    image_size: int = 64,
    drop_rate: float = 0.3,
    width: float = 1.0,
    **_timm_kwargs,
):
    if pretrained:
        raise RuntimeError(f"{cls.__name__} is trained from scratch: no pretrained weights exist")
    return cls(num_classes, image_size, dropout=drop_rate, width=width)


@register_model
def simple_cnn(pretrained: bool = False, num_classes: int = 1000, **kwargs) -> SimpleCNN:
    return _scratch(SimpleCNN, pretrained, num_classes, **kwargs)


@register_model
def deep_cnn(pretrained: bool = False, num_classes: int = 1000, **kwargs) -> DeepCNN:
    return _scratch(DeepCNN, pretrained, num_classes, **kwargs)
