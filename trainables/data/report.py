"""The dataset report printed at study start and logged to the MLflow parent run (dataset/ artifacts):
class counts per split, image sizes, formats, skipped files, and the class mix the sampler will draw."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from trainables.data.dataset import Source, Splits

SAMPLER_POWERS = (0.0, 0.5, 1.0)  # natural, 1/sqrt(n) (the WikiArt study), balanced


def _share(counts: np.ndarray, power: float) -> list:
    """Expected share of draws per class when each sample weighs count^-power."""
    w = counts * np.clip(counts, 1, None).astype(float) ** -power
    return (w / w.sum()).tolist()


def dataset_report(source: Source, splits: Splits) -> dict:
    n = len(splits.classes)
    train_counts = np.bincount(splits.labels[splits.train], minlength=n)
    sides = np.array([max(w, h) for _, w, h in source.info]) if source.info else None
    return {
        "source": source.origin,  # what --data was: its URI, kind (folder, objects, csv, parquet), label column
        "classes": splits.classes,
        "counts": {
            part: np.bincount(splits.labels[getattr(splits, part)], minlength=n).tolist()
            for part in ("train", "val", "test")
        },
        "imbalance": float(train_counts.max() / max(1, train_counts.min())),
        "sampled_share": {str(p): _share(train_counts, p) for p in SAMPLER_POWERS},
        # objects and Parquet rows are listed, not opened, at scan (trainables.data.scan): no sizes until decoded
        "long_side_px": {q: int(np.percentile(sides, q)) for q in (0, 25, 50, 75, 100)} if sides is not None else {},
        "long_side_hist": dict(zip(("counts", "edges"), (a.tolist() for a in np.histogram(sides, bins=20))))
        if sides is not None
        else {},
        "formats": dict(Counter(f for f, _, _ in source.info)),
        "skipped": [{"path": p, "reason": r} for p, r in source.skipped],
        "warnings": list(source.warnings),
    }


def summary_lines(report: dict) -> list[str]:
    c, px = report["counts"], report["long_side_px"]
    sizes = (
        f"long side {px[0]}-{px[100]} px (median {px[50]}), formats {report['formats']}"
        if px
        else "images listed, not opened (the decode cache checks each)"
    )
    return [
        f"classes {len(report['classes'])}, train/val/test {sum(c['train'])}/{sum(c['val'])}/{sum(c['test'])}, "
        f"imbalance {report['imbalance']:.1f}:1, {sizes}, {len(report['skipped'])} skipped"
    ]


def plot(report: dict, folder: Path) -> list[Path]:
    """classes.png (train counts and the share each sampler power draws) and sizes.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    classes, n = report["classes"], len(report["classes"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(10, 0.5 * n + 6), 4.5))
    ax1.bar(range(n), report["counts"]["train"], color="#4c72b0")
    ax1.set_title("train images per class (before sampling)")
    width = 0.8 / len(SAMPLER_POWERS)
    for i, p in enumerate(SAMPLER_POWERS):
        ax2.bar(np.arange(n) + (i - 1) * width, report["sampled_share"][str(p)], width, label=f"power {p}")
    ax2.set_title("share of draws per class (after sampling)")
    ax2.legend()
    for ax in (ax1, ax2):
        ax.set_xticks(range(n), classes, rotation=60, ha="right", fontsize=8)
    fig.tight_layout()
    paths = [folder / "classes.png"]
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)
    hist = report["long_side_hist"]
    if not hist:
        return paths
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.stairs(hist["counts"], hist["edges"], fill=True)
    ax.set_xlabel("long side (px)")
    ax.set_ylabel("images")
    ax.set_title(f"image sizes; formats: {report['formats']}")
    fig.tight_layout()
    paths.append(folder / "sizes.png")
    fig.savefig(paths[1], dpi=110)
    plt.close(fig)
    return paths
