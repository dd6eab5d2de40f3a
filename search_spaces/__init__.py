"""The family registry: a family is one file in this folder plus one entry here.

Each family module provides:
  ARCHS: tuple[str, ...]                      architectures searched within the family
  IMAGE_SIZE: int                             default input side in pixels
  GRACE_EPOCHS: int                           ASHA grace period: epochs every trial gets before it can be stopped
  space(trial, arch=None) -> dict             define-by-run Optuna space; returns TrialConfig fields
  build_model(cfg, num_classes, image_size)   -> torch.nn.Module
Tests are parametrised over FAMILIES, so a new entry is covered without a new test.
"""
from search_spaces import scratch

FAMILIES = {
    "scratch": scratch,
}


def get_family(name: str):
    """The family module for `name`; ValueError naming the known ones otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown family {name!r}; choose one of: {', '.join(FAMILIES)}") from None
