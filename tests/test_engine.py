"""The pure-torch engine on CPU: AMP choices, MixUp/CutMix soft targets, class-weighted loss."""

import math

import numpy as np
import pytest
import timm.data
import torch

from search_spaces import FAMILIES
from trainables import engine
from trainables.pretrained import Weights

pytestmark = pytest.mark.unit


def test_amp_modes_on_cpu():
    cpu = torch.device("cpu")
    assert engine.amp_setup("off", cpu) == (None, None)
    assert engine.amp_setup("bf16", cpu) == (torch.bfloat16, None)
    assert engine.amp_setup("auto", cpu)[1] is None  # GradScaler only for fp16 on CUDA
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        engine.amp_setup("fp16", cpu)


@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_epoch_with_mixup_and_class_weights_learns(amp):
    torch.manual_seed(0)
    np.random.seed(0)  # timm's Mixup draws from numpy's global generator
    cfg = FAMILIES["scratch"].config("simple_cnn", width=0.25, dropout=0.0)
    model = cfg.family.build(cfg, 3, 16, Weights("none"))
    x, y = torch.randn(64, 3, 16, 16), torch.randint(0, 3, (64,))
    x[y == 1] += 2.0
    x[y == 2] -= 2.0
    loader = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]
    opt = engine.make_optimizer(model, 3e-3, 0.0)
    sched = engine.make_scheduler(opt, len(loader), 8, 0)
    mix = timm.data.Mixup(mixup_alpha=0.3, cutmix_alpha=1.0, prob=0.5, num_classes=3)
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor([0.5, 1.0, 2.0]))
    dtype, scaler = engine.amp_setup(amp, torch.device("cpu"))
    losses, step = [], 0
    for _ in range(8):
        out, step = engine.train_one_epoch(
            model,
            loader,
            opt,
            sched,
            loss_fn,
            torch.device("cpu"),
            amp_dtype=dtype,
            scaler=scaler,
            grad_clip=1.0,
            step=step,
            mix=mix,
        )
        losses.append(out["train_loss"])
    assert step == 32 and all(math.isfinite(v) for v in losses)
    assert sum(losses[-2:]) < sum(losses[:2])
