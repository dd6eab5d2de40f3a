"""The built-in dataset: real files, >= 8 classes, >= 10:1 imbalance, reproducible, and classes a model can
tell apart (and not by chance)."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import recall_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from trainables.data import augment, decode
from trainables.data.builtin_dataset import CLASS_COUNTS, STYLES, ensure_builtin_dataset, render
from trainables.data.scan import scan

pytestmark = pytest.mark.unit


def test_written_as_real_image_files_in_class_folders(tmp_path):
    root = ensure_builtin_dataset(tmp_path / "ps")
    source = scan(root)
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


def test_reproducible():
    a = np.asarray(render("cubism", np.random.default_rng(5)))
    b = np.asarray(render("cubism", np.random.default_rng(5)))
    c = np.asarray(render("cubism", np.random.default_rng(6)))
    assert np.array_equal(a, b) and (a.shape != c.shape or not np.array_equal(a, c))


def _statistics(image) -> np.ndarray:
    """34 simple numbers of an image: per channel mean, std and an 8-bin histogram; mean |gradient| in x and y."""
    a = np.asarray(image, dtype=np.float32) / 255
    gray = a.mean(2)
    hist = [np.histogram(a[..., c], bins=8, range=(0, 1))[0] / gray.size for c in range(3)]
    edges = [np.abs(np.diff(gray, axis=1)).mean(), np.abs(np.diff(gray, axis=0)).mean()]
    return np.concatenate([a.mean((0, 1)), a.std((0, 1)), edges, *hist])


def test_classes_differ_on_held_out_images_and_shuffled_labels_do_not():
    """A logistic regression on simple image statistics, trained on half of 40 images per style, recognises
    every style on the other half well above chance (1/8); the same model on shuffled labels stays near chance."""
    rng, per_class = np.random.default_rng(0), 40
    x = np.array([_statistics(render(style, rng)) for style in STYLES for _ in range(per_class)])
    y = np.repeat(np.arange(len(STYLES)), per_class)
    order = np.random.default_rng(1).permutation(len(y))
    train, test = order[: len(y) // 2], order[len(y) // 2 :]

    def held_out(labels):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x[train], labels[train])
        return model.predict(x[test])

    chance = 1 / len(STYLES)
    recall = recall_score(y[test], held_out(y), average=None)  # per style
    assert recall.mean() >= 4 * chance and recall.min() >= 2 * chance, dict(zip(STYLES, recall.round(2)))
    shuffled = np.random.default_rng(2).permutation(y)
    assert np.mean(held_out(shuffled) == shuffled[test]) <= 2 * chance
