"""`transformers`: pretrained ViT / CLIP / EVA02 vision transformers fine-tuned with a new head.

Priors (docs/recipes.md): ViT-B/16 in21k reached 66.9 % macro F1 on WikiArt styles with AdamW 1e-5,
batch 16, weight decay 0.01 and conservative augmentation; transformers need pretraining (seed 001).
Run:  python tune.py --family transformers --data /data/wikiart
"""

from search_spaces.hooks import vit_tokens
from search_spaces.space import Choice, Family, Float

FAMILY = Family(
    name="transformers",
    archs={
        "vit_b16": "vit_base_patch16_224.augreg_in21k",
        "vit_b32": "vit_base_patch32_224.augreg_in21k_ft_in1k",
        "openclip_vit_b16": "vit_base_patch16_clip_224.laion2b",
        "eva02_clip_b16": "eva02_base_patch16_clip_224.merged2b",
    },
    standins={"test_vit": "test_vit", "test_vit2": "test_vit2"},
    # img_size: timm resizes pretrained position embeddings when it differs from 224
    build=lambda cfg, num_classes, image_size, weights: weights.create(
        cfg.timm_name, num_classes, img_size=image_size, drop_rate=cfg.dropout, drop_path_rate=cfg.drop_path
    ),
    space={
        "lr": Float(3e-6, 1e-4, log=True),
        "batch_size": Choice([16, 32, 64]),
        "weight_decay": Float(1e-3, 1e-1, log=True),
        "mixup_prob": Float(0.0, 0.3),
        "dropout": Float(0.0, 0.3),
        "drop_path": Float(0.0, 0.2),  # stochastic depth rate
        "layer_decay": Float(0.6, 1.0),  # timm layer-wise LR decay per block towards the input
    },
    # seed 000's ViT-B/16 in21k (66.9 %): AdamW 1e-5, batch 16, weight decay 0.01, label smoothing 0.1, sampler
    # and loss weights 1/sqrt(n), conservative augmentation (crops keeping >= 90 %: the recipe at s 1), no MixUp
    recipes=(
        dict(
            arch="vit_b16",
            lr=1e-5,
            batch_size=16,
            weight_decay=0.01,
            label_smoothing=0.1,
            sampler_power=0.5,
            loss_weight_power=0.5,
            mixup_prob=0.0,
            aug_strength=1.0,
            layer_decay=1.0,
        ),
    ),
    # tight crops, small jitter: beat standard augmentation for ViT (65.3 -> 66.9 %)
    augment="conservative",
    channels_last=False,  # attention layers gain nothing from NHWC; the patch embedding is one convolution
    saliency_layer=vit_tokens,
)
