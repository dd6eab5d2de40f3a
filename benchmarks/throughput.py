"""Training images/s through artsweep's own data path and step vs a bare loop over tensors already on the device.

python benchmarks/throughput.py --model resnet50 --device cpu --steps 8 --batch-size 32
python benchmarks/throughput.py --model vit_base_patch16_224 --device cuda --batch-size 64 --amp bf16 --steps 50

(a) artsweep: a synthetic decode cache (uint8, the cached side) -> trainables.data.loaders.make (loader processes doing
    the per-sample crop + flip, the device doing the recipe's batched ops) -> engine.train_one_epoch, exactly as a
    trial runs them (channels-last for CNNs, fused AdamW and cuDNN autotune on CUDA, grad clipping at 1.0).
(b) bare: the same model and optimizer stepping over one batch already on the device (the ceiling).
Also per recipe: what one loader process does per second, now (crop + flip) and before issue 13 (the whole
recipe per sample, kept below as BEFORE), and on CUDA the model FLOP utilisation and peak memory.
The last line is one JSON object (artsweep_img_s, bare_img_s, ratio, loader_img_s_per_worker, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
import torch
from torchvision.transforms import v2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trainables import engine
from trainables.data import (
    augment,
    dataset,
    loaders,  # noqa: E402
)

PEAK_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L4": 121.0}  # dense, per GPU (vendor sheets)


def before(image_size: int, s: float, recipe: str):
    """The per-sample training transform every loader ran before issue 13 (for the comparison only)."""
    strong = recipe == "strong"
    ops = [
        v2.RandomResizedCrop(image_size, scale=(1.0 - augment.CROP_LOSS[recipe] * s, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
    ]
    if strong:
        ops += [v2.RandomRotation(15 * s), v2.RandAugment(magnitude=int(round(9 * s)))]
    j = augment.JITTER[recipe] * s
    ops += [
        v2.ColorJitter(brightness=j, contrast=j, saturation=j),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(augment.IMAGENET_MEAN, augment.IMAGENET_STD),
    ]
    return v2.Compose(ops + ([v2.RandomErasing(p=0.25 * s)] if strong else []))


def synthetic_cache(n: int, side: int, folder: Path) -> np.ndarray:
    """n smooth random uint8 images [side, side, 3], memory-mapped like the decode cache."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (n, side // 16 + 1, side // 16 + 1, 3), dtype=np.uint8)
    big = small.repeat(16, 1).repeat(16, 2)[:, :side, :side]
    np.save(folder / "images.npy", np.ascontiguousarray(big))
    return np.load(folder / "images.npy", mmap_mode="r")


def loader_rate(images: np.ndarray, transform, seconds: float = 3.0) -> float:
    """Images/s of one process (one thread) running `transform` on decode-cache entries."""
    ds = loaders.CachedImages(images, np.arange(len(images)), np.zeros(len(images), int), transform)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        ds[(n % len(ds), n)]
        n += 1
    return n / (time.perf_counter() - t0)


class Timed:
    """Wraps a loader: the clock runs from the `skip`-th batch (warm-up excluded) to the end, device synced."""

    def __init__(self, loader, skip: int, device: torch.device):
        self.loader, self.skip, self.device, self.seconds = loader, skip, device, 0.0

    def __len__(self):
        return len(self.loader)

    def _now(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if i == self.skip:
                t0 = self._now()
            yield batch
        self.seconds = self._now() - t0


def _model(a, device):
    torch.manual_seed(0)
    model = (
        timm.create_model(a.model, num_classes=a.classes, img_size=a.image_size)
        if "vit" in a.model
        else timm.create_model(a.model, num_classes=a.classes)
    )
    channels_last = not hasattr(model, "patch_embed")  # as the families: CNNs NHWC, transformers not
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return model, channels_last


def artsweep(a, images, device, amp_dtype) -> float:
    model, channels_last = _model(a, device)
    n = len(images)
    splits = dataset.Splits(
        [str(c) for c in range(a.classes)], [""] * n, np.arange(n) % a.classes, np.arange(n), np.arange(0), np.arange(0)
    )
    path = loaders.make(
        images,
        splits,
        splits.train,
        splits.val,
        image_size=a.image_size,
        batch_size=a.batch_size,
        aug_strength=a.aug_strength,
        recipe=a.recipe,
        sampler_power=0.5,
        norm={},
        seed=0,
        rank=0,
        world=1,
        device=device,
        workers=a.workers,
        num_samples=(a.steps + a.warmup) * a.batch_size,
        channels_last=channels_last,
    )
    opt = engine.make_optimizer(model, 1e-4, 0.05)
    sched = engine.make_scheduler(opt, len(path.train), 1, 0.0)
    train_model = torch.compile(model) if a.compile else model
    timed = Timed(path.train, a.warmup, device)
    engine.train_one_epoch(
        train_model, timed, opt, sched, torch.nn.CrossEntropyLoss(), device, amp_dtype=amp_dtype, grad_clip=1.0
    )
    return a.steps * a.batch_size / timed.seconds


def bare(a, device, amp_dtype) -> tuple[float, float | None]:
    """(images/s, FLOPs per step) of a plain loop over one normalised batch already on the device."""
    model, channels_last = _model(a, device)
    x = torch.randn(a.batch_size, 3, a.image_size, a.image_size, device=device)
    x = x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    y = torch.randint(0, a.classes, (a.batch_size,), device=device)
    opt = torch.optim.AdamW(model.parameters(), 1e-4, fused=device.type == "cuda" or None)
    train_model = torch.compile(model) if a.compile else model

    def step():
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = torch.nn.functional.cross_entropy(train_model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    timed = Timed(range(a.steps + a.warmup), a.warmup, device)
    for _ in timed:
        step()
    flops = None
    if device.type == "cuda":
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            step()
        flops = counter.get_total_flops()
    return a.steps * a.batch_size / timed.seconds, flops


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet18", help="timm model name, random init (default resnet18)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=8, help="timed steps per loop, after --warmup steps")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="runs of each loop, interleaved; the best counts")
    p.add_argument(
        "--workers",
        type=int,
        default=min(8, max(0, (os.cpu_count() or 1))),
        help="loader processes (default: one per core, at most 8)",
    )
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads of both loops (CPU)")
    p.add_argument("--recipe", choices=augment.RECIPES, help="default: strong for CNNs, conservative for ViTs")
    p.add_argument("--aug-strength", type=float, default=1.0, help="0..1 (default 1: the costliest)")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"])
    p.add_argument("--compile", action="store_true", help="torch.compile both models")
    p.add_argument("--classes", type=int, default=27, help="output classes (27 = WikiArt styles)")
    p.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, for MFU (default: known GPUs)")
    a = p.parse_args(argv)
    a.recipe = a.recipe or ("conservative" if "vit" in a.model else "strong")
    return a


