"""Checkpoints load without pickle, and families come only from our own code.

python -m pytest tests/test_safe_loading.py -q

Every file artsweep reads back (a trial's model.pt from MLflow, the resume state and per-rank RNG files from
--storage) is written by torch.save and read with weights_only=True: a file holding an object whose unpickling
writes a file is refused by every loader with one line, and the file does not appear. Real checkpoints (a
family's real model, a real AdamW, timm scheduler and GradScaler after a real step, real metrics) hold nothing
that needs pickle, and round-trip exactly, RNG streams included. A checkpoint naming a module outside
search_spaces is not imported unless the user lists it in ARTSWEEP_FAMILY_MODULES.
"""

from __future__ import annotations

import math
import pathlib
import pickle
import random
import sys
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from search_spaces import FAMILIES, FAMILY_MODULES_ENV, get_family
from search_spaces.space import TrialConfig
from trainables import checkpoint, engine, metrics, weights_only
from trainables.pretrained import Weights
from trainables.trial import resume

pytestmark = pytest.mark.unit

CLASSES = ["cubism", "impressionism", "pointillism"]
NORM = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


class WritesAFile:
    """Unpickled, it writes `target`: what an altered checkpoint would do (run any code) on the loading machine."""

    def __init__(self, target: pathlib.Path):
        self.target = target

    def __reduce__(self):
        return pathlib.Path.write_text, (self.target, "code ran while loading a checkpoint")


def _trial(seed: int = 0):
    """A real model, AdamW, timm cosine schedule and GradScaler, one real step taken: as a trial holds them."""
    torch.manual_seed(seed)
    cfg = get_family("scratch").config("simple_cnn", width=0.25)
    model = cfg.family.build(cfg, len(CLASSES), 32, Weights("none"))
    optimizer = engine.make_optimizer(model, cfg.lr, cfg.weight_decay, head=cfg.family.trainable_parameters(model))
    scheduler = engine.make_scheduler(optimizer, steps_per_epoch=4, epochs=2, warmup_epochs=0.5)
    scaler = torch.amp.GradScaler("cpu")
    loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 0]))
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    scheduler.step_update(1)
    return cfg, model, optimizer, scheduler, scaler


def _values(epoch: int) -> dict:
    """An epoch's metrics as the worker reports them: metrics.compute's (NumPy floats) plus the worker's own."""
    rng = np.random.default_rng(epoch)
    values = metrics.compute(rng.normal(size=(12, len(CLASSES))), rng.integers(0, len(CLASSES), 12))
    return {**values, "epoch": epoch, "train_loss": 1.0 / epoch}


def _draws() -> tuple:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), np.random.randn(1).tolist(), random.random()


@dataclass
class Saved:
    best: pathlib.Path  # model.pt
    folder: pathlib.Path  # the resume folder: state.pt, rng-0.pt, rng-1.pt
    cfg: TrialConfig
    objects: tuple  # model, optimizer, scheduler, scaler as saved
    progress: resume.Progress
    draws: tuple  # what rank 1's RNGs drew right after its RNG file was written


@pytest.fixture
def saved(tmp_path) -> Saved:
    cfg, *objects = _trial()
    best = checkpoint.save(tmp_path, objects[0], CLASSES, cfg, 32, NORM, "crop", 2, _values(2))
    progress = resume.Progress(step=8, best=_values(2)[metrics.OBJECTIVE_KEY], history=[_values(1), _values(2)])
    folder = tmp_path / "resume"
    folder.mkdir()
    torch.manual_seed(11), np.random.seed(12), random.seed(13)
    np.random.randn(1)  # leaves a cached Gaussian in NumPy's state (has_gauss 1)
    resume.save(folder, 1, progress, *objects)
    draws = _draws()
    torch.manual_seed(21), np.random.seed(22), random.seed(23)
    resume.save(folder, 0, progress, *objects)
    return Saved(best, folder, cfg, tuple(objects), progress, draws)


def test_real_checkpoints_need_no_pickle(saved):
    for path in (saved.best, saved.folder / resume.STATE, saved.folder / "rng-0.pt", saved.folder / "rng-1.pt"):
        assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == [], path


def test_a_checkpoint_round_trips(saved):
    clf = checkpoint.load(saved.best)
    assert clf.classes == CLASSES and clf.epoch == 2 and clf.image_size == 32 and clf.normalization == NORM
    assert clf.trial_config.values == saved.cfg.values and clf.trial_config.family is saved.cfg.family
    assert clf.metrics == pytest.approx(_values(2)) and all(type(v) in (int, float) for v in clf.metrics.values())
    for name, tensor in saved.objects[0].state_dict().items():
        assert torch.equal(clf.model.state_dict()[name], tensor), name


