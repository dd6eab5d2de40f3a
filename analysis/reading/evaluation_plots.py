"""PNG figures of a test-set evaluation: confusion matrix and reliability diagram (matplotlib, Agg).

Inputs are analysis.reading.scores outputs; sizes scale with the class count so 27 WikiArt styles stay readable.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402


def confusion_png(cm: np.ndarray, classes: list[str], path: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (each true class sums to 100 %), counts in the cells when the
    matrix is small enough to read them; class names on both axes."""
    n = len(classes)
    side = max(6.0, 0.42 * n + 3)  # 27 classes -> ~14 in: names at 8 pt do not overlap
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    share = cm / cm.sum(1, keepdims=True).clip(1)
    disp = ConfusionMatrixDisplay(share * 100, display_labels=classes)
    disp.plot(
        ax=ax,
        cmap="Blues",
        values_format=".0f",
        include_values=n <= 30,
        colorbar=True,
        xticks_rotation=60,
        text_kw={"fontsize": 7 if n > 12 else 9},
    )
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.tick_params(labelsize=8 if n > 12 else 10)
    ax.set_title(title or "confusion matrix (% of each true class)")
    disp.im_.colorbar.set_label("% of true class")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def reliability_png(cal: dict, path: Path, title: str = "") -> Path:
    """Reliability diagram (accuracy vs confidence per bin, the gap to the diagonal hatched), the share of
    predictions per bin, and the seeds' confidence-bucket table; ECE in the title."""
    bins = cal["bins"]
    fig, (ax, ax2, ax3) = plt.subplots(1, 3, figsize=(14, 4.8), gridspec_kw={"width_ratios": [3, 2, 2]})
    centers = np.array([(b["low"] + b["high"]) / 2 for b in bins])
    width = (bins[0]["high"] - bins[0]["low"] if bins else 0.1) * 0.95
    acc, conf = np.array([b["accuracy"] for b in bins]), np.array([b["confidence"] for b in bins])
    ax.bar(centers, acc, width=width, color="#4c72b0", edgecolor="white", label="accuracy")
    ax.bar(
        centers,
        np.abs(conf - acc),
        bottom=np.minimum(conf, acc),
        width=width,
        fill=False,
        hatch="///",
        edgecolor="#c44e52",
        label="gap to mean confidence",
    )
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top-1 probability)", ylabel="accuracy")
    ax.set_title(title or f"reliability diagram, ECE {cal['ece'] * 100:.1f} %")
    ax.legend(loc="upper left", fontsize=8)
    counts = np.array([b["count"] for b in bins])
    ax2.bar(centers, counts / max(1, counts.sum()) * 100, width=width, color="#55a868")
    ax2.set(xlim=(0, 1), xlabel="confidence", ylabel="% of predictions", title="where predictions fall")
    ax3.axis("off")
    rows = [
        [
            b["confidence"],
            f"{b['share_of_predictions'] * 100:.1f} %",
            f"{b['precision'] * 100:.1f} %" if b["count"] else "-",
        ]
        for b in cal["buckets"]
    ]
    tab = ax3.table(rows, colLabels=["confidence", "of predictions", "right"], loc="center", cellLoc="center")
    tab.auto_set_font_size(False)
    tab.set_fontsize(10)
    tab.scale(1, 1.8)
    ax3.set_title("confidence buckets")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
