"""Peak GPU memory of one training step, estimated before a trial starts (to pack several trials on one GPU).

    estimate = (params x 16 B  +  batch x activations per image x bytes per activation) x (1 + FRAGMENTATION)
               + CONTEXT_GIB
params x 16 B: fp32 weights, their gradients and AdamW's two moments. Activations per image: the elements of
every leaf module's output in one forward pass at batch 1 (what autograd keeps for the backward pass, roughly),
probed on CPU once per (model, image size) and cached in cache_file(); 2 bytes each under AMP
(bf16/fp16), 4 in fp32. CONTEXT_GIB: the CUDA context and cuBLAS/cuDNN workspaces of one process.
On a GPU, measure_gib() runs a real step; tests/test_gpu.py checks the estimate bounds it from above.
Used by trainables.trial.driver (each trial's GPU share); unit tests: tests/test_packing.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from trainables.paths import cache_root

PARAM_BYTES = 16  # fp32 weight + grad + AdamW exp_avg + exp_avg_sq
CONTEXT_GIB = 0.75  # CUDA context (~0.3-0.5 GiB) + cuBLAS/cuDNN workspaces of one process
FRAGMENTATION = 0.25  # the caching allocator's rounding and fragmentation over the tensors themselves
GIB = 1024**3


def cache_file() -> Path:
    """The probes of this machine, in its artsweep cache (trainables.paths.cache_root)."""
    return cache_root() / "memory.json"


def activations_per_image(model: nn.Module, image_size: int) -> int:
    """Elements of every leaf module's output for one image (eval-mode forward on CPU, no grad)."""
    total = 0

    def count(_module, _inputs, output):
        nonlocal total
        for t in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(t, torch.Tensor):
                total += t.numel()

    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size))
        model.train(was_training)
    finally:
        for h in hooks:
            h.remove()
    return total


def probe(key: str, build: Callable[[], nn.Module], image_size: int, cache: Path | None = None) -> dict:
    """{"params", "activations"} of a model at an input size, from `cache` (default cache_file()) or one CPU
    forward pass."""
    cache = cache or cache_file()
    entry = f"{key}@{image_size}"
    table = json.loads(cache.read_text()) if cache.is_file() else {}
    if entry not in table:
        model = build()
        table[entry] = {
            "params": sum(p.numel() for p in model.parameters()),
            "activations": activations_per_image(model, image_size),
        }
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(table, indent=1, sort_keys=True))
        tmp.replace(cache)  # atomic: trial drivers probing at once never read half a file
    return table[entry]


def estimate_gib(params: int, activations: int, batch_size: int, amp: bool) -> float:
    tensors = params * PARAM_BYTES + batch_size * activations * (2 if amp else 4)
    return tensors * (1 + FRAGMENTATION) / GIB + CONTEXT_GIB


def measure_gib(model: nn.Module, image_size: int, batch_size: int, amp_dtype=torch.bfloat16) -> float:
    """Peak memory of one real AdamW training step on the current CUDA device, context included."""
    device = torch.device("cuda")
    model = model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters())
    torch.cuda.reset_peak_memory_stats(device)
    x = torch.randn(batch_size, 3, image_size, image_size, device=device)
    with torch.autocast("cuda", dtype=amp_dtype, enabled=amp_dtype is not None):
        loss = model(x).float().logsumexp(dim=1).mean()
    loss.backward()
    optimizer.step()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / GIB + CONTEXT_GIB


MAX_PACK = 8  # trials on one GPU at most: beyond it the node's CPUs (decoding, the Python loop) run out first
HEADROOM = 0.9  # share of a GPU's memory packed trials may plan to fill (the estimate's error, other processes)


def gpu_share(estimate: float, gpu_gib: float, workers: int, pack: str = "auto") -> float:
    """The fraction of one GPU a trial's worker asks Ray for: 1/k for the most trials k (<= MAX_PACK) whose
    estimates fit in HEADROOM of its memory together, so fractions Ray adds up never over-commit memory
    (estimate <= share x HEADROOM x gpu_gib). 1.0 for DDP trials (NCCL refuses two ranks of one group on one
    device), with --pack off, or when the GPU's memory is unknown (0)."""
    if pack == "off" or workers > 1 or gpu_gib <= 0 or estimate <= 0:
        return 1.0
    k = min(MAX_PACK, int(HEADROOM * gpu_gib // estimate))
    return 1.0 / k if k >= 2 else 1.0
