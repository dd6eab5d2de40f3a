"""CUDA code paths: AMP (bf16, fp16 + GradScaler) and NCCL DDP. Skipped on machines without a GPU."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from search_spaces import FAMILIES
from trainables import engine
from trainables.net import free_port
from trainables.pretrained import Weights

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _model():
    torch.manual_seed(0)
    cfg = FAMILIES["scratch"].config("simple_cnn", width=0.5)
    return cfg.family.build(cfg, 4, 32, Weights("none"))


@pytest.mark.unit
@pytest.mark.parametrize("mode", ["auto", "bf16", "fp16"])
def test_amp_training_steps_on_cuda(mode):
    device = torch.device("cuda")
    model = _model().to(device)
    dtype, scaler = engine.amp_setup(mode, device)
    assert (scaler is not None) == (dtype == torch.float16)
    opt = engine.make_optimizer(model, 1e-3, 0.0)
    loader = [(torch.randn(16, 3, 32, 32), torch.randint(0, 4, (16,)))] * 4
    sched = engine.make_scheduler(opt, len(loader), 1, 0)
    out, step = engine.train_one_epoch(
        model, loader, opt, sched, torch.nn.CrossEntropyLoss(), device, amp_dtype=dtype, scaler=scaler, grad_clip=1.0
    )
    assert step == 4 and out["train_loss"] == out["train_loss"]


def _nccl_rank(rank, port, world):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("nccl", rank=rank, world_size=world)
    torch.cuda.set_device(rank)
    model = _model().cuda()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = engine.make_optimizer(model, 1e-3, 0.0)
    loader = [(torch.randn(8, 3, 32, 32) + rank, torch.randint(0, 4, (8,)))] * 2
    engine.train_one_epoch(
        ddp,
        loader,
        opt,
        engine.make_scheduler(opt, 2, 1, 0),
        torch.nn.CrossEntropyLoss(),
        torch.device("cuda"),
        amp_dtype=torch.bfloat16,
    )
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    assert all(torch.equal(gathered[0], g) for g in gathered)
    dist.destroy_process_group()


@pytest.mark.integration  # a process per GPU
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL needs one GPU per rank")
def test_nccl_ddp_keeps_ranks_identical():
    port = free_port()
    world = torch.cuda.device_count()
    mp.spawn(_nccl_rank, args=(port, world), nprocs=world, join=True)


@pytest.mark.unit
@pytest.mark.parametrize(
    "family, arch, size, batch",
    [("scratch", "deep_cnn", 64, 128), ("cnn", "resnet50", 224, 32), ("transformers", "vit_b16", 224, 32)],
)
def test_memory_estimate_bounds_a_measured_step(family, arch, size, batch, tmp_path):
    """--pack trusts the estimate never to be below what a step really takes (within 2.5x above it)."""
    from trainables.trial import memory

    fam = FAMILIES[family]
    cfg = fam.config(arch)
    build = lambda: cfg.family.build(cfg, 8, size, Weights("none"))  # noqa: E731
    probe = memory.probe(f"{family}:{arch}", build, size, tmp_path / "memory.json")
    estimate = memory.estimate_gib(probe["params"], probe["activations"], batch, amp=True)
    measured = memory.measure_gib(build(), size, batch)
    print(f"{family}/{arch} {size}px batch {batch}: estimate {estimate:.2f} GiB, measured {measured:.2f} GiB")
    assert measured <= estimate <= 2.5 * measured


@pytest.mark.unit
def test_data_path_on_cuda_prefetches_augments_and_matches_the_cpu():
    """DeviceLoader moves uint8 batches one ahead on a side stream; the recipe runs on the GPU; the optimizer
    is fused; validation preprocessing gives the CPU's numbers."""
    from trainables.data import augment

    cuda = torch.device("cuda")
    x, y = torch.randint(0, 255, (8, 3, 32, 32), dtype=torch.uint8), torch.arange(8)
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]
    on_gpu = list(augment.DeviceLoader(batches, cuda, augment.BatchAugment(False), channels_last=True))
    on_cpu = list(augment.DeviceLoader(batches, torch.device("cpu"), augment.BatchAugment(False)))
    assert len(on_gpu) == 2
    for (a, ya), (b, yb) in zip(on_gpu, on_cpu):
        assert a.is_cuda and a.is_contiguous(memory_format=torch.channels_last)
        assert torch.allclose(a.cpu(), b, atol=1e-5) and torch.equal(ya.cpu(), yb)
    for recipe in augment.RECIPES:
        out = augment.BatchAugment(True, 1.0, recipe).to(cuda)(x.to(cuda))
        assert out.is_cuda and out.isfinite().all()
    assert engine.make_optimizer(_model().to(cuda), 1e-3, 0.0).defaults["fused"]
