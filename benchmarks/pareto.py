"""Does the Pareto search (multi-objective TPE + MOASHA) find the accuracy/latency front faster than random search?

python benchmarks/pareto.py [--seeds 20] [--workers 4] [--max-t 16] [--budget-trials 20] [--plot benchmarks/pareto.png]

Benchmarks: mf-prior-bench's mfh3 and mfh6 (benchmarks/search.py installs them), with two objectives:
- accuracy: the negated Hartmann value at the epoch's fidelity (maximised, like val_macro_f1), reported every epoch;
  0 .. 3.86 (mfh3) / 3.32 (mfh6) at full fidelity, lower at low fidelity (the bias and noise only ever lower it);
- latency_ms = 10 + 90 x mean(inputs) (minimised, like latency_ms): a cost of the configuration alone, the same every
  epoch, 10 .. 100 ms. It reads each input as the size of one stage of a network (stage latencies add up, 10 ms
  for the rest). It conflicts with accuracy: the cheapest configuration (all inputs 0) scores 0.07 / 0.005 and the
  accuracy optimum costs 55.7 ms (mfh3) / 41.1 ms (mfh6), the best accuracy within a latency rising all the way
  between (a front, not one point). A cost of a few inputs only gives no trade-off on mfh6: with its last two
  inputs, Hartmann-6's second optimum (3.20, at X_4 0.14 and X_5 0.04) costs 6 ms.

Hypervolume (trainables.objectives.hypervolume, in those units) against the fixed reference (accuracy 0, 100 ms):
Hartmann's floor at full fidelity and the slowest configuration. Its points are the trained models: every trial
counts with the best accuracy it reached so far and its latency, a trial ASHA stopped included (its model exists,
and the study's leaderboard and front count it the same way); the low-fidelity values understate the final ones,
so counting them flatters no one. The stricter "full fidelity" hypervolume (trials that ran max_t epochs only)
is printed beside it. The same rules for every configuration.

Configurations, each with the same budget of epochs (budget-trials x max_t) on `workers` asynchronous workers,
driven by benchmarks/search.py's event loop (the calls Ray Tune makes):
- ours: sweep.search.search_and_scheduler with objectives (val_macro_f1, latency_ms): Optuna's multi-objective
  TPE (stopped trials PRUNED) and sweep.moasha.MOASHA, grace 1, reduction factor 4;
- MO-TPE + FIFO: the same searcher, every trial runs max_t epochs (the scheduler's share);
- scalarised TPE + ASHA: the single-objective study (TPE + ASHA) on accuracy - LAMBDA x normalised latency;
- random + FIFO: Optuna's RandomSampler, every trial runs max_t epochs.

Printed: per benchmark and configuration, the median (over seeds) share of random search's epochs needed to reach
random search's final hypervolume ("inf" when never reached), the median final hypervolume, the same two at full
fidelity, and the median number of trials started. Last line: one JSON object {benchmark: share for ours}.
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

import optuna
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks.search: a folder, not a package
from benchmarks.search import BENCHES, hartmann, mfpbench, plot, run_trials, share_to_reach, unit_space  # noqa: E402
from sweep.search import search_and_scheduler  # noqa: E402
from trainables.metrics import OBJECTIVE_KEY  # noqa: E402
from trainables.objectives import Objectives, hypervolume  # noqa: E402

LATENCY_KEY = "latency_ms"
GOALS = Objectives(keys=(OBJECTIVE_KEY, LATENCY_KEY), modes=("max", "min"))  # what `--objectives` gives a study
FIXED_MS, STAGES_MS = 10.0, 90.0  # latency of a configuration with every input at 0, and what the inputs add at 1
REFERENCE = (0.0, FIXED_MS + STAGES_MS)  # Hartmann's floor at full fidelity, the slowest configuration
# scalarised: the whole latency range is worth one unit of accuracy (a quarter of Hartmann's range); on these fronts
# its optimum is the accuracy optimum (the front's knee, where most of the hypervolume lies)
LAMBDA = 1.0
RAW_KEY = "hartmann"  # the accuracy itself, beside OBJECTIVE_KEY (which holds the scalarised value when scalarised)
OURS, RANDOM = "MO-TPE + MOASHA (ours)", "random + FIFO"


def latency_ms(config: dict) -> float:
    """The configuration's stand-in latency, 10 .. 100 ms: stage latencies (linear in each input) add up."""
    return FIXED_MS + STAGES_MS * statistics.fmean(config.values())


def scalarised(accuracy: float, latency: float) -> float:
    """One number for a single-objective search: accuracy less LAMBDA per 90 ms of latency above 10 ms."""
    return accuracy - LAMBDA * (latency - FIXED_MS) / STAGES_MS


def configurations(max_t: int) -> dict:
    """name -> (make(seed, space) -> (searcher, scheduler), whether the search ranks the scalarised value)."""

    def ours(seed, space, early_stopping=True):
        # the study's own construction for `--objectives val_macro_f1,latency_ms`
        return search_and_scheduler(
            space, seed=seed, num_samples=0, max_t=max_t, grace=1, early_stopping=early_stopping, objectives=GOALS
        )

    def mo_tpe_fifo(seed, space):
        return ours(seed, space, early_stopping=False)

    def scalar_asha(seed, space):  # the single-objective study, shown the scalarised value as its objective
        return search_and_scheduler(space, seed=seed, num_samples=0, max_t=max_t, grace=1)

    def random_fifo(seed, space):
        sampler = optuna.samplers.RandomSampler(seed=seed)
        search = OptunaSearch(space=space, metric=list(GOALS.keys), mode=list(GOALS.modes), sampler=sampler)
        return search, FIFOScheduler()

    return {
        OURS: (ours, False),
        "MO-TPE + FIFO": (mo_tpe_fifo, False),
        f"scalarised TPE + ASHA (lambda {LAMBDA:g})": (scalar_asha, True),
        RANDOM: (random_fifo, False),
    }


