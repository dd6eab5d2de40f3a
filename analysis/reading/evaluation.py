"""A checkpoint scored on the study's held-out test split (never used for selection), as evidence in a local folder.

load_trial fetches a trial's best checkpoint and the study's split manifest (parent run, dataset/splits.csv);
predict_split predicts a split through the same decode cache and validation transform training used; evaluate
writes the evidence: accuracy / top-5 / macro and weighted F1 with bootstrap 95 % intervals, the per-class
report, the confusion matrix, calibration (ECE, reliability diagram, confidence buckets), the most confused
pairs, embedding outliers and Grad-CAM / attention overlays, and report.html (opens in a browser or MLflow's
artifact view). Nothing here writes to MLflow: analysis.publishing logs the folder and the metrics.
"""

from __future__ import annotations

import base64
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from mlflow.tracking import MlflowClient
from torch.utils.data import DataLoader

from analysis.reading import evaluation_plots, scores
from analysis.reading.progress import progress, step
from analysis.reading.runs import TrialRow
from analysis.reading.saliency import overlays
from trainables import checkpoint, engine, metrics
from trainables.data import cache, dataset, loaders
from trainables.tracking import artifacts, mlflow_runs


@dataclass
class Predictions:
    logits: np.ndarray  # [N, C]
    targets: np.ndarray  # [N]
    embeddings: np.ndarray  # [N, D]: the classifier layer's input (pre-logits)
    paths: list[str]  # [N] image files, in the same order


def predict_split(
    clf: checkpoint.Classifier,
    splits: dataset.Splits,
    part: str = "test",
    batch_size: int = 64,
    show_progress: bool = True,
) -> Predictions:
    """Logits and embeddings of one split, read through the decode cache (built by the study on this
    node, or built now) so preprocessing is exactly validation's. Undecodable files are left out."""
    try:  # without recorded versions the cache key stats every file: a missing one means no data here
        images, meta, _ = cache.open_or_build(splits.paths, clf.image_size, clf.resize_policy, versions=splits.versions)
    except FileNotFoundError as e:
        raise dataset.DataError(
            f"the study's images are not on this machine (e.g. {e.filename}); run the "
            "evaluation where the study's --data is mounted at the same path"
        ) from None
    bad = {b["index"] for b in meta["bad"]}
    idx = np.asarray([i for i in getattr(splits, part) if i not in bad], dtype=np.int64)
    loader = DataLoader(loaders.CachedImages(images, idx, splits.labels[idx], clf.transform), batch_size)
    captured: list[torch.Tensor] = []
    hook = clf.head.register_forward_hook(
        lambda _m, inp, _out: captured.append(inp[0].detach().float().flatten(1).cpu())
    )
    try:
        logits, targets = engine.predict(
            clf.model,
            progress(loader, desc=f"predicting the {part} split", unit="batch", disable=not show_progress),
            clf.device,
        )
    finally:
        hook.remove()
    emb = torch.cat(captured).numpy() if captured else np.zeros((0, 0), np.float32)
    return Predictions(logits, targets, emb, [splits.paths[i] for i in idx])


@dataclass
class Evaluation:
    trial: str
    run_id: str
    metrics: dict  # scores.point_metrics
    report: dict  # scores.per_class
    calibration: dict
    pairs: list
    outliers: list
    files: list[Path]


