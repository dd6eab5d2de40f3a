"""`cnn`: pretrained timm CNNs fine-tuned with a new head.

Priors (docs/recipes.md): AdamW 1e-4, batch 32, weight decay 1e-4..5e-3, label smoothing 0.1; ResNet-50
reached 61.8 % and EfficientNetV2-S 60.5 % macro F1 on WikiArt styles; ConvNeXt-Tiny 0.943 F1 on 31 artists
with a lower backbone LR. Run:  python tune.py --family cnn --data /data/wikiart
"""

from search_spaces.space import Choice, Family, Float, Int

FAMILY = Family(
    name="cnn",
    archs={
        "resnet50": "resnet50.a1_in1k",
        "efficientnetv2_s": "tf_efficientnetv2_s.in21k_ft_in1k",
        "efficientnet_b0": "efficientnet_b0.ra_in1k",
        "convnext_tiny": "convnext_tiny.in12k_ft_in1k",
        "xception": "legacy_xception.tf_in1k",
        "vgg16": "vgg16.tv_in1k",
    },
    standins={"test_resnet": "test_resnet", "test_efficientnet": "test_efficientnet", "test_convnext": "test_convnext"},
    build=lambda cfg, num_classes, image_size, weights: weights.create(
        cfg.timm_name, num_classes, drop_rate=cfg.dropout
    ),
    space={
        "lr": Float(3e-5, 1e-3, log=True),
        "batch_size": Choice([16, 32, 64]),
        "weight_decay": Float(1e-5, 1e-2, log=True),
        "aug_strength": Float(0.2, 1.0),
        "dropout": Float(0.0, 0.5),
        "backbone_lr_scale": Float(0.03, 1.0, log=True),  # backbone LR = lr x this; the new head gets lr
        "freeze_epochs": Int(0, 2),  # epochs with the backbone frozen while the head learns
    },
    # seed 000's ResNet-50 (61.8 %): AdamW 1e-4, batch 32, weight decay 1e-4, label smoothing 0.1, sampler and
    # loss weights 1/sqrt(n), the whole network at one LR; jitter 0.2 (strong at s 0.5)
    recipes=(
        dict(
            arch="resnet50",
            lr=1e-4,
            batch_size=32,
            weight_decay=1e-4,
            label_smoothing=0.1,
            sampler_power=0.5,
            loss_weight_power=0.5,
            mixup_prob=0.0,
            backbone_lr_scale=1.0,
            freeze_epochs=0,
            aug_strength=0.5,
        ),
    ),
)
