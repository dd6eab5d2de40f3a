"""tune.py's defaults that its --help names: the smoke study's and the demo's. Imports nothing, so `--help` answers
without loading torch, Ray or MLflow."""

CONFIRM_DEFAULT, CONFIRM_FROM = 3, 8  # --confirm: 3 configurations when the study runs at least 8 trials
SMOKE = dict(num_samples=4, max_epochs=2, image_size=32, max_train_images=256)  # --smoke defaults
DEMO = dict(
    num_samples=8,
    max_epochs=5,
    builtin_image_size=32,  # plain defaults
    # the demo (`python tune.py`, built-in data, no trial count or budget given): the same work on every machine,
    # so a slow one gets the same model later instead of a worse one: 4 trials, the first a DeepCNN at half width
    # that reaches ~0.77 val macro F1 by its 4th epoch at 32 px (0.69 at width 0.25, which plateaus there; width
    # 1.0 takes 4x as long per epoch: measured 2026-12-03 on the built-in data, seed 0), then TPE's. A 4-minute
    # budget caps it on a slow machine (docs/benchmarks.md: the demo takes 2-2.5 minutes on 2 cores).
    builtin_trials=4,
    builtin_time_budget="4m",
    builtin_starts={
        "scratch": dict(
            arch="deep_cnn",
            width=0.5,
            lr=1.4e-3,
            batch_size=64,
            weight_decay=5e-4,
            dropout=0.36,
            label_smoothing=0.15,
            sampler_power=0.64,
            loss_weight_power=0.14,
            mixup_prob=0.0,
            aug_strength=0.12,
        )
    },
)