def test_resume_restores_weights_optimizer_schedule_and_rng_streams(saved):
    model, optimizer, scheduler, scaler = saved.objects
    _, *fresh = _trial(seed=1)  # other weights, and other RNG states
    before = fresh[0].state_dict()
    assert not all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
    restored = resume.load(saved.folder, 1, *fresh)
    assert _draws() == saved.draws  # torch, NumPy (its cached Gaussian too) and Python go on where rank 1 saved
    assert (restored.step, restored.epochs) == (8, 2) and restored.best == pytest.approx(saved.progress.best)
    assert restored.history == [pytest.approx(h) for h in saved.progress.history]
    for name, tensor in model.state_dict().items():
        assert torch.equal(fresh[0].state_dict()[name], tensor), name
    assert torch.equal(fresh[1].state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])
    assert fresh[2].state_dict() == scheduler.state_dict() and fresh[3].state_dict() == scaler.state_dict()


def test_the_payload_runs_code_under_pickle(tmp_path):
    """The payload below is real: plain pickle (what weights_only=False does) writes its file."""
    target = tmp_path / "ran.txt"
    pickle.loads(pickle.dumps(WritesAFile(target)))
    assert target.read_text().startswith("code ran")


@pytest.mark.parametrize(
    "where, write",
    [("model.pt", torch.save), ("model.pt", lambda obj, path: path.write_bytes(pickle.dumps(obj))),
     (resume.STATE, torch.save), ("rng-0.pt", torch.save)],
    ids=["model.pt", "model.pt-plain-pickle", "state.pt", "rng-0.pt"],
)  # fmt: skip
def test_every_loader_refuses_a_checkpoint_that_runs_code(saved, tmp_path, where, write):
    target = tmp_path / "ran.txt"
    path = saved.best if where == "model.pt" else saved.folder / where
    write({"model": WritesAFile(target), "torch": WritesAFile(target)}, path)
    with pytest.raises(weights_only.NeedsPickle) as refused:
        if where == "model.pt":
            checkpoint.load(path)
        else:
            resume.load(saved.folder, 0, *saved.objects)
    message = str(refused.value)
    assert "\n" not in message and f"{path} needs pickle to load" in message and "older artsweep" in message
    assert not target.exists()


def test_an_older_artsweeps_rng_file_is_refused_with_what_to_do(saved):
    """Before weights-only loading, the RNG file held NumPy's state as pickled: refused, naming the way out."""
    old = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    torch.save(old, saved.folder / "rng-0.pt")
    with pytest.raises(weights_only.NeedsPickle, match=r"numpy.*older artsweep.*without --resume"):
        resume.load(saved.folder, 0, *saved.objects)


def test_save_refuses_a_value_that_would_need_pickle(tmp_path):
    with pytest.raises(TypeError, match="would need pickle"):
        weights_only.save({"best": np.float64(0.5)}, tmp_path / "x.pt")
    assert weights_only.plain({"a": [np.float32(0.5), (np.int64(2), np.arange(2))]}) == {"a": [0.5, (2, [0, 1])]}
    assert math.isnan(weights_only.plain(np.float64("nan")))


PLUGIN = """
import pathlib
from search_spaces.space import Family

pathlib.Path({marker!r}).write_text("imported")  # a module's top level runs when it is imported
FAMILY = Family(name="evil_family", archs={{"test_convnext": "test_convnext"}}, build=lambda *a: None, image_size=32,
                pretrained=False)
"""


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """An importable module (`artsweep_plugin_probe`) whose top level writes a marker file and defines a family."""
    marker = tmp_path / "imported.txt"
    (tmp_path / "artsweep_plugin_probe.py").write_text(PLUGIN.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(FAMILY_MODULES_ENV, raising=False)
    yield "artsweep_plugin_probe", marker
    FAMILIES.pop("evil_family", None)
    sys.modules.pop("artsweep_plugin_probe", None)


def test_a_family_module_outside_search_spaces_is_not_imported(plugin):
    module, marker = plugin
    for named in (module, "os", "search_spaces_lookalike", ".cnn"):
        with pytest.raises(ValueError, match=rf"outside search_spaces and not listed in {FAMILY_MODULES_ENV}"):
            get_family("evil_family", named)
    assert not marker.exists() and module not in sys.modules and "evil_family" not in FAMILIES


def test_a_family_module_the_user_lists_is_imported(plugin, monkeypatch):
    module, marker = plugin
    monkeypatch.setenv(FAMILY_MODULES_ENV, f"other_plugin, {module}")
    assert get_family("evil_family", module).name == "evil_family" and marker.exists()


def test_a_module_inside_search_spaces_needs_no_listing(monkeypatch):
    monkeypatch.delenv(FAMILY_MODULES_ENV, raising=False)
    with pytest.raises(ValueError, match="unknown family 'nowhere' .nor a top-level value of search_spaces.cnn"):
        get_family("nowhere", "search_spaces.cnn")  # imported (ours), and it defines no such family
