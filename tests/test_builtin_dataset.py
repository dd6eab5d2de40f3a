"""The built-in dataset: real files, >= 8 classes, >= 10:1 imbalance, reproducible, and not trivial."""

import numpy as np

from trainables.data import augment, dataset, decode
from trainables.data.builtin_dataset import CLASS_COUNTS, STYLES, ensure_builtin_dataset, render


def test_written_as_real_image_files_in_class_folders(tmp_path):
    root = ensure_builtin_dataset(tmp_path / "ps")
    source = dataset.scan(root)
    classes, paths, labels = source.classes, source.paths, source.labels
    assert not source.skipped
    assert classes == sorted(CLASS_COUNTS) and len(classes) >= 8
    counts = np.bincount(labels)
    assert counts.max() / counts.min() >= 10
    assert {p.rsplit(".", 1)[1] for p in paths} == {"jpg", "png"}
    img = augment.preprocess(32, augment.IMAGENET_MEAN, augment.IMAGENET_STD)(decode.decode_rgb(paths[0]))
    assert img.shape == (3, 32, 32)
    mtime = (root / ".complete").stat().st_mtime
    assert ensure_builtin_dataset(root) == root and (root / ".complete").stat().st_mtime == mtime  # cached


def test_reproducible_and_classes_differ():
    a = np.asarray(render("cubism", np.random.default_rng(5)))
    b = np.asarray(render("cubism", np.random.default_rng(5)))
    assert np.array_equal(a, b)
    means = [np.asarray(render(s, np.random.default_rng(1)), dtype=float).std() for s in STYLES]
    assert len(set(np.round(means, 3))) == len(STYLES)
