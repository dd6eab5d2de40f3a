"""benchmarks/hot_paths.py on tiny inputs, in process: the before and now variants it times must agree (the same
bootstrap intervals; the same augmented pixels per seed) or its ratios would compare different work.
The full run is `python benchmarks/hot_paths.py` (about a minute on 2 cores)."""

import numpy as np
import pytest
import torch

from benchmarks import hot_paths
from trainables.data import augment, loaders

pytestmark = pytest.mark.unit


def test_both_bootstraps_give_the_same_intervals():
    r = hot_paths.bootstrap(142, 8, 30, 30)  # 8 classes: top-5 too
    assert r["max_interval_diff"] == pytest.approx(0, abs=1e-12) and r["before_s"] > 0 and r["now_s"] > 0


def test_a_seeded_draw_gives_the_pixels_torch_manual_seed_gave():
    """CachedImages seeds the CPU generator alone: the same pixels as torch.manual_seed, which the before
    variant of the benchmark times."""
    pictures = np.random.default_rng(0).integers(0, 256, (2, 48, 48, 3), dtype=np.uint8)
    ds = loaders.CachedImages(pictures, [0, 1], [0, 1], augment.sample_transform(32, True, 1.0, "strong"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        before = ds.transform(torch.from_numpy(np.array(pictures[1])).permute(2, 0, 1))
    assert torch.equal(ds[(1, 11)][0], before)
    assert hot_paths.draws(8)["now_ms"] > 0
