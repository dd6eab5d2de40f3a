"""RunSettings: what the user fixes for a whole study on the command line (never searched).

One object flows from tune.py's flags through the study to every trial driver and Train worker, and is
logged to the parent run (study/settings.json) so --resume rebuilds the same study. What a trial searches
is a search_spaces.space.TrialConfig.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from trainables.paths import cache_root, local_path


@dataclass(frozen=True)
class RunSettings:
    family: str  # --family: a search_spaces.FAMILIES key, or "all"
    data_dir: str  # what --data pointed at (a folder, a CSV manifest, Parquet shards; a path or URI), for the record
    num_samples: int  # trials in the study; 0 = as many as the budget allows (sweep.budget)
    max_epochs: int  # epoch budget per trial (ASHA max_t)
    workers_per_trial: int  # DDP workers in each trial's gang
    experiment: str  # MLflow experiment name (any characters)
    mlflow_uri: str  # tracking URI every worker logs to (never with credentials: trainables.tracking.credentials)
    storage: str  # Ray storage_path for results and checkpoints
    image_size: int = 0  # square input side in pixels; 0 = each family's own default
    label: str = ""  # --label: the CSV or Parquet column the classes come from ("" = `label`, or a folder's names)
    arch: Optional[str] = None  # --arch: one pinned architecture, None = searched
    standins: bool = False  # search the families' CPU-sized stand-in architectures
    pins: dict = field(default_factory=dict)  # --set: knob -> the value every trial of the study uses (not searched)
    seed: int = 0  # seeds the split, the sampler, init and Optuna's TPE
    amp: str = "auto"  # auto | bf16 | fp16 | off (see engine.amp_setup)
    pretrained: str = "timm"  # timm: pretrained weights (online, HF cache or weights_dir); none: random init
    weights_dir: str = ""  # offline weight files named after the timm model ("" = let timm fetch)
    resize_policy: str = "crop"  # crop: aspect-preserving resize + centre crop; letterbox: resize + pad
    max_train_images: int = 0  # >0 caps images drawn per epoch (smoke mode); 0 = whole train split
    smoke: bool = False  # --smoke: the tiny budget above was applied
    early_stopping: bool = True  # ASHA stops poor trials; False: every trial runs max_epochs (FIFO)
    recipes: bool = True  # the families' published recipes are the first trials (--no-recipes: off)
    starts: dict = field(default_factory=dict)  # family -> a configuration tried first, before the recipes
    # (the demo's: sweep.settings.DEMO)
    max_retries: int = 2  # restarts of a trial's worker group after a lost worker (from its last epoch)
    time_budget_s: float = 0.0  # --time-budget: wall seconds for the whole study, 0 = none
    gpu_hours: float = 0.0  # --gpu-hours: GPU-hours (CPU-hours without GPUs) of trial reservations, 0 = none
    price_per_gpu_hour: float = 0.0  # --price-per-gpu-hour: turns the study's GPU-hours into a cost in the record
    compile: bool = False  # --compile: torch.compile the training forward of every trial
    pack: str = "auto"  # --pack: auto = single-worker trials may share a GPU (trainables.trial.memory); off
    confirm: int = 0  # --confirm K: after the search, its K best distinct configurations train again
    # with new seeds (sweep.phases); 0 = off
    confirm_seeds: int = 3  # --confirm-seeds S: seeds per confirmed configuration (>= 2 for an interval)
    final_fit: bool = False  # --final-fit: the winner trains on train + val and becomes the `champion`
    # --objectives: "" ranks by val_macro_f1 alone; "val_macro_f1,latency_ms" searches the Pareto front of accuracy
    # against a cost of serving (trainables.objectives: multi-objective TPE, MOASHA)
    objectives: str = ""
    max_latency_ms: float = 0.0  # --max-latency-ms: a latency budget (constrained TPE; infeasible trials stop at
    # their first rung and never win); 0 = none
    export: str = ""  # --export onnx: the winner (or champion) is also exported, gated and registered as ONNX
    costs: dict = field(default_factory=dict)  # TrialConfig.shape -> trainables.latency.Cost (as a dict): what each
    # network the study can train costs to serve, measured before its trials start (sweep.costs)
    train_on_val: bool = False  # set on the final fit's trial only (trainables.trial.rerun): train on train + val
    # filled in by the study once MLflow and Ray are up
    run_name: str = ""  # Ray run folder under storage: the experiment name made path-safe + start time,
    # so two studies of one experiment never share a folder
    classes: tuple = ()  # class names in label order, shared by every trial and the logged model
    mlflow_experiment_id: str = ""  # study experiment
    parent_run_id: str = ""  # the study's MLflow parent run
    cpus_per_worker: float = 1.0  # logical CPUs reserved per Train worker (torch threads = round of it)
    use_gpu: bool = False  # one GPU per worker (or a share of one, packed), NCCL; else gloo on CPU
    gpu_gib: float = 0.0  # memory of the smallest GPU trials may land on (0 = unknown: no packing)
    cache_storage: str = ""  # where nodes publish and fetch decode caches (trainables.data.cache): the storage
    # when every node reaches it (an object store, NFS), "" on one machine's disk
    loader_workers: int = 0  # DataLoader processes per Train worker: the worker's CPUs beyond the one
    # that trains (0 on small CPU trials = decode inline)
    dataset: dict = field(default_factory=dict)  # the split as an MLflow dataset (mlflow_ui.dataset_input): every
    # trial run logs it as its input

    @property
    def run_path(self) -> str:
        """The study's Ray run folder (Tune's experiment state, and each trial's Train checkpoints below it)."""
        return f"{self.storage.rstrip('/')}/{self.run_name}"

    @property
    def spool(self) -> str:
        """Where MLflow writes wait while the tracking server is away (trainables.tracking.outbox): in the study's
        folder when storage is a local or shared path, else in this machine's cache (trainables.paths)."""
        local = local_path(self.run_path)
        return f"{local}/pending" if local is not None else str(cache_root() / "pending" / self.run_name)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunSettings":
        """Strict: a key this version does not know is an error (a settings file from other code)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown settings keys {unknown}")
        return cls(**{**d, "classes": tuple(d.get("classes", ()))})

    def replace(self, **changes) -> "RunSettings":
        return dataclasses.replace(self, **changes)
