"""The training engine: pure PyTorch, no Ray, no MLflow, so a unit test can run it (also under DDP).

train_one_epoch / evaluate return JSON-able dicts with `train_` / `val_` prefixes, averaged over all
ranks when torch.distributed is initialised.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

import numpy as np
import timm.optim
import timm.scheduler
import torch
import torch.distributed as dist
from torch import nn

from trainables import metrics


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def amp_setup(mode: str, device: torch.device):
    """(autocast dtype or None, GradScaler or None) for mode auto | bf16 | fp16 | off.

    auto: bf16 on GPUs and CPUs that support it natively, fp16 + GradScaler on older GPUs, else off.
    """
    if mode == "off":
        return None, None
    if mode == "auto":
        if device.type == "cuda":
            mode = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            mode = "bf16" if _cpu_has_bf16() else "off"
            if mode == "off":
                return None, None
    if mode == "fp16":
        if device.type != "cuda":
            raise ValueError("--amp fp16 needs a CUDA device; use bf16 or off on CPU")
        return torch.float16, torch.amp.GradScaler("cuda")
    return torch.bfloat16, None


def make_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    *,
    head: Iterable = (),
    layer_decay: float = 0.0,
    backbone_lr_scale: float = 1.0,
):
    """AdamW over timm's parameter groups (no weight decay on norms and biases; layer-wise LR decay when
    layer_decay > 0), each split into `head` (the parameters new for this dataset, as the family names them)
    and backbone. Every group carries `lr_scale`, which timm's scheduler applies: backbone groups are
    scaled by backbone_lr_scale (and zeroed by set_backbone_frozen). No head: every group is "head"."""
    if layer_decay > 0:
        groups = timm.optim.param_groups_layer_decay(model, weight_decay, layer_decay=layer_decay)
    else:
        groups = timm.optim.param_groups_weight_decay(model, weight_decay)
    head = {id(p) for p in head} or {id(p) for p in model.parameters()}  # no head named: nothing is frozen
    out = []
    for g in groups:
        for is_head in (True, False):
            params = [p for p in g["params"] if (id(p) in head) == is_head]
            if params:
                scale = g.get("lr_scale", 1.0) * (1.0 if is_head else backbone_lr_scale)
                out.append({**g, "params": params, "is_head": is_head, "base_lr_scale": scale, "lr_scale": scale})
    fused = any(p.is_cuda for p in model.parameters())  # one kernel for all parameters (CUDA only)
    return torch.optim.AdamW(out, lr=lr, fused=fused or None)


def set_backbone_frozen(optimizer, frozen: bool) -> None:
    """Freeze (LR 0) or release the backbone groups; takes effect at the next scheduler.step_update."""
    for g in optimizer.param_groups:
        g["lr_scale"] = 0.0 if frozen and not g["is_head"] else g["base_lr_scale"]


def make_scheduler(optimizer, steps_per_epoch: int, epochs: int, warmup_epochs: float):
    """Per-step cosine decay with linear warm-up (timm's scheduler also applies per-group lr_scale)."""
    total = max(1, steps_per_epoch * epochs)
    warmup = min(total - 1, int(round(warmup_epochs * steps_per_epoch)))
    return timm.scheduler.CosineLRScheduler(
        optimizer,
        t_initial=total,
        lr_min=1e-6,
        warmup_t=warmup,
        warmup_lr_init=1e-6,
        warmup_prefix=True,
        t_in_epochs=False,
    )


def tune_backend(device: torch.device) -> None:
    """Fast kernels on CUDA: cuDNN picks the fastest convolution for our fixed input shape (autotune), and
    float32 matmuls/convolutions use TF32 (bf16/fp16 autocast covers most ops already)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.allow_tf32 = True


def _is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def train_one_epoch(
    model,
    loader,
    optimizer,
    scheduler,
    loss_fn,
    device,
    *,
    amp_dtype=None,
    scaler=None,
    grad_clip: float = 0.0,
    step: int = 0,
    mix=None,
) -> tuple[dict, int]:
    """One pass over `loader`. Returns ({"train_loss": mean over all ranks' images, "train_images": images
    trained on by all ranks}, next global step). `mix(x, y) -> (x, soft targets)` (e.g. timm's Mixup) runs on
    each batch before the forward pass. The loss is summed on the device: one host sync per epoch, not per step."""
    model.train()
    loss_sum = torch.zeros(2, dtype=torch.float64, device=device)  # [sum of loss * n, n]
    for x, y in loader:
        scheduler.step_update(step)  # LR for this update (also applies lr_scale, e.g. a frozen backbone)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)  # no-op after a DeviceLoader
        if mix is not None:
            x, y = mix(x, y)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        step += 1
        loss_sum[0] += loss.detach().double() * len(y)
        loss_sum[1] += len(y)
    if _is_dist():
        dist.all_reduce(loss_sum)
    total, n = loss_sum.tolist()
    return {"train_loss": total / n if n else math.nan, "train_images": int(n)}, step


def sync_buffers(model: nn.Module) -> None:
    """Broadcast rank 0's buffers (BatchNorm running stats): each rank's last forward updated its own."""
    if _is_dist():
        for b in model.buffers():
            dist.broadcast(b, 0)


@torch.no_grad()
def predict(model, loader, device, amp_dtype=None) -> tuple[np.ndarray, np.ndarray]:
    """Logits and targets of this rank's loader, in loader order."""
    model.eval()
    outs, ys = [], []
    for x, y in loader:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            out = model(x.to(device, non_blocking=True))
        outs.append(out.float().cpu())
        ys.append(torch.as_tensor(y).cpu())
    if not outs:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    return torch.cat(outs).numpy(), torch.cat(ys).numpy()


def gather(logits: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate every rank's predictions so metrics cover the whole split, not one shard."""
    if not _is_dist():
        return logits, targets
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, (logits, targets))
    parts = [p for p in parts if len(p[1])]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def evaluate(model, loader, device, amp_dtype=None) -> dict:
    """All METRICS over the whole split (every rank returns the same dict). `model` is the bare module:
    evaluation must not run DDP's collectives, since ranks may hold different numbers of batches."""
    sync_buffers(model)
    logits, targets = gather(*predict(model, loader, device, amp_dtype))
    return metrics.compute(logits, targets)
