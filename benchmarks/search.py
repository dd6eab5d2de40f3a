"""Does the study's search (TPE + ASHA) find a good configuration faster than random search?

python benchmarks/search.py [--seeds 20] [--workers 4] [--max-t 16] [--budget-trials 20] [--plot search.png]

Benchmarks: mf-prior-bench's synthetic multi-fidelity Hartmann functions mfh3 and mfh6 (3 / 6 parameters in
[0, 1]; fidelity 1..100 mapped onto max_t "epochs"; no downloads). Its numpy<2 pin conflicts with torch's numpy
2, so it is installed here without dependencies into ~/.cache/artsweep/mfpbench (the functions run on numpy 2).

Each configuration gets the same budget of epochs (budget-trials x max_t: random search runs that many full
trials) on `workers` asynchronous workers, every epoch costing one time unit. The searcher and scheduler are
the study's own objects (sweep.search.search_and_scheduler, or Ray's OptunaSearch with a RandomSampler and
FIFO for the baselines), driven by an event loop that calls them as Ray Tune does (suggest, on_trial_add,
on_trial_result, on_trial_complete): with Tune's per-trial actors, 60 studies x ~100 trials would take an hour
on 2 cores, not the 1-2 minutes this takes. The objective is the negated Hartmann value (maximised, like
val_macro_f1). "Anytime best" is the best full-fidelity (max_t) value found so far.

Printed: per benchmark and configuration, the median (over seeds) share of random search's epochs needed to
reach random search's final best ("inf" when never reached), and the median final best. Last line: one JSON
object {benchmark: share for our default}.
"""

import argparse
import heapq
import importlib
import json
import statistics
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import optuna
from optuna.distributions import FloatDistribution
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

from sweep.search import search_and_scheduler
from trainables.metrics import OBJECTIVE_KEY

CACHE = Path.home() / ".cache" / "artsweep" / "mfpbench"
PINS = ["mf-prior-bench==1.10.0", "configspace==1.2.2", "more-itertools>=10"]
BENCHES = ("mfh3", "mfh6")


def mfpbench():
    """Import mfpbench, installing it (without its numpy<2 pin) into CACHE on first use."""
    sys.path.insert(0, str(CACHE))
    try:
        import mfpbench as m
    except ImportError:
        print(f"installing {' '.join(PINS)} into {CACHE} (no dependencies) ...", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(CACHE), *PINS], check=True
        )
        importlib.invalidate_caches()
        import mfpbench as m
    return m


def configurations(max_t: int):
    """name -> (seed, space) -> (searcher, scheduler)."""

    def ours(seed, space):
        return search_and_scheduler(space, seed=seed, num_samples=0, max_t=max_t, grace=1)

    def tpe_fifo(seed, space):
        return search_and_scheduler(space, seed=seed, num_samples=0, max_t=max_t, grace=1, early_stopping=False)

    def random_fifo(seed, space):
        return (
            OptunaSearch(
                space=space, metric=OBJECTIVE_KEY, mode="max", sampler=optuna.samplers.RandomSampler(seed=seed)
            ),
            FIFOScheduler(),
        )

    def variant(**kw):  # alternatives to our default, same construction
        return lambda seed, space: search_and_scheduler(
            space, seed=seed, num_samples=0, max_t=max_t, **{"grace": 1, **kw}
        )

    return {
        "TPE + ASHA (ours)": ours,
        "TPE + ASHA rf=2": variant(reduction_factor=2),
        "TPE + ASHA rf=3": variant(reduction_factor=3),
        "TPE + ASHA grace=2": variant(grace=2),
        "TPE + FIFO": tpe_fifo,
        "random + FIFO": random_fifo,
    }


def unit_space(bench) -> dict:
    """The benchmark's inputs as Optuna distributions (each in [0, 1])."""
    return {name: FloatDistribution(0.0, 1.0) for name in bench.space.keys()}


def hartmann(bench, config: dict, epoch: int, max_t: int) -> float:
    """The negated Hartmann value of `config` after `epoch` of max_t epochs (fidelity 1..100; higher is better)."""
    return -bench.query(config, at=max(1, round(epoch / max_t * 100))).error


