"""The per-worker training loop of one trial: Ray Train glue around the pure-torch engine.

Runs in every DDP worker of a trial's TorchTrainer, or for a one-worker trial in its Tune actor (Train's local
mode: trainables.trial.driver). Every rank reports every epoch (the report is a barrier); rank 0's report
carries the metrics and, at a new best epoch, the best checkpoint, which the EpochRecorder writes to the MLflow
child run (in Train's controller, or in process; a DDP worker never talks to MLflow). The trial's TrialConfig (its family
included) and the study's RunSettings arrive as objects: nothing here looks a family up by name.
"""

from __future__ import annotations

import functools
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
import ray.train
import ray.train.torch
import ray.tune
import timm.data
import torch

from trainables import checkpoint, engine, latency, objectives
from trainables.data import cache, dataset, loaders
from trainables.metrics import (
    BEST_KEY,
    IMPROVED_KEY,
    OBJECTIVE,
    OBJECTIVE_KEY,
    PG_KEY,
    RUN_ID_KEY,
    SYSTEM_KEY,
    TAGS_KEY,
)
from trainables.pretrained import Weights
from trainables.tracking import sysmetrics
from trainables.trial import resume


def _loaders(splits: dataset.Splits, cfg, s, image_size: int, norm: dict, rank: int, world: int, device):
    images, meta, built = cache.open_or_build(
        splits.paths,
        image_size,
        s.resize_policy,  # once per node: reused,
        storage=s.cache_storage or None,
        versions=splits.versions,
    )  # downloaded or built
    bad = {b["index"] for b in meta["bad"]}  # undecodable files: left out of training and validation
    # the final fit (trainables.trial.rerun) trains on train + val and validates on nothing: it selects no epoch
    train_idx = np.asarray([i for i in fit_split(splits, s) if i not in bad], dtype=np.int64)
    val_idx = np.asarray([i for i in splits.val if i not in bad and not s.train_on_val], dtype=np.int64)[
        rank::world
    ]  # gathered later
    out = loaders.make(
        images,
        splits,
        train_idx,
        val_idx,
        image_size=image_size,
        batch_size=cfg.batch_size,
        aug_strength=cfg.aug_strength,
        recipe=cfg.family.augment,
        sampler_power=cfg.sampler_power,
        norm=norm,
        seed=s.seed,
        rank=rank,
        world=world,
        device=device,
        workers=s.loader_workers,
        num_samples=s.max_train_images,
        channels_last=cfg.family.channels_last,
    )
    return out, {
        "decode_cache": meta["key"],
        "decode_cache_built_by_trial": str(built).lower(),
        "loader_workers": s.loader_workers,
    }


def fit_split(splits: dataset.Splits, s) -> list[int]:
    """The images a trial trains on: the train split, and the validation split too in a final fit."""
    return [*splits.train, *splits.val] if s.train_on_val else list(splits.train)


def _loss(cfg, splits: dataset.Splits, s, batch_size: int, device):
    """Class-weighted cross-entropy, and timm's MixUp/CutMix (soft targets then carry the smoothing)."""
    weights = dataset.class_weights(splits.labels[fit_split(splits, s)], len(splits.classes), cfg.loss_weight_power).to(
        device
    )
    mix = None
    if cfg.mixup_prob > 0 and batch_size % 2 == 0:  # Mixup pairs samples within a batch
        mix = timm.data.Mixup(
            mixup_alpha=0.3,
            cutmix_alpha=1.0,
            prob=cfg.mixup_prob,
            label_smoothing=cfg.label_smoothing,
            num_classes=len(splits.classes),
        )
    return torch.nn.CrossEntropyLoss(weight=weights, label_smoothing=0.0 if mix else cfg.label_smoothing), mix


def _model(cfg, s, num_classes: int):
    """The family's model, and (input side, normalisation) its weights were trained with."""
    family = cfg.family
    weights = Weights(s.pretrained if family.pretrained else "none", s.weights_dir or None)
    image_size = s.image_size or family.image_size
    model = family.build(cfg, num_classes, image_size, weights)
    data_cfg = timm.data.resolve_model_data_config(model)
    if not s.image_size and family.pretrained:  # the weights' own input size (EfficientNetV2-S 300, Xception 299)
        image_size = data_cfg["input_size"][-1]
    return model, image_size, {"mean": tuple(data_cfg["mean"]), "std": tuple(data_cfg["std"])}


def _restore(model, optimizer, scheduler, scaler, rank: int, in_process: bool) -> resume.Progress:
    """Continue from the trial's latest resume checkpoint after its process was lost (in process: Tune restarted
    the trial; distributed: Train restarted the group), or start fresh."""
    ckpt = ray.tune.get_checkpoint() if in_process else ray.train.get_checkpoint()
    if ckpt is None:
        return resume.Progress()
    with ckpt.as_directory() as folder:
        return resume.load(Path(folder), rank, model, optimizer, scheduler, scaler)


