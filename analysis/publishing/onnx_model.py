"""A trial's checkpoint exported to ONNX, gated against PyTorch on the study's validation split, then registered.

python -m analysis.export --run RUN_ID --format onnx      (analysis/export.py; a study's --export onnx calls
                                                          export_and_register on its winner or champion)

export(): the run's best checkpoint (weights only, as trainables.checkpoint loads it) goes through torch.onnx.export
with a dynamic batch axis: the dynamo exporter first, the TorchScript one when dynamo raises or its file fails the
gate (both have open bugs, ResNets among their victims). The .onnx file carries what preprocessing needs in its
metadata (analysis.serving.ONNX_METADATA). The gate: every image of the run's validation split (the study's split
manifest, the run's `split_manifest` tag) preprocessed once, exactly as validation did, and run through PyTorch and
ONNX Runtime on the same tensors; the export passes when top-1 agreement >= MIN_TOP1_AGREEMENT and the largest
absolute difference of a class probability <= MAX_PROB_DIFF. The result goes to the run either way (GATE_ARTIFACT,
tags onnx_*). export_and_register() then logs the export as the same pyfunc as the PyTorch model
(analysis.serving.ImageClassifier: same request, same response) with MLflow's onnx flavour in the same MLmodel, and
registers it as a version tagged format=onnx. An export that fails the gate is neither logged nor registered
(GateFailed). Final-fit runs trained on the validation split too: their gate still compares the two runtimes.
"""

from __future__ import annotations

import itertools
import json
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import torch
from mlflow.entities.model_registry import ModelVersion
from mlflow.models.model import MLMODEL_FILE_NAME
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from analysis.publishing.models import download_checkpoint, log_pyfunc, quiet_mlflow, tag_version, version_tags
from analysis.serving import ONNX_ARTIFACT, ONNX_METADATA, OnnxForward
from trainables import checkpoint
from trainables.data import dataset, decode, storage
from trainables.tracking.mlflow_runs import SPLIT_MANIFEST

# fp32 ONNX Runtime and fp32 PyTorch differ by float rounding alone (other kernels, fused ops). Measured largest
# class-probability differences: 1e-8 to 4e-8 for tests/test_export.py's five random-init models; 1.3e-5 for
# ViT-B/16 and ConvNeXt-T (2e-9 for ResNet-18) with logits spread as a confident trained model's (std 20). Top-1
# can then differ only where two classes tie to ~1e-5: 1 image in 100 leaves room for such ties on a large split,
# while a broken graph (a wrong op, a lost layer, weights off) disagrees on far more.
MIN_TOP1_AGREEMENT = 0.99
# A class probability may move by at most this much between the runtimes: ~100x the largest rounding measured
# above, and a tenth of the 0.01 that analysis.predict's 3 decimals would show.
MAX_PROB_DIFF = 1e-3
EXPORTERS = ("dynamo", "torchscript")  # torch.onnx.export's two, tried in this order
FORMAT = "onnx"  # the `format` tag of a registered export (the checkpoint's: `pytorch`)
LOGGED_NAME = "classifier-onnx"  # the logged model's name in its run (the checkpoint's: classifier)
GATE_ARTIFACT = "onnx/gate.json"  # on the trial run: thresholds, images, each exporter's figures
BATCH = 32  # images per forward pass in the gate (224 px: 19 MB of input)


class GateFailed(Exception):
    """An export that failed the gate (str: one line with the figures and the thresholds); nothing was logged."""

    def __init__(self, result: ExportResult):
        self.result = result
        super().__init__(result.refusal())


class ExportFailed(RuntimeError):
    """Neither exporter could write the model (str: both reasons)."""


@dataclass
class Gate:
    exporter: str
    images: int  # validation images both runtimes saw
    top1_agreement: float  # share of images with the same most probable class
    max_prob_diff: float  # largest |p_torch - p_onnx| over images and classes
    min_agreement: float
    max_allowed_diff: float
    accuracy_pytorch: float  # top-1 against the labels: context, not gated
    accuracy_onnx: float

    @property
    def passed(self) -> bool:
        return self.top1_agreement >= self.min_agreement and self.max_prob_diff <= self.max_allowed_diff

    def figures(self) -> str:
        return f"top-1 agreement {self.top1_agreement:.4f}, max probability difference {self.max_prob_diff:.2e}"

    def tags(self) -> dict[str, str]:
        """The figures as tags: the trial run's (prefixed onnx_) and the registered version's."""
        return {
            "exporter": self.exporter,
            "gate_images": str(self.images),
            "gate_top1_agreement": f"{self.top1_agreement:.4f}",
            "gate_max_prob_diff": f"{self.max_prob_diff:.2e}",
        }