class Front:
    """The anytime hypervolume of a study's trained models: each trial's best accuracy so far and its latency."""

    def __init__(self, max_t: int):
        self.max_t = max_t
        self.trained: dict[str, tuple[float, float]] = {}  # trial -> (best accuracy so far, latency)
        self.full: dict[str, tuple[float, float]] = {}  # the same, trials that ran max_t epochs only
        self.volumes = (0.0, 0.0)  # (trained, full) hypervolume

    def add(self, trial_id: str, accuracy: float, latency: float, epoch: int) -> tuple[float, float]:
        """Count one epoch's result; returns the (trained, full-fidelity) hypervolume now."""
        changed = self._better(self.trained, trial_id, accuracy, latency)
        if epoch >= self.max_t:  # the trial's best, as in `trained`, now that it ran its budget
            self.full[trial_id], changed = self.trained[trial_id], True
        if changed:
            self.volumes = (self.hypervolume(self.trained), self.hypervolume(self.full))
        return self.volumes

    @staticmethod
    def hypervolume(points: dict) -> float:
        return hypervolume(list(points.values()), GOALS.modes, REFERENCE)

    @staticmethod
    def _better(points: dict, trial_id: str, accuracy: float, latency: float) -> bool:
        if trial_id in points and points[trial_id][0] >= accuracy:
            return False
        points[trial_id] = (accuracy, latency)
        return True


def simulate(bench, make, scalar: bool, seed: int, max_t: int, budget: int, workers: int):
    """(trained curve, full-fidelity curve, trials started) of one study; a curve: [(epochs spent, hypervolume)]."""
    search, sched = make(seed, unit_space(bench))
    front, trained, full = Front(max_t), [], []

    def evaluate(config, epoch):
        accuracy, latency = hartmann(bench, config, epoch, max_t), latency_ms(config)
        ranked = scalarised(accuracy, latency) if scalar else accuracy
        return {OBJECTIVE_KEY: ranked, LATENCY_KEY: latency, RAW_KEY: accuracy}

    for spent, trial_id, r in run_trials(search, sched, evaluate, max_t, budget, workers):
        hv, hv_full = front.add(trial_id, r[RAW_KEY], r[LATENCY_KEY], r["training_iteration"])
        trained.append((spent, hv))
        full.append((spent, hv_full))
    return trained, full, len(front.trained)


def table(name: str, runs: dict, budget: int) -> float:
    """Print one benchmark's rows; returns ours' median share of random's epochs (trained-model hypervolume)."""
    print(f"  {'configuration':<34}{'share':>7}{'final HV':>10}{'share full':>12}{'final HV full':>15}{'trials':>8}")
    ours = float("inf")
    for c, rs in runs.items():
        cols = []
        for k in (0, 1):  # trained, full fidelity: the share of random's epochs to reach its final, the final
            targets = [r[k][-1][1] for r in runs[RANDOM]]
            shares = [share_to_reach(r[k], t, budget) for r, t in zip(rs, targets)]
            cols += [statistics.median(shares), statistics.median(r[k][-1][1] for r in rs)]
        trials = statistics.median(r[2] for r in rs)
        print(f"  {c:<34}{cols[0]:>7.2f}{cols[1]:>10.1f}{cols[2]:>12.2f}{cols[3]:>15.1f}{trials:>8.0f}")
        ours = cols[0] if c == OURS else ours
    return ours


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=20, help="studies per configuration and benchmark (seeds 0..n-1)")
    p.add_argument("--workers", type=int, default=4, help="trials running at once")
    p.add_argument("--max-t", type=int, default=16, help="epochs of a full trial (fidelity 1..100 mapped onto them)")
    p.add_argument("--budget-trials", type=int, default=20, help="budget in full trials: budget-trials x max-t epochs")
    p.add_argument("--plot", default="", help="write the median anytime hypervolume curves to this PNG")
    a = p.parse_args()
    m = mfpbench()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # multi-objective samplers warn that they are experimental
    budget, configs, summary, curves = a.budget_trials * a.max_t, configurations(a.max_t), {}, {}
    for name in BENCHES:
        runs = {
            c: [simulate(m.get(name, seed=s), make, scalar, s, a.max_t, budget, a.workers) for s in range(a.seeds)]
            for c, (make, scalar) in configs.items()
        }
        print(f"\n{name}: {a.seeds} seeds, {budget} epochs each ({a.budget_trials} full trials), {a.workers} workers")
        print(f"  share: of random's epochs to reach its final hypervolume (HV, reference {REFERENCE}), median")
        summary[name] = round(table(name, runs, budget), 3)
        curves[name] = {c: [r[0] for r in rs] for c, rs in runs.items()}
    if a.plot:
        plot(curves, budget, a.plot, "median anytime hypervolume", "hypervolume (-Hartmann x ms)")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
