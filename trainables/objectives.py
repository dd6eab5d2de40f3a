"""What a study optimises, and the Pareto arithmetic every part of it shares.

A study ranks by OBJECTIVE alone (trainables.metrics), or, with `--objectives val_macro_f1,latency_ms`, searches
the trade-off between a validation metric and a cost of serving the model: the configurations no other beats on
both (the Pareto front). The same functions order a rung of the multi-objective scheduler (sweep.moasha), tag the
front in MLflow, draw it, filter the leaderboard and score benchmarks/pareto.py.

Points are arrays [n, k] of objective values in the objectives' own units; `modes` says per column whether higher
("max") or lower ("min") is better. NaN (never reported) is worse than any value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from trainables.metrics import OBJECTIVE, OBJECTIVE_KEY

# Costs of serving a configuration (trainables.latency, measured once per configuration before trials start;
# every trial reports them with its epochs): what a Pareto search can trade accuracy against, with its direction.
COSTS = {
    "latency_ms": "min",  # median ms of one forward pass at batch 1 (trainables.latency.Cost.latency_ms)
    "throughput_img_s": "max",  # images/s at the serving batch (trainables.latency.SERVING_BATCH)
}
FEASIBLE_TAG = "feasible"  # trial run tag with a latency budget: "true" | "false" (the worker sets it at its start)
PARETO_TAG = "pareto"  # trial run tag of a Pareto search: "true" on the front (set when the study closes)


@dataclass(frozen=True)
class Objectives:
    """The study's objectives: OBJECTIVE alone (the default), or OBJECTIVE and a cost of serving (a Pareto search)."""

    keys: tuple = (OBJECTIVE_KEY,)
    modes: tuple = (OBJECTIVE.mode,)

    @property
    def pareto(self) -> bool:
        return len(self.keys) > 1

    def __str__(self) -> str:
        return ",".join(self.keys)


def parse(text: str) -> Objectives:
    """`--objectives` text -> Objectives. "" is the default (OBJECTIVE alone). ValueError names the choices."""
    keys = tuple(k.strip() for k in text.split(",") if k.strip())
    if not keys:
        return Objectives()
    # the first is the study's OBJECTIVE: the running best, the best checkpoint and ASHA's rungs all rank by it
    if len(keys) != 2 or keys[0] != OBJECTIVE_KEY or keys[1] not in COSTS:
        raise ValueError(
            f"--objectives {text!r}: give {OBJECTIVE_KEY} and a cost of serving, comma-separated: "
            + " or ".join(f"{OBJECTIVE_KEY},{c}" for c in COSTS)
        )
    return Objectives(keys, (OBJECTIVE.mode, COSTS[keys[1]]))


def minimised(points, modes: Sequence[str]) -> np.ndarray:
    """The points as values to minimise: "max" columns negated, NaN -> +inf (worse than anything)."""
    p = np.array(points, dtype=float).reshape(len(points), len(modes))
    p = p * np.array([-1.0 if m == "max" else 1.0 for m in modes])
    return np.where(np.isnan(p), np.inf, p)


def dominated_by(p: np.ndarray) -> np.ndarray:
    """[n, n] bool: row i is dominated by column j (j no worse in every objective, better in one). p minimised."""
    no_worse = (p[None, :, :] <= p[:, None, :]).all(axis=2)
    better = (p[None, :, :] < p[:, None, :]).any(axis=2)
    return no_worse & better


def fronts(points, modes: Sequence[str]) -> np.ndarray:
    """Non-dominated sorting: each point's front, 0 = the Pareto front, 1 = the front once 0 is removed, ...
    A point missing a value (NaN) comes after every complete one, whatever its other values."""
    p = minimised(points, modes)
    dom = dominated_by(p)
    rank = np.full(len(p), -1)
    level, left = 0, np.isfinite(p).all(axis=1)
    while left.any():
        now = left & ~(dom & left[None, :]).any(axis=1)
        rank[now] = level
        left &= ~now
        level += 1
    rank[rank < 0] = level
    return rank


def on_front(points, modes: Sequence[str]) -> np.ndarray:
    """[n] bool: the point is on the Pareto front (no other point dominates it; duplicates are all on it)."""
    return fronts(points, modes) == 0 if len(points) else np.zeros(0, bool)


def crowding(points, modes: Sequence[str]) -> np.ndarray:
    """NSGA-II's crowding distance inside one set of points: the ends of each objective are infinitely far,
    inner points by the normalised gap between their neighbours (larger: fewer points nearby, kept first)."""
    p = minimised(points, modes)
    n, out = len(p), np.zeros(len(p))
    if n <= 2:
        return np.full(n, np.inf)
    for col in p.T:
        order = np.argsort(col, kind="stable")
        span = col[order[-1]] - col[order[0]]
        out[order[0]] = out[order[-1]] = np.inf
        if np.isfinite(span) and span > 0:
            out[order[1:-1]] += (col[order[2:]] - col[order[:-2]]) / span
    return out


def order(points, modes: Sequence[str]) -> np.ndarray:
    """Indices best first: by front, then by crowding distance (spread along the front first), then by index."""
    if not len(points):
        return np.zeros(0, int)
    rank, dist = fronts(points, modes), np.zeros(len(points))
    for level in np.unique(rank):
        members = np.flatnonzero(rank == level)
        dist[members] = crowding(np.asarray(points, float)[members], modes)
    return np.lexsort((np.arange(len(points)), -dist, rank))


def hypervolume(points, modes: Sequence[str], reference: Sequence[float]) -> float:
    """The area the points dominate up to `reference` (two objectives, in their own units; a point not better than
    the reference in both adds nothing). Larger is better: the standard score of a Pareto search."""
    if len(modes) != 2:
        raise ValueError("hypervolume is computed for two objectives")
    ref = minimised([reference], modes)[0]
    p = minimised(points, modes) if len(points) else np.zeros((0, 2))
    p = p[(p < ref).all(axis=1)]
    area, best_y = 0.0, ref[1]
    for x, y in p[np.lexsort((p[:, 1], p[:, 0]))]:  # by the first objective, then the second
        if y < best_y:
            area += (ref[0] - x) * (best_y - y)
            best_y = y
    return float(area)


def feasible(latency_ms: float, max_latency_ms: float) -> bool:
    """A configuration meets a latency budget (0 = none). An unmeasured latency (NaN) does not meet one."""
    return not max_latency_ms or (not math.isnan(latency_ms) and latency_ms <= max_latency_ms)
