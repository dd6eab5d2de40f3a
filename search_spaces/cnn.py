"""`cnn`: pretrained timm CNNs fine-tuned with a new head.

Priors (shared/SEEDS.md): AdamW 1e-4, batch 32, weight decay 1e-4..5e-3, label smoothing 0.1; ResNet-50
reached 61.8 % and EfficientNetV2-S 60.5 % macro F1 on WikiArt styles; ConvNeXt-Tiny 0.943 F1 on 31 artists
with a lower backbone LR. Run:  python tune.py --family cnn --data /data/wikiart
"""
from __future__ import annotations

from typing import Optional

from trainables.config import TrialConfig
from trainables.pretrained import Weights

ARCHS = {
    "resnet50": "resnet50.a1_in1k",
    "efficientnetv2_s": "tf_efficientnetv2_s.in21k_ft_in1k",
    "efficientnet_b0": "efficientnet_b0.ra_in1k",
    "convnext_tiny": "convnext_tiny.in12k_ft_in1k",
    "xception": "legacy_xception.tf_in1k",
    "vgg16": "vgg16.tv_in1k",
}
# CPU-sized stand-ins (timm's test models, 0.1-1M params), used only when asked for (--smoke / --standins)
STANDINS = {"test_resnet": "test_resnet", "test_efficientnet": "test_efficientnet", "test_convnext": "test_convnext"}
IMAGE_SIZE = 224
GRACE_EPOCHS = 1       # one epoch already separates good from bad learning rates
PRETRAINED = True
AUGMENT = "strong"     # data.build_transform recipe


def space(trial, arch: Optional[str] = None, standins: bool = False) -> dict:
    return {
        "family": "cnn",
        "arch": arch or trial.suggest_categorical("arch", list(STANDINS if standins else ARCHS)),
        "lr": trial.suggest_float("lr", 3e-5, 1e-3, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [16, 32, 64]),
        "weight_decay": trial.suggest_float("weight_decay", 1e-5, 1e-2, log=True),
        "label_smoothing": trial.suggest_float("label_smoothing", 0.0, 0.2),
        "aug_strength": trial.suggest_float("aug_strength", 0.2, 1.0),
        "sampler_power": trial.suggest_float("sampler_power", 0.0, 1.0),
        "loss_weight_power": trial.suggest_float("loss_weight_power", 0.0, 1.0),
        "mixup_prob": trial.suggest_float("mixup_prob", 0.0, 0.5),
        "dropout": trial.suggest_float("dropout", 0.0, 0.5),
        "backbone_lr_scale": trial.suggest_float("backbone_lr_scale", 0.03, 1.0, log=True),
        "freeze_epochs": trial.suggest_int("freeze_epochs", 0, 2),
    }


def build_model(cfg: TrialConfig, num_classes: int, image_size: int, weights: Weights):
    return weights.create({**ARCHS, **STANDINS}[cfg.arch], num_classes, drop_rate=cfg.dropout)