def _report(
    values: dict,
    progress: resume.Progress,
    objects: tuple,
    rank: int,
    extra: dict,
    best=None,
    system: dict | None = None,
    in_process=None,
) -> None:
    """Every rank reports (the report is a barrier) with its part of the resume checkpoint; rank 0's report
    also carries `extra` (recorder keys) and, at a new best, the best checkpoint `best(folder)` writes.
    The EpochRecorder logs it to MLflow once Ray has kept the checkpoint: Train's controller calls it, or for a
    trial in process `in_process` (trainables.trial.driver.InProcessReports) does, then hands it to Tune."""
    with tempfile.TemporaryDirectory(prefix=f"{os.getpid()}-", dir=resume.staging_dir()) as folder:  # Ray copies it
        resume.save(Path(folder), rank, progress, *objects)
        if rank == 0 and best is not None:
            best(Path(folder))
        report = {
            **values,
            **(extra if rank == 0 else {}),
            IMPROVED_KEY: best is not None,
            **({SYSTEM_KEY: system} if system else {}),
        }
        checkpoint = ray.train.Checkpoint.from_directory(folder)
        if in_process:
            in_process(report, checkpoint)
        else:
            ray.train.report(report, checkpoint=checkpoint)


def _local_device() -> torch.device:
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def _setup(cfg, s, splits, rank: int, world: int, in_process: bool) -> dict:
    """Model, data, optimizer, schedule, AMP and loss of one worker, as a dict of the pieces the loop uses."""
    # in process: the one device Ray gave the Tune actor (CUDA_VISIBLE_DEVICES), or the CPU
    device = _local_device() if in_process else ray.train.torch.get_device()
    engine.tune_backend(device)
    model, image_size, norm = _model(cfg, s, len(splits.classes))
    if cfg.family.channels_last:  # NHWC: faster convolutions (tensor cores on GPU, oneDNN on CPU)
        model = model.to(memory_format=torch.channels_last)
    data_path, data_tags = _loaders(splits, cfg, s, image_size, norm, rank, world, device)
    model_tags = {**_model_tags(model, image_size), **_cost_tags(cfg, s, image_size)} if rank == 0 else {}
    torch.manual_seed(s.seed * 1000 + rank)  # same init on every rank, different augmentation draws
    # moves to device; wraps in DDP when world > 1
    ddp_model = model.to(device) if in_process else ray.train.torch.prepare_model(model)
    if s.compile:  # --compile: torch.compile the training forward (evaluation keeps the eager module)
        ddp_model = torch.compile(ddp_model)
    optimizer = engine.make_optimizer(
        model,
        cfg.lr,
        cfg.weight_decay,
        head=cfg.family.trainable_parameters(model),
        layer_decay=cfg.get("layer_decay", 0.0),
        backbone_lr_scale=cfg.get("backbone_lr_scale", 1.0),
    )
    scheduler = engine.make_scheduler(optimizer, len(data_path.train), s.max_epochs, cfg.warmup_epochs)
    amp_dtype, scaler = engine.amp_setup(s.amp, device)
    loss_fn, mix = _loss(cfg, splits, s, data_path.train.loader.batch_size, device)
    return dict(
        device=device,
        model=model,
        ddp_model=ddp_model,
        image_size=image_size,
        norm=norm,
        sampler=data_path.sampler,
        train_loader=data_path.train,
        val_loader=data_path.val,
        optimizer=optimizer,
        scheduler=scheduler,
        amp_dtype=amp_dtype,
        scaler=scaler,
        loss_fn=loss_fn,
        mix=mix,
        tags={**data_tags, **model_tags, "node_id": ray.get_runtime_context().get_node_id()},
        costs=serving_costs(cfg, s, image_size),
    )


def _model_tags(model, image_size: int) -> dict:
    """What the model costs per image whatever the device: parameters and GFLOPs of one forward pass (counted on the
    CPU before training moves it, so no GPU time is spent). Latency needs a device to itself: trainables.latency."""
    was_training = model.training
    gflops = latency.count_gflops(model.eval(), image_size, torch.device("cpu"))
    model.train(was_training)
    return {"model_params": str(sum(p.numel() for p in model.parameters())), "model_gflops": f"{gflops:.4g}"}


def serving_costs(cfg, s, image_size: int) -> dict:
    """What the trial's network costs to serve, as every epoch reports it (the Pareto search's second objective):
    measured once before the study's trials started (sweep.costs; empty when it could not be)."""
    cost = s.costs.get(cfg.shape(image_size))
    return {k: cost[k] for k in objectives.COSTS} if cost else {}


def _cost_tags(cfg, s, image_size: int) -> dict:
    """How the latency was measured (runtime, device, threads, precision, serving batch), and with a latency budget
    whether the trial meets it (`feasible`: an infeasible one stops at its first rung; never the winner)."""
    cost = s.costs.get(cfg.shape(image_size))
    if not cost:
        return {}
    tags = {f"latency_{k}": str(cost[k]) for k in ("runtime", "device", "threads", "precision", "batch")}
    if s.max_latency_ms:
        tags[objectives.FEASIBLE_TAG] = str(objectives.feasible(cost["latency_ms"], s.max_latency_ms)).lower()
    return tags


