"""The two halves of augmentation: per-sample crop + flip in the loader, per-sample random ops batched on the
device, for every recipe the families use."""

import numpy as np
import pytest
import torch

from search_spaces import FAMILIES
from trainables.data import augment, loaders

pytestmark = pytest.mark.unit

RECIPES = sorted({f.augment for f in FAMILIES.values()})
MEAN, STD = torch.tensor(augment.IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(augment.IMAGENET_STD).view(1, 3, 1, 1)


def _picture(side=40, seed=0) -> torch.Tensor:
    """A uint8 [3, side, side] image with structure (gradients + blocks), so every op changes it."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 255, side)
    img = torch.stack(
        [
            ramp.view(1, -1).expand(side, side),
            ramp.view(-1, 1).expand(side, side),
            torch.rand(-(-side // 8), -(-side // 8), generator=g)
            .repeat_interleave(8, 0)
            .repeat_interleave(8, 1)[:side, :side]
            * 255,
        ]
    )
    return img.to(torch.uint8)


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_sample_of_a_batch_draws_its_own_parameters(recipe):
    torch.manual_seed(0)
    batch = torch.stack([_picture()[:, :32, :32]] * 16)  # 16 copies of one image
    out = augment.BatchAugment(True, 1.0, recipe)(batch)
    flat = out.flatten(1)
    distinct = {tuple(np.round(row.numpy()[:64], 4)) for row in flat}
    assert len(distinct) == 16, "two samples of a batch got the same augmentation"
    same = augment.BatchAugment(True, 1.0, recipe)(batch[:1])  # and one sample alone still varies
    assert not torch.equal(same, augment.BatchAugment(True, 1.0, recipe)(batch[:1]))


@pytest.mark.parametrize("recipe", RECIPES)
def test_strength_zero_is_resize_and_normalise_only(recipe):
    torch.manual_seed(0)
    img = _picture(37)
    sample = augment.sample_transform(32, True, 0.0, recipe)
    assert torch.equal(sample(img), sample(img))  # no random crop or flip at s = 0
    assert torch.equal(sample(img), augment.sample_transform(32, False)(img))  # what validation sees
    x = torch.stack([sample(img)] * 4)
    expected = (x.float() / 255 - MEAN) / STD
    assert torch.allclose(augment.BatchAugment(True, 0.0, recipe)(x), expected, atol=1e-6)
    assert torch.allclose(augment.BatchAugment(False, 1.0, recipe)(x), expected, atol=1e-6)  # validation: never


@pytest.mark.parametrize("recipe", RECIPES)
def test_strength_scales_how_far_images_move(recipe):
    batch = torch.stack([_picture(seed=i)[:, :32, :32] for i in range(32)])
    identity = augment.BatchAugment(True, 0.0, recipe)(batch)
    moved = []
    for s in (0.2, 1.0):
        torch.manual_seed(1)
        moved.append((augment.BatchAugment(True, s, recipe)(batch) - identity).abs().mean().item())
    assert 0 < moved[0] < moved[1]


def test_loader_half_is_seeded_per_draw_and_leaves_the_trainer_rng_alone():
    images = np.stack([_picture(48, seed=i).permute(1, 2, 0).numpy() for i in range(3)])
    ds = loaders.CachedImages(images, [0, 1, 2], [0, 1, 0], augment.sample_transform(32, True, 1.0, "strong"))
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, b, c = ds[(1, 7)][0], ds[(1, 7)][0], ds[(1, 8)][0]
    assert torch.equal(torch.get_rng_state(), state)
    assert a.dtype == torch.uint8 and a.shape == (3, 32, 32)
    assert torch.equal(a, b) and not torch.equal(a, c)
