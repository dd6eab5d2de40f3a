"""Confirmation: the search's best configurations trained again over new seeds, ranked by their mean.

A search ranks trials by one seed's best val_macro_f1, after TPE and ASHA looked at that split many times: the
top trial is partly luck. The study's confirm phase (sweep.phases) trains the K best distinct configurations
again with S new seeds each; here they are grouped by source trial and ranked by their mean over seeds, with a
95 % Student-t interval, and the study's winner is the best run of the best configuration by mean.
Used by the study's closing steps and summary, and by every analysis command that picks the winner.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from analysis.reading.runs import TrialRow
from trainables.metrics import OBJECTIVE

LEVEL = 0.95  # the interval's confidence level


def interval(values, level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high) of the Student-t interval of the mean of `values` (the true mean of this
    configuration's runs over seeds); low and high are nan with fewer than 2 values."""
    x = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf((1 + level) / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, mean - half, mean + half


@dataclass
class Confirmed:
    source: TrialRow  # the search trial whose configuration this is
    search_rank: int  # its rank in the search (1 = the search's winner)
    runs: list[TrialRow] = field(default_factory=list)  # its confirmation runs, best first
    rank: int = 0  # by mean over seeds (1 = the study's winner)

    @property
    def values(self) -> list[float]:
        return [r.best for r in self.runs if r.epochs]

    @property
    def stats(self) -> tuple[float, float, float]:
        return interval(self.values)

    @property
    def mean(self) -> float:
        return self.stats[0]

    @property
    def half_width(self) -> float:
        _, low, high = self.stats
        return (high - low) / 2

    @property
    def sd(self) -> float:
        return float(np.std(self.values, ddof=1)) if len(self.values) > 1 else math.nan

    @property
    def change(self) -> int:
        """Places gained (+) or lost (-) from the search's rank to the confirmed one."""
        return self.search_rank - self.rank


def searched(rows: list[TrialRow]) -> list[TrialRow]:
    """The search's trials (recipes included), best first, as trial_rows ordered them."""
    return [r for r in rows if r.phase in ("recipe", "search")]


def confirmed(rows: list[TrialRow]) -> list[Confirmed]:
    """The confirmed configurations, best mean first (configurations with no finished run last)."""
    search = searched(rows)
    out = {r.run_id: Confirmed(r, i) for i, r in enumerate(search, 1)}
    for r in rows:
        if r.phase == "confirm" and r.source in out:
            out[r.source].runs.append(r)
    conf = sorted((c for c in out.values() if c.runs), key=lambda c: OBJECTIVE.sort_key(c.mean))
    for i, c in enumerate(conf, 1):
        c.rank = i
    return conf


def best_run(rows: list[TrialRow]) -> TrialRow | None:
    """The study's winning run: with confirmation, the best run of the configuration with the best mean;
    without, the search's best trial. None when no trial reported a result."""
    conf = confirmed(rows)
    if conf and conf[0].values:
        return conf[0].runs[0]
    search = [r for r in searched(rows) if r.epochs and r.feasible]  # never a trial over the latency budget
    return search[0] if search else None


def candidates(rows: list[TrialRow]) -> list[TrialRow]:
    """The runs that reported a result, the study's winning run (best_run) first, then best first."""
    best = best_run(rows)
    return [best, *(r for r in rows if r.epochs and r.phase != "final" and r is not best)] if best else []


def finals(rows: list[TrialRow]) -> list[TrialRow]:
    """The final fit's runs (one per study, more after an interrupted one was superseded)."""
    return [r for r in rows if r.phase == "final"]
