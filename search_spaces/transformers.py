"""`transformers`: pretrained ViT / CLIP / EVA02 vision transformers fine-tuned with a new head.

Priors (shared/SEEDS.md): ViT-B/16 in21k reached 66.9 % macro F1 on WikiArt styles with AdamW 1e-5,
batch 16, weight decay 0.01 and conservative augmentation; transformers need pretraining (seed 001).
Run:  python tune.py --family transformers --data /data/wikiart
"""
from __future__ import annotations

from typing import Optional

from trainables.config import TrialConfig
from trainables.pretrained import Weights

ARCHS = {
    "vit_b16": "vit_base_patch16_224.augreg_in21k",
    "vit_b32": "vit_base_patch32_224.augreg_in21k_ft_in1k",
    "openclip_vit_b16": "vit_base_patch16_clip_224.laion2b",
    "eva02_clip_b16": "eva02_base_patch16_clip_224.merged2b",
}
STANDINS = {"test_vit": "test_vit", "test_vit2": "test_vit2"}   # CPU-sized, only with --smoke / --standins
IMAGE_SIZE = 224
GRACE_EPOCHS = 1       # one epoch already separates good from bad learning rates
PRETRAINED = True
AUGMENT = "conservative"  # tight crops, small jitter: beat standard augmentation for ViT (65.3 -> 66.9 %)


def space(trial, arch: Optional[str] = None, standins: bool = False) -> dict:
    return {
        "family": "transformers",
        "arch": arch or trial.suggest_categorical("arch", list(STANDINS if standins else ARCHS)),
        "lr": trial.suggest_float("lr", 3e-6, 1e-4, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [16, 32, 64]),
        "weight_decay": trial.suggest_float("weight_decay", 1e-3, 1e-1, log=True),
        "label_smoothing": trial.suggest_float("label_smoothing", 0.0, 0.2),
        "aug_strength": trial.suggest_float("aug_strength", 0.0, 1.0),   # of the conservative recipe (AUGMENT)
        "sampler_power": trial.suggest_float("sampler_power", 0.0, 1.0),
        "loss_weight_power": trial.suggest_float("loss_weight_power", 0.0, 1.0),
        "mixup_prob": trial.suggest_float("mixup_prob", 0.0, 0.3),
        "dropout": trial.suggest_float("dropout", 0.0, 0.3),
        "drop_path": trial.suggest_float("drop_path", 0.0, 0.2),
        "layer_decay": trial.suggest_float("layer_decay", 0.6, 1.0),
    }


def build_model(cfg: TrialConfig, num_classes: int, image_size: int, weights: Weights):
    # img_size: timm resizes pretrained position embeddings when it differs from 224
    return weights.create({**ARCHS, **STANDINS}[cfg.arch], num_classes, img_size=image_size,
                          drop_rate=cfg.dropout, drop_path_rate=cfg.drop_path)
