"""A family added at run time (registered by a plugin or a test, not listed in search_spaces) is loaded back by a
fresh process that never registered it: a scoring process, analysis.predict, the served model.

python -m pytest tests/test_family_loading.py -q

The family is defined at the top level of this module, registered here, and a checkpoint is saved with it as a
trial would; another Python, started in the checkout, loads the checkpoint and predicts. Its answer must match
this process's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from search_spaces import FAMILIES, FAMILY_MODULES_ENV, register
from search_spaces.space import Family, Float
from trainables import checkpoint
from trainables.data.builtin_dataset import STYLES, render
from trainables.pretrained import Weights

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["cubism", "impressionism", "pointillism"]
NORM = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


def _build(cfg, num_classes, image_size, weights):
    return weights.create(cfg.timm_name, num_classes, drop_rate=cfg.dropout, ls_init_value=cfg.layer_scale)


TOY = Family(
    name="toy_loading",
    archs={"test_convnext": "test_convnext"},
    build=_build,
    space={"layer_scale": Float(1e-3, 1.0, log=True)},  # a knob no built-in family has
    image_size=32,
    pretrained=False,
)

FRESH = """
import json, sys
from search_spaces import FAMILIES
from trainables import checkpoint

assert "toy_loading" not in FAMILIES, "the fresh process must not know the family before loading"
clf = checkpoint.load(sys.argv[1])
print(json.dumps({"family": clf.trial_config.family.name, "layer_scale": clf.trial_config.layer_scale,
                  "top": clf.top_k([sys.argv[2]], 2)}))
"""


@pytest.fixture
def family():
    fam = register(TOY)  # at run time, as a plugin does when it is imported
    yield fam
    FAMILIES.pop(fam.name)


def test_a_checkpoint_of_a_family_added_at_run_time_loads_in_a_fresh_process(family, tmp_path):
    torch.manual_seed(0)
    cfg = family.config(layer_scale=0.1)
    model = family.build(cfg, len(CLASSES), 32, Weights("none"))
    ckpt = checkpoint.save(tmp_path, model, CLASSES, cfg, 32, NORM, "crop", 2, {"val_macro_f1": 0.5})
    image = tmp_path / "image.png"
    render(next(iter(STYLES)), np.random.default_rng(0)).save(image)
    expected = checkpoint.load(ckpt).top_k([image], 2)

    env = {**os.environ, FAMILY_MODULES_ENV: __name__}  # the user names the plugin's module: it may be imported
    proc = subprocess.run(
        [sys.executable, "-c", FRESH, str(ckpt), str(image)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["family"] == "toy_loading" and out["layer_scale"] == pytest.approx(0.1)
    assert [c for c, _ in out["top"][0]] == [c for c, _ in expected[0]]
    assert [p for _, p in out["top"][0]] == pytest.approx([p for _, p in expected[0]], abs=1e-5)