def evaluate(
    clf: checkpoint.Classifier,
    splits: dataset.Splits,
    folder: Path,
    trial: str = "",
    run_id: str = "",
    n_boot: int = 1000,
    n_overlays: int = 6,
    show_progress: bool = True,
) -> Evaluation:
    """Every piece of evidence for one checkpoint, written under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    pred = predict_split(clf, splits, show_progress=show_progress)
    classes = clf.classes
    steps = progress(
        total=3,
        every_s=0,
        bar_format="{desc}: {n_fmt}/{total_fmt} done [{elapsed}]",
        disable=not show_progress,
        desc=f"bootstrap 95 % intervals, {n_boot} resamples of {len(pred.targets)} test images",
    )
    point = scores.point_metrics(pred.logits, pred.targets, n_boot=n_boot)
    step(steps, "per-class report, confusion, calibration, outliers, plots")
    report = scores.per_class(pred.logits, pred.targets, classes)
    cm = scores.confusion(pred.logits, pred.targets, len(classes))
    cal = scores.calibration(pred.logits, pred.targets)
    pairs = scores.confused_pairs(cm, classes)
    outliers = scores.embedding_outliers(pred.embeddings, pred.logits, pred.targets, classes)
    for o in outliers:
        o["path"] = pred.paths[o.pop("index")]
    files = [
        evaluation_plots.confusion_png(
            cm,
            classes,
            folder / "confusion_matrix.png",
            f"{trial} on the test split ({len(pred.targets)} images), % of each true class",
        ),
        evaluation_plots.reliability_png(cal, folder / "reliability.png"),
    ]
    step(steps, f"Grad-CAM / attention overlays of {n_overlays} images")
    files.append(_overlays(clf, pred, folder, n_overlays))
    step(steps, "evaluated")
    steps.close()
    pd.DataFrame(report).T.to_csv(folder / "per_class.csv")
    pd.DataFrame(cm, index=classes, columns=classes).to_csv(folder / "confusion_matrix.csv")
    pd.DataFrame(cal["buckets"]).to_csv(folder / "confidence_buckets.csv", index=False)
    pd.DataFrame(pairs).to_csv(folder / "confused_pairs.csv", index=False)
    pd.DataFrame(outliers).to_csv(folder / "outliers.csv", index=False)
    summary = {
        "trial": trial,
        "run_id": run_id,
        "checkpoint_epoch": clf.epoch,
        "test_images": len(pred.targets),
        "metrics": point,
        "ece": cal["ece"],
        "confidence_buckets": cal["buckets"],
        "confused_pairs": pairs,
    }
    (folder / "metrics.json").write_text(json.dumps(summary, indent=2))
    ev = Evaluation(trial, run_id, point, report, cal, pairs, outliers, files)
    (folder / "report.html").write_text(_html(ev, clf))
    return ev


def _overlays(clf, pred: Predictions, folder: Path, n: int) -> Path:
    """Grad-CAM / attention overlays of a few test images: the most confident mistakes first, then
    correct ones, at most one image per true class in each group so the grid shows several classes."""
    p = scores.softmax(pred.logits)
    guess, conf = p.argmax(1), p.max(1)

    def one_per_class(idx):
        seen, out = set(), []
        for i in idx[np.argsort(-conf[idx])]:
            if pred.targets[i] not in seen:
                seen.add(pred.targets[i])
                out.append(int(i))
        return out

    wrong = one_per_class(np.flatnonzero(guess != pred.targets))[: n // 2]
    pick = (wrong + one_per_class(np.flatnonzero(guess == pred.targets)))[:n]
    return overlays(clf, [pred.paths[i] for i in pick], [int(pred.targets[i]) for i in pick], folder, n=n)


def _img(path: Path) -> str:
    return f'<img src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}" style="max-width:100%">'


def _html(ev: Evaluation, clf: checkpoint.Classifier) -> str:
    """One self-contained page (images inlined) that MLflow's artifact view and any browser can show."""
    m = pd.DataFrame(
        [
            {"metric": k, "value": v["value"], "95 % CI": f"{v['ci_low']:.4f} – {v['ci_high']:.4f}"}
            for k, v in ev.metrics.items()
        ]
    )
    parts = [
        f"<h1>artsweep evaluation: {ev.trial}</h1>",
        f"<p>run {ev.run_id}, checkpoint of epoch {clf.epoch}, {clf.trial_config.family.name} / "
        f"{clf.trial_config.arch}, {clf.image_size} px; test split, never used for selection.</p>",
        "<h2>Metrics (bootstrap 95 % intervals)</h2>",
        m.to_html(index=False, float_format="%.4f"),
        "<h2>Confusion matrix</h2>",
        _img(ev.files[0]),
        f"<h2>Calibration: ECE {ev.calibration['ece'] * 100:.2f} %</h2>",
        _img(ev.files[1]),
        pd.DataFrame(ev.calibration["buckets"]).to_html(index=False, float_format="%.3f"),
        "<h2>Most confused pairs</h2>",
        pd.DataFrame(ev.pairs).to_html(index=False, float_format="%.3f"),
        "<h2>Per class</h2>",
        pd.DataFrame(ev.report).T.to_html(float_format="%.3f"),
        "<h2>Embedding outliers</h2><p>lowest margin between own-class and nearest other-class centroid "
        "similarity first (negative: closer to another class)</p>",
        pd.DataFrame(ev.outliers).to_html(index=False, float_format="%.3f"),
        "<h2>Where the model looks (Grad-CAM / attention)</h2>",
        _img(ev.files[2]),
    ]
    return (
        "<html><head><meta charset='utf-8'><style>body{font-family:sans-serif;max-width:1200px;margin:auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>"
    )


def load_trial(client: MlflowClient, row: TrialRow, parent_run_id: str, tmp: Path):
    """(Classifier from the trial's best checkpoint, the study's Splits)."""
    ckpt = client.download_artifacts(row.run_id, artifacts.ARTIFACT, str(tmp))
    clf = checkpoint.load(ckpt)
    manifest = client.download_artifacts(parent_run_id, mlflow_runs.SPLIT_MANIFEST, str(tmp))
    return clf, dataset.read_manifest(manifest, clf.classes)


def test_metrics(ev: Evaluation) -> dict[str, float]:
    """The evaluation's test metrics as MLflow metrics: each value with _ci_low / _ci_high, and ECE."""
    values = {"test_ece": ev.calibration["ece"]}
    for k, v in ev.metrics.items():
        values.update({k: v["value"], f"{k}_ci_low": v["ci_low"], f"{k}_ci_high": v["ci_high"]})
    return values


def test_scores(client: MlflowClient, row: TrialRow, parent_run_id: str) -> tuple[dict[str, float], int]:
    """(test-split metrics of the trial's best checkpoint, images scored): quick, without intervals or plots
    (evaluate adds those). DataError when the study's images are not on this machine."""
    with tempfile.TemporaryDirectory() as tmp:
        clf, splits = load_trial(client, row, parent_run_id, Path(tmp))
    pred = predict_split(clf, splits, show_progress=False)
    return metrics.compute(pred.logits, pred.targets, "test"), len(pred.targets)
