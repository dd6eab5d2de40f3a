"""The decode cache: built once per (files, size, policy), shared by concurrent trials, rebuilt on change."""
import multiprocessing as mp

import numpy as np
import torch
from PIL import Image

from trainables import cache, data


def _open(args):
    paths, root = args
    return cache.open_or_build(paths, 32, "crop", root=root)[2]


def test_concurrent_trials_build_once_and_read_the_same_pixels(tiny_folder, tmp_path):
    paths = data.scan(tiny_folder).paths
    with mp.get_context("spawn").Pool(2) as pool:
        built = pool.map(_open, [(paths, tmp_path)] * 2)
    assert sorted(built) == [False, True]                    # one trial built it, the other waited and reused
    images, meta, again = cache.open_or_build(paths, 32, "crop", root=tmp_path)
    assert not again and images.shape == (len(paths), cache.cached_side(32), cache.cached_side(32), 3)
    assert meta["bad"] == [] and images.dtype == np.uint8 and images[0].any()


def test_changes_rebuild_and_policies_differ(tmp_path):
    (tmp_path / "a").mkdir()
    img = Image.fromarray(np.full((20, 60, 3), 200, np.uint8))   # wide: crop and letterbox differ
    img.save(tmp_path / "a" / "x.png")
    paths = [str(tmp_path / "a" / "x.png")]
    root = tmp_path / "cache"
    crop, _, _ = cache.open_or_build(paths, 16, "crop", root=root)
    box, _, built = cache.open_or_build(paths, 16, "letterbox", root=root)
    assert built and crop[0].min() == 200 and box[0].min() == 0   # letterbox pads with black
    Image.fromarray(np.full((20, 60, 3), 50, np.uint8)).save(paths[0])
    changed, _, built = cache.open_or_build(paths, 16, "crop", root=root)
    assert built and changed[0].max() == 50


def test_cached_dataset_applies_augmentation_per_sample(tiny_folder, tmp_path):
    splits = data.make_splits(data.scan(tiny_folder), 0.2, 0.2, seed=0)
    images, _, _ = cache.open_or_build(splits.paths, 32, root=tmp_path)
    ds = cache.CachedImages(images, splits.train, splits.labels[splits.train], data.build_transform(32, True, 1.0))
    a, b = ds[0][0], ds[0][0]
    assert a.shape == (3, 32, 32) and a.dtype == torch.float32 and not torch.equal(a, b)
    assert ds[3][1] == splits.labels[splits.train][3]
