"""`scratch`: CNNs trained from random init, the seeds' SimpleCNN and DeepCNN (CPU-friendly).

Priors from the WikiArt study (docs/recipes.md, 000): AdamW 5e-4, batch 32-128, weight decay 1e-4,
label smoothing 0.1, dropout 0.3 (SimpleCNN) / 0.5 (DeepCNN); reached ~48 % / ~55 % macro F1 on 27 styles.
Run:  python tune.py --family scratch
"""

from search_spaces.space import Choice, Family, Float


def build(cfg, num_classes, image_size, weights):
    from search_spaces import nets  # noqa: F401  registers simple_cnn / deep_cnn with timm (imports torch: here, not at import)

    return weights.create(cfg.timm_name, num_classes, image_size=image_size, drop_rate=cfg.dropout, width=cfg.width)


FAMILY = Family(
    name="scratch",
    archs={"simple_cnn": "simple_cnn", "deep_cnn": "deep_cnn"},  # already CPU-sized: no stand-ins
    build=build,
    space={
        "lr": Float(1e-4, 3e-3, log=True),
        "batch_size": Choice([32, 64, 128]),
        "weight_decay": Float(1e-5, 5e-2, log=True),
        "dropout": Float(0.1, 0.6),
        "width": Choice([0.25, 0.5, 1.0]),  # channel multiplier; 1.0 = the seeds' exact layers
    },
    # seed 000's DeepCNN (~55 %; its SimpleCNN reached ~48 %): AdamW 5e-4, batch 32, weight decay 1e-4, label
    # smoothing 0.1, dropout 0.5, sampler and loss weights 1/sqrt(n) (power 0.5), no MixUp; jitter 0.2 (strong, s 0.5)
    recipes=(
        dict(
            arch="deep_cnn",
            lr=5e-4,
            batch_size=32,
            weight_decay=1e-4,
            label_smoothing=0.1,
            dropout=0.5,
            width=1.0,
            sampler_power=0.5,
            loss_weight_power=0.5,
            mixup_prob=0.0,
            aug_strength=0.5,
        ),
    ),
    shape_params=("width",),
    image_size=64,  # px; scratch CNNs see small inputs (the seeds used 224 on a GPU)
    pretrained=False,  # random init; --pretrained does not apply
    head=lambda model: model.head[-1],
    saliency_layer=lambda model: (model.features, None),
)
