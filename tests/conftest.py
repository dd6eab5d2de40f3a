"""Shared fixtures: small real image folders written by the tests themselves."""
from __future__ import annotations

import numpy as np
import pytest

from trainables.builtin_dataset import render

TINY_COUNTS = {"impressionism": 40, "pointillism": 24, "cubism": 12, "pop_art": 8}  # 5:1, 84 images


def write_folder(root, counts, seed=0):
    rng = np.random.default_rng(seed)
    for style, n in counts.items():
        (root / style).mkdir(parents=True)
        for i in range(n):
            render(style, rng).save(root / style / f"{i:03d}.{'png' if i % 2 else 'jpg'}")
    return root


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("tiny"), TINY_COUNTS)
