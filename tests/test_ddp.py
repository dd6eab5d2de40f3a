"""DDP is real: two gloo processes train the same model through the trial's data path, their weights stay
identical, and the validation metrics they report equal those computed on the whole split in one process.
Loader processes change nothing: 0 and 2 give the same training and the same validation metrics."""

import json
import os
import random
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

from search_spaces import get_family
from trainables import engine
from trainables.data import cache, dataset, loaders
from trainables.data.scan import scan
from trainables.net import free_port
from trainables.pretrained import Weights

pytestmark = pytest.mark.integration

SIZE, WORLD, CPU = 32, 2, torch.device("cpu")
CFG = get_family("scratch").config("simple_cnn", width=0.25, lr=2e-3, batch_size=16, dropout=0.1)


def _model(n_classes):
    torch.manual_seed(0)
    return CFG.family.build(CFG, n_classes, SIZE, Weights("none"))


def _data_path(splits, cache_dir, rank=0, world=1, workers=0):
    """The trial's own data path (trainables.data.loaders), on CPU, its decode cache in `cache_dir` (both ranks
    share it, as trials on a node do)."""
    images = cache.open_or_build(splits.paths, SIZE, root=Path(cache_dir))[0]
    return loaders.make(
        images,
        splits,
        splits.train,
        splits.val[rank::world],
        image_size=SIZE,
        batch_size=CFG.batch_size,
        aug_strength=0.5,
        recipe=CFG.family.augment,
        sampler_power=1.0,
        norm={},
        seed=0,
        rank=rank,
        world=world,
        device=CPU,
        workers=workers,
    )


def _train(model, splits, cache_dir, rank=0, world=1, workers=0, epochs=2) -> tuple[dict, loaders.Loaders]:
    torch.manual_seed(rank)
    random.seed(rank)  # timm's random erasing draws from Python's generator (the worker seeds it too)
    path = _data_path(splits, cache_dir, rank, world, workers)
    opt = engine.make_optimizer(model, CFG.lr, CFG.weight_decay)
    sched = engine.make_scheduler(opt, len(path.train), epochs, 0.5)
    train_model = DDP(model) if world > 1 else model
    step = 0
    for epoch in range(epochs):
        path.sampler.set_epoch(epoch)
        train, step = engine.train_one_epoch(
            train_model, path.train, opt, sched, torch.nn.CrossEntropyLoss(), CPU, grad_clip=1.0, step=step
        )
    return {**train, "steps": step}, path


def _rank_main(rank, root, port, out, cache_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    splits = dataset.make_splits(scan(root), 0.25, 0.0, seed=0)
    model = _model(len(splits.classes))
    train, path = _train(model, splits, cache_dir, rank, WORLD)
    val = engine.evaluate(model, path.val, CPU)
    torch.save(model.state_dict(), os.path.join(out, f"rank{rank}.pt"))
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({**train, **val}, f)
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("ddp-cache")


@pytest.fixture(scope="module")
def ddp_run(tiny_folder, tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_rank_main, args=(str(tiny_folder), free_port(), str(out), str(cache_dir)), nprocs=WORLD, join=True)
    return out


def test_weights_identical_across_ranks_after_training(ddp_run):
    a, b = (torch.load(ddp_run / f"rank{r}.pt") for r in range(WORLD))
    init = _model(4).state_dict()  # 4 classes in TINY_COUNTS
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs between ranks"
    moved = [k for k in a if a[k].is_floating_point() and not torch.equal(a[k], init[k])]
    assert moved, "training changed no weight"


def test_reported_metrics_equal_whole_split_in_one_process(ddp_run, tiny_folder, cache_dir):
    reports = [json.loads((ddp_run / f"rank{r}.json").read_text()) for r in range(WORLD)]
    assert reports[0] == reports[1]  # every rank reports the same all-reduced dict
    splits = dataset.make_splits(scan(tiny_folder), 0.25, 0.0, seed=0)
    model = _model(len(splits.classes))
    model.load_state_dict(torch.load(ddp_run / "rank0.pt"))
    single = engine.evaluate(model, _data_path(splits, cache_dir).val, CPU)
    for k, v in single.items():
        assert reports[0][k] == pytest.approx(v, abs=1e-6), k
    assert reports[0]["steps"] > 0 and reports[0]["train_loss"] > 0


def test_loader_processes_change_nothing(tiny_folder, cache_dir):
    """Each draw's crop is seeded by the sampler, not by the loader process that runs it."""
    splits = dataset.make_splits(scan(tiny_folder), 0.25, 0.0, seed=0)
    results = []
    for workers in (0, 2):
        model = _model(len(splits.classes))
        train, path = _train(model, splits, cache_dir, workers=workers)
        results.append({**train, **engine.evaluate(model, path.val, CPU)})
    assert results[0] == results[1]
    assert results[0]["steps"] > 0 and 0 <= results[0]["val_macro_f1"] <= 1