def _saver(w: dict, cfg, splits: dataset.Splits, s, values: dict):
    """What writes the best checkpoint (model.pt) of the epoch `values` reports, into a report's folder."""
    return functools.partial(
        checkpoint.save,
        model=w["model"],
        classes=splits.classes,
        cfg=cfg,
        image_size=w["image_size"],
        norm=w["norm"],
        resize_policy=s.resize_policy,
        epoch=int(values["epoch"]),
        values=values,
    )


def _ranks(ctx) -> tuple[int, int, int, int]:
    return ctx.get_world_rank(), ctx.get_world_size(), ctx.get_local_rank(), ctx.get_node_rank()


def train_loop_per_worker(config: dict) -> None:
    t0 = time.perf_counter()
    cfg, s = config["trial"], config["settings"]  # TrialConfig, RunSettings
    in_process = config.get("in_process")  # driver.InProcessReports, or None in a Train worker group
    # (rank, world size, local rank, node rank); Ray refuses ray.train.get_context() in a Tune actor
    ranks = (0, 1, 0, 0) if in_process else _ranks(ray.train.get_context())
    rank, world = ranks[:2]
    torch.set_num_threads(max(1, round(s.cpus_per_worker) - s.loader_workers))
    torch.manual_seed(s.seed)
    random.seed(s.seed * 1000 + rank)  # timm's random erasing draws from Python's generator
    system = sysmetrics.Sampler() if ranks[2] == 0 else None  # one per node of the trial
    splits = dataset.parse_manifest(
        config["manifest"], list(s.classes)
    )  # the driver fetched it (driver.split_manifest)
    w = _setup(cfg, s, splits, rank, world, in_process is not None)
    objects = (w["model"], w["optimizer"], w["scheduler"], w["scaler"])
    progress = _restore(*objects, rank, in_process is not None)
    extra = {
        TAGS_KEY: {**w["tags"], **({"resumed_from_epoch": progress.epochs} if progress.epochs else {})},
        # the worker group's placement group, which sweep.callbacks.ReleaseTrainWorkers frees (Tune owns its own)
        PG_KEY: "" if in_process else ray.get_runtime_context().get_placement_group_id() or "",
        RUN_ID_KEY: config["run_id"],
    }
    setup_s = time.perf_counter() - t0
    if progress.epochs >= s.max_epochs and progress.history:
        # restored from the checkpoint of its last epoch, whose report nothing took (the study's driver was killed
        # between the two): report that epoch again, so MLflow records it and Tune sees the trial end
        last = progress.history[-1]
        _report(
            last,
            progress,
            objects,
            rank,
            extra,
            _saver(w, cfg, splits, s, last) if s.train_on_val or last.get(OBJECTIVE_KEY) == progress.best else None,
            in_process=in_process,
        )

    for epoch in range(progress.epochs, s.max_epochs):
        t_epoch = time.perf_counter()
        w["sampler"].set_epoch(epoch)
        engine.set_backbone_frozen(w["optimizer"], epoch < cfg.get("freeze_epochs", 0))
        values, progress.step = engine.train_one_epoch(
            w["ddp_model"],
            w["train_loader"],
            w["optimizer"],
            w["scheduler"],
            w["loss_fn"],
            w["device"],
            amp_dtype=w["amp_dtype"],
            scaler=w["scaler"],
            grad_clip=cfg.grad_clip,
            step=progress.step,
            mix=w["mix"],
        )
        t_train = time.perf_counter() - t_epoch
        values["train_images_per_s"] = values.pop("train_images") / t_train  # all ranks together
        if not s.train_on_val:
            values.update(engine.evaluate(w["model"], w["val_loader"], w["device"], w["amp_dtype"]))
        # scheduled_lr: the LR the schedule reached this epoch (the searched peak is the param `lr`)
        values.update(
            **w["costs"],  # constant per trial: on every epoch, as Tune's schedulers read them
            epoch=epoch + 1,
            scheduled_lr=max(g["lr"] for g in w["optimizer"].param_groups),
            time_train_s=t_train,
            time_val_s=time.perf_counter() - t_epoch - t_train,
            time_setup_s=setup_s,
            time_import_s=config.get("time_import_s", 0.0),
        )  # the training stack's imports, once
        if s.train_on_val:  # nothing to select by: the model of the last epoch is the final fit
            improved = epoch + 1 == s.max_epochs
        else:
            improved = OBJECTIVE.better(values[OBJECTIVE_KEY], progress.best)
            progress.best = values[OBJECTIVE_KEY] if improved else progress.best
            # the running best: what the MLflow UI sorts trials by (its columns show a metric's last value)
            values[BEST_KEY] = progress.best
        progress.history.append(values)
        _report(
            values,
            progress,
            objects,
            rank,
            extra,
            _saver(w, cfg, splits, s, values) if improved else None,
            system and sysmetrics.metric_names(system.take(), ranks[3]),
            in_process,
        )
        extra = {k: extra[k] for k in (PG_KEY, RUN_ID_KEY)}  # tags go once per worker group
