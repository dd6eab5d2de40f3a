"""The family registry: a family is one file in this folder plus one entry here.

Each family module provides:
  ARCHS: dict[str, str]        architecture key -> timm name (or model class), searched within the family
  STANDINS: dict[str, str]     CPU-sized stand-ins, used only when asked for (--smoke / --standins)
  IMAGE_SIZE: int              default input side in pixels
  GRACE_EPOCHS: int            ASHA grace period: epochs every trial gets before it can be stopped
  PRETRAINED: bool             whether build_model loads pretrained weights (--pretrained / --weights-dir)
  AUGMENT: str                 augmentation recipe that aug_strength scales (trainables.data.RECIPES)
  space(trial, arch=None, standins=False) -> dict      define-by-run Optuna space -> TrialConfig fields
  build_model(cfg, num_classes, image_size, weights)   -> torch.nn.Module
Tests are parametrised over FAMILIES, so a new entry is covered without a new test.
"""
from __future__ import annotations

import functools

from search_spaces import cnn, hybrid, scratch, transformers

FAMILIES = {
    "scratch": scratch,
    "cnn": cnn,
    "transformers": transformers,
    "hybrid": hybrid,
}
ALL = "all"   # --family all: one study across every family under one budget


def get_family(name: str):
    """The family module for `name`; ValueError naming the known ones otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown family {name!r}; choose one of: {', '.join([*FAMILIES, ALL])}") from None


def arch_choices(family, standins: bool) -> dict:
    return (family.STANDINS or family.ARCHS) if standins else family.ARCHS


class _Prefixed:
    """An Optuna trial whose parameter names carry a family prefix, so families may give one name
    (`arch`, `batch_size`) different choices inside one `all` study."""

    def __init__(self, trial, prefix: str):
        self._trial, self._prefix = trial, prefix

    def __getattr__(self, attr):
        fn = getattr(self._trial, attr)
        if attr.startswith("suggest_"):
            return lambda name, *a, **kw: fn(f"{self._prefix}{name}", *a, **kw)
        return fn


def _space(trial, family: str, arch: str | None, standins: bool) -> dict:
    if family == ALL:
        family = trial.suggest_categorical("family", list(FAMILIES))
        return {"trial": FAMILIES[family].space(_Prefixed(trial, f"{family}."), standins=standins)}
    return {"trial": FAMILIES[family].space(trial, arch=arch, standins=standins)}


def make_space(family: str, arch: str | None = None, standins: bool = False):
    """Define-by-run function for OptunaSearch. The trial's TrialConfig fields sit under "trial" (Tune
    also shows the raw Optuna parameters beside it)."""
    return functools.partial(_space, family=family, arch=arch, standins=standins)
