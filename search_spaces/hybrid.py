"""`hybrid`: the CNN-RNN of seed 003, a pretrained ResNet-50 feature map read by row and column GRUs.

Priors (shared/SEEDS.md, 003): AdamW 8e-4 for the new modules and 1.5e-4 for the backbone (scale ~0.19),
label smoothing 0.03, early backbone frozen for some epochs, grad clip 1.0.
Run:  python tune.py --family hybrid --data /data/wikiart
"""
from __future__ import annotations

from typing import Optional

from trainables.config import TrialConfig
from trainables.models import HybridCNNRNN
from trainables.pretrained import Weights

ARCHS = {"resnet50_bigru": "resnet50.a1_in1k"}
STANDINS = {"test_resnet_bigru": "test_resnet"}   # CPU-sized backbone, only with --smoke / --standins
IMAGE_SIZE = 224
GRACE_EPOCHS = 1       # one epoch already separates good from bad learning rates
PRETRAINED = True
AUGMENT = "strong"     # data.build_transform recipe


def space(trial, arch: Optional[str] = None, standins: bool = False) -> dict:
    return {
        "family": "hybrid",
        "arch": arch or trial.suggest_categorical("arch", list(STANDINS if standins else ARCHS)),
        "lr": trial.suggest_float("lr", 2e-4, 2e-3, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [16, 32]),
        "weight_decay": trial.suggest_float("weight_decay", 1e-5, 1e-2, log=True),
        "label_smoothing": trial.suggest_float("label_smoothing", 0.0, 0.1),
        "aug_strength": trial.suggest_float("aug_strength", 0.2, 1.0),
        "sampler_power": trial.suggest_float("sampler_power", 0.0, 1.0),
        "loss_weight_power": trial.suggest_float("loss_weight_power", 0.0, 1.0),
        "mixup_prob": trial.suggest_float("mixup_prob", 0.0, 0.5),
        "dropout": trial.suggest_float("dropout", 0.1, 0.5),
        "backbone_lr_scale": trial.suggest_float("backbone_lr_scale", 0.05, 0.5, log=True),
        "freeze_epochs": trial.suggest_int("freeze_epochs", 0, 2),
    }


def build_model(cfg: TrialConfig, num_classes: int, image_size: int, weights: Weights):
    backbone = weights.create({**ARCHS, **STANDINS}[cfg.arch], num_classes=0, global_pool="")
    return HybridCNNRNN(backbone, num_classes, dropout=cfg.dropout)