@dataclass
class ExportResult:
    run_id: str
    path: Path  # the .onnx file (the last exporter's when none passed)
    clf: checkpoint.Classifier = field(repr=False)  # the checkpoint it was exported from
    skipped: int = 0  # validation files that are not usable images (or not readable here)
    gates: list[Gate] = field(default_factory=list)  # one per exporter that wrote a file, in order
    errors: dict[str, str] = field(default_factory=dict)  # exporter -> why it raised

    @property
    def gate(self) -> Gate:
        return self.gates[-1]

    @property
    def passed(self) -> bool:
        return bool(self.gates) and self.gate.passed

    def refusal(self) -> str:
        g = self.gate
        tried = "; ".join(
            [f"{x.exporter}: {x.figures()}" for x in self.gates] + [f"{k}: {v}" for k, v in self.errors.items()]
        )
        return (
            f"run {self.run_id}: the ONNX export failed the gate on {g.images} validation images (needs top-1 "
            f"agreement >= {g.min_agreement} and max probability difference <= {g.max_allowed_diff:g}): {tried}; "
            "not registered"
        )


def compare(
    torch_logits: np.ndarray,
    onnx_logits: np.ndarray,
    labels: np.ndarray,
    exporter: str,
    min_agreement: float,
    max_diff: float,
) -> Gate:
    """The gate's figures for two runtimes' logits [N, C] of the same N >= 1 images (softmax in float64)."""
    p, q = (_softmax(np.asarray(x, np.float64)) for x in (torch_logits, onnx_logits))
    return Gate(
        exporter,
        len(p),
        float(np.mean(p.argmax(1) == q.argmax(1))),
        float(np.abs(p - q).max()),
        min_agreement,
        max_diff,
        float(np.mean(p.argmax(1) == labels)),
        float(np.mean(q.argmax(1) == labels)),
    )


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def to_onnx(model: torch.nn.Module, image_size: int, path: Path, exporter: str) -> None:
    """Write `model` (eval mode) to `path` as one .onnx file, input `image` [batch, 3, S, S] -> `logits`."""
    x = torch.randn(2, 3, image_size, image_size)  # batch 2: an exporter specialises a batch of 1 to a constant
    names = {"input_names": ["image"], "output_names": ["logits"]}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and export warnings: the gate is the check
        if exporter == "dynamo":
            dims = ({0: torch.export.Dim("batch")},)
            torch.onnx.export(
                model, (x,), path, dynamo=True, external_data=False, verbose=False, dynamic_shapes=dims, **names
            )
        else:
            axes = {"image": {0: "batch"}, "logits": {0: "batch"}}
            torch.onnx.export(model, (x,), path, dynamo=False, dynamic_axes=axes, **names)


def add_metadata(path: Path, clf: checkpoint.Classifier, run_id: str, exporter: str) -> None:
    """Store what serving needs besides the graph in the file (analysis.serving.OnnxClassifier reads it)."""
    import onnx  # ~1 s of imports (ml_dtypes): only where a study or a command exports

    model = onnx.load(str(path))
    meta = {
        "classes": clf.classes,
        "image_size": clf.image_size,
        "resize_policy": clf.resize_policy,
        "normalization": {k: list(v) for k, v in clf.normalization.items()},
        "epoch": clf.epoch,
        "metrics": clf.metrics,
        "trial_run_id": run_id,
        "exporter": exporter,
    }
    model.metadata_props.add(key=ONNX_METADATA, value=json.dumps(meta, default=str))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def validation_split(client: MlflowClient, run, classes: list[str], folder: Path) -> tuple[list[str], np.ndarray]:
    """(paths, labels) of the run's validation split, from the study's manifest the run names."""
    ref = run.data.tags.get("split_manifest") or f"{run.data.tags.get(MLFLOW_PARENT_RUN_ID, '')}/{SPLIT_MANIFEST}"
    parent, _, artifact = ref.partition("/")
    if not parent:
        raise LookupError(f"run {run.info.run_id} is not a study's trial (no split_manifest tag, no parent run)")
    splits = dataset.read_manifest(client.download_artifacts(parent, artifact, str(folder)), classes)
    return [splits.paths[i] for i in splits.val], splits.labels[splits.val]


def both_runtimes(clf: checkpoint.Classifier, exported: OnnxForward, paths: list[str], labels: np.ndarray):
    """(PyTorch logits, ONNX Runtime logits, labels, files skipped) of the split's images, each preprocessed once,
    as validation saw it (Classifier.preprocess), and given to both runtimes: BATCH at a time, so a large split
    never sits in memory. DataError when none of the files is on this machine."""
    reference, outputs, kept, missing, bad = [], [], [], 0, 0
    read = storage.read(paths)
    while batch := list(itertools.islice(read, BATCH)):
        xs = []
        for i, data, _ in batch:
            if data is None:  # not readable here
                missing += 1
                continue
            try:
                xs.append(clf.preprocess(data))
            except decode.BadImage:
                bad += 1
                continue
            kept.append(labels[i])
        if xs:
            x = torch.stack(xs)
            with torch.no_grad():
                reference.append(clf.model(x).float().numpy())
            outputs.append(exported(x).numpy())
    if paths and missing == len(paths):
        raise dataset.DataError(
            f"none of the run's {len(paths)} validation images is readable here (e.g. {paths[0]}): export where the "
            "study's --data is mounted at the same path"
        )
    if not kept:
        raise LookupError("the run's validation split holds no usable image to check the export on")
    return np.concatenate(reference), np.concatenate(outputs), np.asarray(kept), missing + bad


