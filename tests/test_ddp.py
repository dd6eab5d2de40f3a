"""DDP is real: two gloo processes train the same model, their weights stay identical, and the
validation metrics they report equal those computed on the whole split in one process."""
import json
import os
import tempfile
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from search_spaces import get_family
from trainables import cache, data, engine
from trainables.pretrained import Weights
from trainables.net import free_port

SIZE, WORLD = 32, 2
CACHE = Path(tempfile.mkdtemp(prefix="artsweep-ddp-cache-"))  # both ranks share it, as trials on a node do
CFG = get_family("scratch").config("simple_cnn", width=0.25, lr=2e-3, batch_size=16, dropout=0.1)


def _model(n_classes):
    torch.manual_seed(0)
    return CFG.family.build(CFG, n_classes, SIZE, Weights("none"))


def _images(splits):
    return cache.open_or_build(splits.paths, SIZE, root=CACHE)[0]


def _val_loader(splits, rank=0, world=1):
    idx = splits.val[rank::world]
    ds = cache.CachedImages(_images(splits), idx, splits.labels[idx], data.build_transform(SIZE, False))
    return DataLoader(ds, batch_size=8)


def _rank_main(rank, root, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    splits = data.make_splits(data.scan(root), 0.25, 0.0, seed=0)
    model = _model(len(splits.classes))
    ddp = DDP(model)
    sampler = data.WeightedShardSampler(splits.labels[splits.train], 1.0, WORLD, rank, seed=0)
    ds = cache.CachedImages(_images(splits), splits.train, splits.labels[splits.train],
                            data.build_transform(SIZE, True, 0.5))
    loader = DataLoader(ds, CFG.batch_size // WORLD, sampler=sampler, drop_last=True)
    opt = engine.make_optimizer(model, CFG.lr, CFG.weight_decay)
    sched = engine.make_scheduler(opt, len(loader), 2, 0.5)
    step = 0
    for epoch in range(2):
        sampler.set_epoch(epoch)
        train, step = engine.train_one_epoch(ddp, loader, opt, sched, torch.nn.CrossEntropyLoss(), torch.device("cpu"),
                                             grad_clip=1.0, step=step)
    val = engine.evaluate(model, _val_loader(splits, rank, WORLD), torch.device("cpu"))
    torch.save(model.state_dict(), os.path.join(out, f"rank{rank}.pt"))
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({**train, **val, "steps": step}, f)
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_run(tiny_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_rank_main, args=(str(tiny_folder), free_port(), str(out)), nprocs=WORLD, join=True)
    return out


def test_weights_identical_across_ranks_after_training(ddp_run):
    a, b = (torch.load(ddp_run / f"rank{r}.pt") for r in range(WORLD))
    init = _model(4).state_dict()  # 4 classes in TINY_COUNTS
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs between ranks"
    moved = [k for k in a if a[k].is_floating_point() and not torch.equal(a[k], init[k])]
    assert moved, "training changed no weight"


def test_reported_metrics_equal_whole_split_in_one_process(ddp_run, tiny_folder):
    reports = [json.loads((ddp_run / f"rank{r}.json").read_text()) for r in range(WORLD)]
    assert reports[0] == reports[1]                     # every rank reports the same all-reduced dict
    splits = data.make_splits(data.scan(tiny_folder), 0.25, 0.0, seed=0)
    model = _model(len(splits.classes))
    model.load_state_dict(torch.load(ddp_run / "rank0.pt"))
    single = engine.evaluate(model, _val_loader(splits), torch.device("cpu"))
    for k, v in single.items():
        assert reports[0][k] == pytest.approx(v, abs=1e-6), k
    assert reports[0]["steps"] > 0 and reports[0]["train_loss"] > 0
