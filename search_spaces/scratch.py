"""`scratch`: CNNs trained from random init, the seeds' SimpleCNN and DeepCNN (CPU-friendly).

Priors from the WikiArt study (shared/SEEDS.md, 000): AdamW 5e-4, batch 32-128, weight decay 1e-4,
label smoothing 0.1, dropout 0.3 (SimpleCNN) / 0.5 (DeepCNN); reached ~48 % / ~55 % macro F1 on 27 styles.
Run:  python tune.py --family scratch
"""
from __future__ import annotations

from typing import Optional

import optuna

from trainables.config import TrialConfig
from trainables.models import DeepCNN, SimpleCNN

ARCHS = {"simple_cnn": SimpleCNN, "deep_cnn": DeepCNN}
STANDINS: dict = {}    # already CPU-sized: --smoke / --standins search ARCHS
IMAGE_SIZE = 64        # px; scratch CNNs see small inputs (the seeds used 224 on a GPU)
GRACE_EPOCHS = 1       # one epoch already separates good from bad learning rates
PRETRAINED = False     # trained from random init; --pretrained does not apply
AUGMENT = "strong"     # data.build_transform recipe


def space(trial: optuna.Trial, arch: Optional[str] = None, standins: bool = False) -> dict:
    """Define-by-run space; `arch` pins the architecture instead of searching it."""
    return {
        "family": "scratch",
        "arch": arch or trial.suggest_categorical("arch", list(ARCHS)),
        "lr": trial.suggest_float("lr", 1e-4, 3e-3, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [32, 64, 128]),
        "weight_decay": trial.suggest_float("weight_decay", 1e-5, 5e-2, log=True),
        "label_smoothing": trial.suggest_float("label_smoothing", 0.0, 0.2),
        "aug_strength": trial.suggest_float("aug_strength", 0.0, 1.0),
        "sampler_power": trial.suggest_float("sampler_power", 0.0, 1.0),
        "loss_weight_power": trial.suggest_float("loss_weight_power", 0.0, 1.0),
        "mixup_prob": trial.suggest_float("mixup_prob", 0.0, 0.5),
        "dropout": trial.suggest_float("dropout", 0.1, 0.6),
        "width": trial.suggest_categorical("width", [0.25, 0.5, 1.0]),
    }


def build_model(cfg: TrialConfig, num_classes: int, image_size: int, weights=None):  # weights: unused, from scratch
    return ARCHS[cfg.arch](num_classes, image_size, dropout=cfg.dropout, width=cfg.width)
