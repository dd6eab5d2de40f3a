"""Grad-CAM overlays for every registered family, followed from the registry: a new family (or stand-in) is
covered without a new test. Each model goes through checkpoint.save/load, as a trial's best checkpoint does."""

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from analysis.reading import saliency
from search_spaces import FAMILIES
from search_spaces.hooks import tokens_to_grid
from tests.conftest import write_folder
from trainables import checkpoint
from trainables.pretrained import Weights

pytestmark = pytest.mark.unit

CLASSES = ["impressionism", "pointillism", "cubism", "pop_art"]
SIZE = 64  # ViT stand-ins need a multiple of their 16 px patch; stride-32 CNNs get a 2 x 2 map (32 px: 1 x 1)
SPECS = [(name, arch) for name, fam in FAMILIES.items() for arch in fam.arch_choices(standins=True)]
REAL = [(name, arch) for name, fam in FAMILIES.items() if fam.standins for arch in fam.archs]


def _build(name, arch, size=SIZE, classes=len(CLASSES)):
    fam = FAMILIES[name]
    cfg = fam.config(arch, **({"width": 0.25} if "width" in fam.params() else {}))
    return cfg, fam.build(cfg, classes, size, Weights("none"))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """3 rendered paintings as a path, bytes and a uint8 array (everything Classifier.preprocess takes)."""
    root = write_folder(tmp_path_factory.mktemp("saliency"), {c: 1 for c in CLASSES[:3]})
    paths = [next((root / c).iterdir()) for c in CLASSES[:3]]
    return [paths[0], paths[1].read_bytes(), np.array(Image.open(paths[2]).convert("RGB"))], [0, 1, 2]


def _classifier(name, arch, folder):
    torch.manual_seed(0)
    cfg, model = _build(name, arch)
    data_cfg = timm.data.resolve_model_data_config(model)
    norm = {"mean": tuple(data_cfg["mean"]), "std": tuple(data_cfg["std"])}
    path = checkpoint.save(folder, model, CLASSES, cfg, SIZE, norm, "crop", 1, {})
    return checkpoint.load(path)


@pytest.mark.parametrize("name,arch", SPECS)
def test_overlays_for_every_family(name, arch, images, tmp_path):
    imgs, labels = images
    clf = _classifier(name, arch, tmp_path)
    before = {k: v.clone() for k, v in clf.model.state_dict().items()}

    png, maps, probs = saliency.overlays(clf, imgs, labels, tmp_path / "out", return_cams=True)

    assert png == tmp_path / "out" / saliency.FILENAME
    with Image.open(png) as im:
        pixels = np.asarray(im.convert("RGB"), dtype=np.float32)
    assert min(pixels.shape[:2]) > 200 and pixels.std() > 20
    assert maps.shape == (3, SIZE, SIZE) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert max(m.std() for m in maps) > 0.01, "every heatmap is constant"
    assert probs.shape == (3, len(CLASSES)) and np.allclose(probs.sum(1), 1, atol=1e-4)
    # nothing leaks into the model: same weights and buffers, no grads, eval mode, no hooks left behind
    assert all(torch.equal(before[k], v) for k, v in clf.model.state_dict().items())
    assert all(p.grad is None for p in clf.model.parameters())
    assert not clf.model.training
    assert not any(m._forward_hooks or m._backward_hooks for m in clf.model.modules())
    # the CAM's predictions are the classifier's own
    np.testing.assert_allclose(probs, clf.probabilities(imgs), atol=1e-4)


@pytest.mark.parametrize("name,arch", REAL)
def test_target_layer_of_full_size_archs(name, arch):
    """The searched (non-stand-in) architectures: the layer is a spatial map, and Grad-CAM runs on it."""
    cfg, model = _build(name, arch, classes=3)
    model.eval()
    layer, reshape = cfg.family.saliency_layer(model)
    assert any(m is layer for m in model.modules())
    assert (reshape is not None) == (name == "transformers")
    maps, probs = saliency.cams(model, (layer, reshape), torch.randn(1, 3, SIZE, SIZE))
    assert maps.shape == (1, SIZE, SIZE) and np.isfinite(maps).all() and maps.std() > 0.01


def test_frozen_model_in_train_mode_under_no_grad():
    """A frozen backbone (requires_grad False), a caller's no_grad and train mode change nothing."""
    cfg, model = _build("scratch", "simple_cnn", size=32, classes=3)
    model.requires_grad_(False)
    model.train()
    with torch.no_grad():
        maps, _ = saliency.cams(model, cfg.family.saliency_layer(model), torch.randn(2, 3, 32, 32), targets=[1, 2])
    assert maps.shape == (2, 32, 32) and maps.std() > 0
    assert model.training and all(p.grad is None and not p.requires_grad for p in model.parameters())


def test_vit_tokens_become_the_patch_grid():
    tokens = torch.arange(2 * (1 + 4 * 4) * 3, dtype=torch.float32).reshape(2, 17, 3)
    grid = tokens_to_grid(1)(tokens)
    assert grid.shape == (2, 3, 4, 4)
    assert torch.equal(grid[:, :, 0, 1], tokens[:, 2, :])  # token 1 is the first patch; row-major
    with pytest.raises(ValueError, match="square"):
        tokens_to_grid(2)(tokens)


def test_overlays_without_labels_and_more_images_than_n(images, tmp_path):
    imgs, _ = images
    clf = _classifier("scratch", "simple_cnn", tmp_path)
    png, maps, _ = saliency.overlays(clf, imgs * 3, None, tmp_path, n=4, return_cams=True)
    assert maps.shape[0] == 4 and Image.open(png).size[0] > 200
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        saliency.overlays(clf, imgs, [0, 1], tmp_path)
