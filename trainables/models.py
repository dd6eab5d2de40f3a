"""Models trained from scratch: the seeds' SimpleCNN and DeepCNN (layer lists in shared/SEEDS.md, study 000).

`width` scales every channel count (1.0 = the seeds' exact layers) so a study on a 2-core laptop can
search narrower variants; it is a searched knob of the `scratch` family, never applied silently.
"""
from __future__ import annotations

import torch
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
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            c_in = c
        self.features = nn.Sequential(*layers)
        side = image_size // 8  # three 2x max-pools
        hidden = _ch(512, width)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(c_in * side * side, hidden, bias=False),
            nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, num_classes))

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
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(c_in, hidden, bias=False),
            nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
