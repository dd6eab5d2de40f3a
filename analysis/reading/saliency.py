"""Grad-CAM overlays for a checkpoint's Classifier, for every model family (pytorch-grad-cam's GradCAM).

The layer Grad-CAM reads is the family's `saliency_layer` hook (search_spaces/hooks.py: the last stage of a
timm CNN, a ViT's last block as a patch grid, the scratch CNNs' features, the hybrid's backbone). The
heatmap has that layer's resolution, upsampled bilinearly to the input crop; a 1 x 1 map (a stride-32 CNN
at 32 px) carries no spatial information and comes out all zero.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

FILENAME = "gradcam.png"


def cams(
    model: nn.Module, layer: tuple, batch: torch.Tensor, targets: Optional[Sequence[int]] = None
) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM of `targets` (default: each image's predicted class) for a preprocessed batch [B, 3, S, S];
    `layer` is (target layer, token reshape or None), as the model's family names it.

    Returns (maps float32 [B, S, S] in [0, 1], each min-max scaled; probabilities float32 [B, K]).
    The model is left as it was: train/eval mode restored, parameter .grad restored, hooks removed;
    parameters and buffers are not touched (eval mode: no BatchNorm statistics update)."""
    # pytorch-grad-cam (with OpenCV) takes ~6 s to import: only when a map is drawn, not for every evaluate import
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer, reshape = layer
    params = list(model.parameters())
    saved_grads = [p.grad for p in params]
    was_training = model.training
    device = params[0].device if params else torch.device("cpu")
    # the input requires grad so the target layer's output does even where parameters are frozen
    x = batch.detach().to(device).float().requires_grad_(True)
    rnn = any(isinstance(m, nn.RNNBase) for m in model.modules())
    cam = GradCAM(model=model, target_layers=[layer], reshape_transform=reshape)  # sets eval mode
    try:
        # cuDNN refuses an RNN backward in eval mode (the hybrid's GRUs); the native kernels do not
        with torch.enable_grad(), torch.backends.cudnn.flags(enabled=not rnn):
            maps = cam(
                input_tensor=x, targets=None if targets is None else [ClassifierOutputTarget(int(t)) for t in targets]
            )
            probs = cam.outputs.detach().float().softmax(1).cpu().numpy()
    finally:
        cam.activations_and_grads.release()  # not `with`: its __exit__ swallows IndexError
        cam.outputs = None
        for p, g in zip(params, saved_grads):
            p.grad = g
        model.train(was_training)
    return np.clip(np.nan_to_num(maps.astype(np.float32)), 0.0, 1.0), probs


def _unnormalise(x: torch.Tensor, normalization: dict) -> np.ndarray:
    """Normalised [3, S, S] -> float [S, S, 3] in [0, 1]: the crop the model saw."""
    mean = torch.tensor(normalization["mean"], dtype=x.dtype).view(3, 1, 1)
    std = torch.tensor(normalization["std"], dtype=x.dtype).view(3, 1, 1)
    return (x * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()


def overlays(
    classifier, images: list, labels: Optional[list[int]], folder: Path, n: int = 6, return_cams: bool = False
):
    """One PNG (`folder/gradcam.png`) for the first n images: per image the input crop (un-normalised, as the
    model saw it) and the Grad-CAM of the predicted class over it, titled "true X / pred Y (p=0.87)"
    (green when right, red when wrong; "pred Y (p=..)" without labels). `images` are anything
    Classifier.preprocess takes (paths, bytes, uint8 arrays); `labels` index classifier.classes.
    Returns the PNG path, or (path, maps [k, S, S], probabilities [k, K]) with return_cams."""
    from pytorch_grad_cam.utils.image import show_cam_on_image  # slow import (cams)

    images = list(images)[:n]
    if not images:
        raise ValueError("overlays needs at least one image")
    if labels is not None:
        labels = list(labels)[: len(images)]
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
    batch = torch.stack([classifier.preprocess(img) for img in images])
    maps, probs = cams(
        classifier.model, classifier.trial_config.family.saliency_layer(classifier.model), batch.to(classifier.device)
    )
    pred = probs.argmax(1)

    k = len(images)
    pairs_per_row = min(3, k)
    rows = math.ceil(k / pairs_per_row)
    fig = plt.figure(figsize=(4.6 * pairs_per_row, 2.7 * rows))
    subfigs = np.atleast_1d(fig.subfigures(rows, pairs_per_row, squeeze=False)).ravel()
    for i, sub in enumerate(subfigs):
        if i >= k:
            sub.set_visible(False)
            continue
        crop = _unnormalise(batch[i], classifier.normalization)
        over = show_cam_on_image(crop.astype(np.float32), maps[i], use_rgb=True, image_weight=0.5)
        ax_in, ax_cam = sub.subplots(1, 2)
        ax_in.imshow(crop)
        ax_cam.imshow(over)
        for ax in (ax_in, ax_cam):
            ax.set_xticks([])
            ax.set_yticks([])
        ax_in.set_xlabel("input", fontsize=8)
        ax_cam.set_xlabel("Grad-CAM", fontsize=8)
        name = classifier.classes[pred[i]]
        title = f"pred {name} (p={probs[i, pred[i]]:.2f})"
        color = "black"
        if labels is not None:
            title = f"true {classifier.classes[labels[i]]} / {title}"
            color = "tab:green" if labels[i] == pred[i] else "tab:red"
        sub.suptitle(title, fontsize=9, color=color)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / FILENAME
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return (path, maps, probs) if return_cams else path
