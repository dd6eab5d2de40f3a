"""Two configs and nothing else.

TrialConfig: what the search proposes for one trial. Field name = Optuna parameter name = MLflow
param key, so one concept has one name from the search space to the MLflow UI.
RunSettings: what the user fixes for the whole study on the command line; never searched.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, Mapping


@dataclass(frozen=True)
class TrialConfig:
    family: str                      # key of search_spaces.FAMILIES
    arch: str                        # architecture within the family
    lr: float = 5e-4                 # peak AdamW learning rate after warm-up (log-searched, ~1e-5..1e-2)
    batch_size: int = 64             # global batch: images per optimizer step summed over all workers
    weight_decay: float = 1e-4       # AdamW decoupled weight decay (0..0.1)
    label_smoothing: float = 0.1     # cross-entropy label smoothing (0..0.2; seeds used 0.03-0.1)
    aug_strength: float = 0.5        # 0 = resize+crop only .. 1 = strongest crop/flip/colour jitter
    sampler_power: float = 0.5       # sample weight ∝ class_count^-power: 0 natural, 0.5 = 1/sqrt(n), 1 balanced
    loss_weight_power: float = 0.0   # cross-entropy class weight ∝ class_count^-power (the study: 0.5 with sampler 0.5)
    mixup_prob: float = 0.0          # probability a batch gets MixUp (alpha 0.3) or CutMix (alpha 1.0), as in seed 003
    dropout: float = 0.3             # dropout before the classifier head (0..0.6)
    width: float = 1.0               # scratch CNN channel multiplier (1.0 = the seeds' exact layers)
    backbone_lr_scale: float = 1.0   # pretrained backbone LR = lr x this; new head/modules get lr (0.01..1)
    layer_decay: float = 0.0         # timm layer-wise LR decay per block towards the input (0 = off; 0.6..0.9)
    freeze_epochs: int = 0           # epochs with the pretrained backbone frozen (LR 0) while the head learns
    drop_path: float = 0.0           # stochastic depth rate for transformers (0..0.2)
    warmup_epochs: float = 0.5       # linear LR warm-up length in epochs, then cosine decay to ~0
    grad_clip: float = 1.0           # clip the global gradient norm at this value; 0 disables

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrialConfig":
        """Strict: an unknown key is a bug in a search space, so it fails loudly."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown trial config keys {unknown}; known: {sorted(known)}")
        return cls(**dict(d))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RunSettings:
    """Per-study settings handed to every trial; the worker loop takes only the fields it needs."""
    data_dir: str                    # what --data pointed at (a folder or CSV manifest), for the record
    split_manifest: str              # parent-run artifact (path,label,split) written once; every trial reads it
    classes: tuple                   # class names in label order, shared by every trial and the logged model
    image_size: int                  # square input side in pixels; 0 = each family's own default
    max_epochs: int                  # epoch budget per trial (ASHA max_t)
    workers_per_trial: int           # DDP workers in each trial's gang
    cpus_per_worker: float           # logical CPUs reserved per worker (torch threads = round of it)
    use_gpu: bool                    # one GPU per worker, NCCL; else gloo on CPU
    seed: int                        # seeds the split, the sampler, init and Optuna's TPE
    experiment: str                  # MLflow experiment name = Ray run name
    mlflow_uri: str                  # tracking URI every worker logs to
    mlflow_experiment_id: str        # study experiment
    parent_run_id: str               # the study's MLflow parent run
    storage: str                     # Ray storage_path for results and checkpoints
    amp: str = "auto"                # auto | bf16 | fp16 | off (see engine.amp_setup)
    pretrained: str = "timm"         # timm: pretrained weights (online, HF cache or weights_dir); none: random init
    weights_dir: str = ""            # offline weight files named after the timm model ("" = let timm fetch)
    resize_policy: str = "crop"      # crop: aspect-preserving resize + centre crop; letterbox: resize + pad
    max_train_images: int = 0        # >0 caps images drawn per epoch (smoke mode); 0 = whole train split
    loader_workers: int = 0          # DataLoader worker processes per Train worker (0 = decode inline)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