def run_trials(search, sched, evaluate, max_t: int, budget: int, workers: int):
    """Drive a searcher and a scheduler as Ray Tune does: `workers` trials at a time, one time unit per epoch,
    new trials while epochs are left. evaluate(config, epoch) -> the trial's result at that epoch (metric keys
    only). Yields (epochs spent, trial id, result) after each epoch has been decided on."""
    search.set_search_properties(OBJECTIVE_KEY, "max", {})
    sched.set_search_properties(OBJECTIVE_KEY, "max")
    running, clock, spent, n = [], 0, 0, 0

    def start():
        nonlocal n
        n += 1
        trial = SimpleNamespace(trial_id=f"t{n}")
        config = search.suggest(trial.trial_id)
        sched.on_trial_add(None, trial)
        heapq.heappush(running, (clock + 1, n, trial, config, 1))

    for _ in range(workers):
        start()
    while running and spent < budget:
        clock, i, trial, config, epoch = heapq.heappop(running)
        spent += 1
        result = {**evaluate(config, epoch), "training_iteration": epoch}
        decision = sched.on_trial_result(None, trial, result)
        search.on_trial_result(trial.trial_id, result)
        yield spent, trial.trial_id, result
        if epoch == max_t or decision == "STOP":
            sched.on_trial_complete(None, trial, result)
            search.on_trial_complete(trial.trial_id, result)
            if spent < budget:
                start()
        else:
            heapq.heappush(running, (clock + 1, i, trial, config, epoch + 1))


def simulate(bench, make, seed: int, max_t: int, budget: int, workers: int) -> list[tuple[int, float]]:
    """[(epochs spent, anytime best)] of one study."""
    search, sched = make(seed, unit_space(bench))
    best, curve = float("-inf"), []

    def evaluate(config, epoch):
        return {OBJECTIVE_KEY: hartmann(bench, config, epoch, max_t)}

    for spent, _, result in run_trials(search, sched, evaluate, max_t, budget, workers):
        if result["training_iteration"] == max_t:
            best = max(best, result[OBJECTIVE_KEY])
        curve.append((spent, best))
    return curve


def share_to_reach(curve, target: float, budget: int) -> float:
    return next((spent / budget for spent, best in curve if best >= target), float("inf"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--max-t", type=int, default=16, help="epochs of a full trial (fidelity 1..100 mapped onto them)")
    p.add_argument("--budget-trials", type=int, default=20, help="budget in full trials: budget-trials x max-t epochs")
    p.add_argument("--plot", default="", help="write the anytime-best curves to this PNG")
    a = p.parse_args()
    m = mfpbench()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    budget, configs, summary, curves = a.budget_trials * a.max_t, configurations(a.max_t), {}, {}
    for name in BENCHES:
        runs = {
            c: [simulate(m.get(name, seed=s), make, s, a.max_t, budget, a.workers) for s in range(a.seeds)]
            for c, make in configs.items()
        }
        curves[name] = runs
        targets = [curve[-1][1] for curve in runs["random + FIFO"]]
        print(f"\n{name}: {a.seeds} seeds, {budget} epochs each ({a.budget_trials} full trials), {a.workers} workers")
        print(f"  {'configuration':<20}{'share of random epochs to reach its best (median)':>52}{'final best':>12}")
        for c, rs in runs.items():
            shares = [share_to_reach(curve, t, budget) for curve, t in zip(rs, targets)]
            med = statistics.median(shares)
            print(f"  {c:<20}{med:>52.2f}{statistics.median(curve[-1][1] for curve in rs):>12.3f}")
            if c == "TPE + ASHA (ours)":
                summary[name] = round(med, 3)
    if a.plot:
        plot(curves, budget, a.plot)
    print(json.dumps(summary))


def plot(curves, budget: int, path: str, what="median anytime best", ylabel="-Hartmann (higher is better)") -> None:
    """One panel per benchmark: each configuration's median (over seeds) curve against the epochs spent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 4))
    for ax, (name, runs) in zip(axes, curves.items()):
        for c, rs in runs.items():
            xs = range(1, budget + 1)
            ys = [statistics.median(dict(curve).get(x, curve[-1][1]) for curve in rs) for x in xs]
            ax.plot(list(xs), [y if y > float("-inf") else None for y in ys], label=c)
        ax.set(title=f"{name}: {what}", xlabel="epochs spent", ylabel=ylabel)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
