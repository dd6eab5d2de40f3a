"""A study's accuracy against its cost of serving: the Pareto front of its trials, as rows, a table and a figure.

A trial's point is (its best val_macro_f1, the cost of its network: latency_ms or throughput_img_s, measured once per
network before the trials started; sweep.costs). Each trial's best checkpoint is that point's model, so a trial ASHA
stopped early is a point too (a small fast network that learns quickly can be on the front). Trials over a latency
budget, and trials that reported nothing, are left out.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analysis.reading.confirm import searched  # noqa: E402
from analysis.reading.runs import TrialRow  # noqa: E402
from trainables import objectives  # noqa: E402
from trainables.metrics import OBJECTIVE, OBJECTIVE_KEY  # noqa: E402

FIGURE = "pareto.png"  # the parent run's artifact


def cost(row: TrialRow, key: str) -> float:
    return getattr(row, key, math.nan)


def points(rows: list[TrialRow], cost_key: str) -> list[TrialRow]:
    """The search's trials that are points: a result, a measured cost, within the latency budget."""
    return [r for r in searched(rows) if r.epochs and r.feasible and not math.isnan(cost(r, cost_key))]


def front(rows: list[TrialRow], cost_key: str) -> list[TrialRow]:
    """The points no other point beats on both objectives, cheapest first."""
    pts = points(rows, cost_key)
    modes = (OBJECTIVE.mode, objectives.COSTS[cost_key])
    mask = objectives.on_front([(r.best, cost(r, cost_key)) for r in pts], modes)
    on = [r for r, m in zip(pts, mask) if m]
    return sorted(on, key=lambda r: cost(r, cost_key) * (1 if modes[1] == "min" else -1))


def front_text(rows: list[TrialRow], cost_key: str) -> str:
    """The front as a small table: one line per trial, cheapest first."""
    lines = [f"{'trial':<24}{'family / arch':<28}{OBJECTIVE_KEY:>14}{cost_key:>18}  run"]
    for r in rows:
        what = f"{r.family} / {r.arch}"
        lines.append(f"{r.name[:23]:<24}{what[:27]:<28}{r.best:>14.4f}{cost(r, cost_key):>18.3f}  {r.run_id}")
    return "\n".join(lines)


def front_png(rows: list[TrialRow], cost_key: str, path: Path, max_latency_ms: float = 0.0) -> Path:
    """Every point (colour: architecture), the front drawn as a step line through its points, each front point
    labelled with its architecture, and the latency budget as a vertical line."""
    pts, on = points(rows, cost_key), {r.run_id for r in front(rows, cost_key)}
    fig, ax = plt.subplots(figsize=(7.5, 5))
    archs = sorted({r.arch for r in pts})
    colours = dict(zip(archs, plt.get_cmap("tab10").colors * 3))
    for arch in archs:
        mine = [r for r in pts if r.arch == arch]
        ax.scatter([cost(r, cost_key) for r in mine], [r.best for r in mine], color=colours[arch], label=arch, s=28)
    line = sorted((r for r in pts if r.run_id in on), key=lambda r: cost(r, cost_key))
    if line:
        ax.step(
            [cost(r, cost_key) for r in line],
            [r.best for r in line],
            where="post",
            color="black",
            lw=1.2,
            label=f"Pareto front ({len(line)} trials)",
        )
        ax.scatter(
            [cost(r, cost_key) for r in line], [r.best for r in line], facecolors="none", edgecolors="black", s=90
        )
        for r in line:
            ax.annotate(r.arch, (cost(r, cost_key), r.best), textcoords="offset points", xytext=(6, -10), fontsize=8)
    if max_latency_ms and cost_key == "latency_ms":
        ax.axvline(max_latency_ms, color="#d62728", ls="--", lw=1, label=f"budget {max_latency_ms:g} ms")
    unit = "ms, batch 1" if cost_key == "latency_ms" else "images/s, serving batch"
    ax.set(
        xlabel=f"{cost_key} ({unit})",
        ylabel=f"best {OBJECTIVE_KEY}",
        title=f"accuracy against cost: {len(pts)} trials, {len(line)} on the front",
    )
    if cost_key == "latency_ms" and pts:
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Title": "artsweep study: Pareto front"})
    plt.close(fig)
    return path
