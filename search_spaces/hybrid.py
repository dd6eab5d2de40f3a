"""`hybrid`: the CNN-RNN of seed 003, a pretrained ResNet-50 feature map read by row and column GRUs.

Priors (docs/recipes.md, 003): AdamW 8e-4 for the new modules and 1.5e-4 for the backbone (scale ~0.19),
label smoothing 0.03, early backbone frozen for some epochs, grad clip 1.0.
Run:  python tune.py --family hybrid --data /data/wikiart
"""

from search_spaces.hooks import last_stage
from search_spaces.space import Choice, Family, Float, Int


def build(cfg, num_classes, image_size, weights):
    from search_spaces.nets import HybridCNNRNN  # torch at build time, not when the family is imported

    return HybridCNNRNN(weights.create(cfg.timm_name, num_classes=0, global_pool=""), num_classes, dropout=cfg.dropout)


FAMILY = Family(
    name="hybrid",
    archs={"resnet50_bigru": "resnet50.a1_in1k"},
    standins={"test_resnet_bigru": "test_resnet"},
    build=build,
    space={
        "lr": Float(2e-4, 2e-3, log=True),
        "batch_size": Choice([16, 32]),
        "label_smoothing": Float(0.0, 0.1),
        "aug_strength": Float(0.2, 1.0),
        "dropout": Float(0.1, 0.5),
        "backbone_lr_scale": Float(0.05, 0.5, log=True),
        "freeze_epochs": Int(0, 2),
    },
    # seed 003: AdamW 8e-4 for the new modules, 1.5e-4 for the backbone (scale 0.1875), label smoothing 0.03,
    # MixUp / CutMix p 0.35, early backbone frozen (1 epoch here), moderate jitter, RandomErasing (strong, s 0.5)
    recipes=(
        dict(
            lr=8e-4,
            backbone_lr_scale=0.1875,
            batch_size=16,
            label_smoothing=0.03,
            mixup_prob=0.35,
            freeze_epochs=1,
            sampler_power=0.5,
            aug_strength=0.5,
        ),
    ),
    head=lambda model: model.head,
    new_parameters=lambda model: model.new_parameters(),
    saliency_layer=lambda model: last_stage(model.backbone),
)