def export(
    client_or_uri: MlflowClient | str,
    run_id: str,
    out_dir: Path,
    *,
    min_agreement: float = MIN_TOP1_AGREEMENT,
    max_prob_diff: float = MAX_PROB_DIFF,
) -> ExportResult:
    """Export run `run_id`'s checkpoint to `out_dir`/model.onnx and gate it (every exporter in EXPORTERS until one
    passes); the gate's result is logged to the run (GATE_ARTIFACT, tags onnx_*) whether it passed or not.
    LookupError: no such run, checkpoint or split; DataError: the images are not here; ExportFailed."""
    client = MlflowClient(client_or_uri) if isinstance(client_or_uri, str) else client_or_uri
    out_dir = Path(out_dir)
    run = client.get_run(run_id)
    clf = checkpoint.load(download_checkpoint(client, run_id, out_dir / "checkpoint"))
    paths, labels = validation_split(client, run, clf.classes, out_dir)
    result = ExportResult(run_id, out_dir / "model.onnx", clf)
    for exporter in EXPORTERS:
        try:
            to_onnx(clf.model, clf.image_size, result.path, exporter)
        except Exception as e:  # any exporter failure: the next exporter is the remedy
            result.errors[exporter] = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}"
            continue
        add_metadata(result.path, clf, run_id, exporter)
        reference, exported, kept, result.skipped = both_runtimes(clf, OnnxForward(result.path), paths, labels)
        result.gates.append(compare(reference, exported, kept, exporter, min_agreement, max_prob_diff))
        if result.gate.passed:
            break
    if not result.gates:
        raise ExportFailed(
            f"run {run_id}: neither ONNX exporter wrote the model: "
            + "; ".join(f"{k}: {v}" for k, v in result.errors.items())
        )
    _log_gate(client, result)
    return result


def _log_gate(client: MlflowClient, result: ExportResult) -> None:
    g = result.gate
    record = {
        "passed": result.passed,
        "skipped_files": result.skipped,
        "gates": [asdict(x) for x in result.gates],
        "errors": result.errors,
    }
    client.log_dict(result.run_id, record, GATE_ARTIFACT)
    for key, value in {"gate": "passed" if g.passed else "failed", **g.tags()}.items():
        client.set_tag(result.run_id, f"onnx_{key}", value)


def _save_with_onnx_flavour(path, mlflow_model, **kwargs):
    """mlflow.pyfunc's save_model, then MLflow's onnx flavour added to the same MLmodel, its data the pyfunc's own
    copy of the .onnx file: mlflow.onnx.load_model gives the graph, while the pyfunc flavour, which `mlflow models
    serve` and analysis.predict load, stays analysis.serving.ImageClassifier (mlflow.onnx's own pyfunc would take a
    float tensor, not image files)."""
    import onnx

    mlflow.pyfunc.save_model(path, mlflow_model=mlflow_model, **kwargs)
    data = mlflow_model.flavors["python_function"]["artifacts"][ONNX_ARTIFACT]["path"]
    mlflow_model.add_flavor("onnx", onnx_version=onnx.__version__, data=data, providers=["CPUExecutionProvider"])
    mlflow_model.save(str(Path(path) / MLMODEL_FILE_NAME))


PYFUNC_WITH_ONNX = SimpleNamespace(__name__="mlflow.pyfunc", save_model=_save_with_onnx_flavour)  # Model.log's flavor


def export_and_register(
    client_or_uri: MlflowClient | str,
    run_id: str,
    name: str,
    tags: dict | None = None,
    *,
    min_agreement: float = MIN_TOP1_AGREEMENT,
    max_prob_diff: float = MAX_PROB_DIFF,
    owner_run_id: str | None = None,
) -> ModelVersion:
    """Export and gate run `run_id`'s checkpoint (export()); when it passes, log it as a pyfunc with the onnx
    flavour (under the run, or `owner_run_id`) and register it as a new version of `name`, tagged format=onnx,
    the gate's figures and `tags`. GateFailed when it does not (nothing logged or registered); LookupError,
    dataset.DataError, ExportFailed as export()."""
    client = MlflowClient(client_or_uri) if isinstance(client_or_uri, str) else client_or_uri
    with tempfile.TemporaryDirectory() as tmp:
        result = export(client, run_id, Path(tmp), min_agreement=min_agreement, max_prob_diff=max_prob_diff)
        if not result.passed:
            raise GateFailed(result)
        clf, g = result.clf, result.gate
        with quiet_mlflow():
            info = log_pyfunc(
                client,
                owner_run_id or run_id,
                LOGGED_NAME,
                client.get_run(run_id).data.params,
                {ONNX_ARTIFACT: str(result.path)},
                {
                    "format": FORMAT,
                    "classes": clf.classes,
                    "image_size": clf.image_size,
                    "trial_run_id": run_id,
                    "exporter": g.exporter,
                },
                name,
                flavor=PYFUNC_WITH_ONNX,
                onnx=True,
            )
    tags = {**version_tags(run_id, clf, FORMAT), **g.tags(), **(tags or {})}
    return tag_version(client, name, str(info.registered_model_version), tags)