def main(argv=None) -> dict:
    a = parse(argv)
    device = torch.device(a.device)
    torch.set_num_threads(a.threads)
    engine.tune_backend(device)
    amp_dtype, _ = engine.amp_setup(a.amp, device)
    with tempfile.TemporaryDirectory() as tmp:
        images = synthetic_cache(
            max(256, (a.steps + a.warmup) * a.batch_size // 4), round(a.image_size * 1.14), Path(tmp)
        )
        torch.set_num_threads(1)
        now = {
            r: loader_rate(images, augment.sample_transform(a.image_size, True, a.aug_strength, r))
            for r in augment.RECIPES
        }
        then = {r: loader_rate(images, before(a.image_size, a.aug_strength, r)) for r in augment.RECIPES}
        torch.set_num_threads(a.threads)
        for r in augment.RECIPES:
            print(
                f"loader process, {r:12s} recipe: {now[r]:7.0f} images/s (before: whole recipe per sample "
                f"{then[r]:6.0f}, {now[r] / then[r]:.1f}x)",
                flush=True,
            )
        ours, ceiling, flops, peak_mem = 0.0, 0.0, None, None
        for _ in range(a.repeats):  # interleaved, best of each: a busy moment on the machine hits one run, not all
            ours = max(ours, artsweep(a, images, device, amp_dtype))
            if device.type == "cuda":
                peak_mem = torch.cuda.max_memory_allocated(device) / 2**30
            rate, flops = bare(a, device, amp_dtype)
            ceiling = max(ceiling, rate)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = a.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    mfu = flops * ceiling / a.batch_size / (peak * 1e12) if flops and peak else None
    mfu_ours = flops * ours / a.batch_size / (peak * 1e12) if flops and peak else None
    print(
        f"{a.model} {a.image_size}px batch {a.batch_size} on {name} ({a.workers} loader processes, "
        f"{a.threads} threads, amp {amp_dtype}, {a.recipe} recipe at {a.aug_strength}):\n"
        f"  artsweep {ours:8.1f} images/s   bare loop {ceiling:8.1f} images/s   ratio {ours / ceiling:.3f}"
        + (f"\n  MFU artsweep {mfu_ours:.1%}, bare {mfu:.1%}" if mfu else "")
        + (f"\n  peak memory (artsweep) {peak_mem:.1f} GiB" if peak_mem else "")
    )
    out = {
        "model": a.model,
        "device": name,
        "image_size": a.image_size,
        "batch_size": a.batch_size,
        "steps": a.steps,
        "repeats": a.repeats,
        "workers": a.workers,
        "threads": a.threads,
        "recipe": a.recipe,
        "aug_strength": a.aug_strength,
        "amp": str(amp_dtype),
        "compile": a.compile,
        "artsweep_img_s": round(ours, 2),
        "bare_img_s": round(ceiling, 2),
        "ratio": round(ours / ceiling, 4),
        "loader_img_s_per_worker": {r: round(v, 1) for r, v in now.items()},
        "loader_before_img_s": {r: round(v, 1) for r, v in then.items()},
        "loader_speedup": {r: round(now[r] / then[r], 2) for r in now},
        "mfu": mfu_ours and round(mfu_ours, 4),
        "mfu_bare": mfu and round(mfu, 4),
        "peak_mem_gib": peak_mem and round(peak_mem, 2),
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
