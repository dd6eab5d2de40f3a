"""Two hot paths of every study, each against the way it was done before (same inputs, same results):

python benchmarks/hot_paths.py [--resamples 1000] [--draws 2000]

bootstrap  the test split's 95 % intervals (analysis.reading.scores.point_metrics: accuracy, top-5, macro and
           weighted F1): one scikit-learn call per resample and metric (before) against each batch of resamples
           scored at once from confusion counts (Metric.resampled, now), on the built-in set's test split size
           (142 images, 8 classes) and WikiArt's (16,200 images, 27 classes; the per-resample path on 50 resamples,
           scaled to --resamples). Both must give the same intervals (max difference printed).
draws      the loader's per-image draw (trainables.data.loaders.CachedImages with a seed, strong augmentation,
           48 px cached to 32 px): torch.manual_seed per draw (before: on a CUDA build of torch it also queues an
           accelerator reseed with a formatted stack trace) against the CPU generator alone (now).
Last line: one JSON object. Other load on the machine slows every figure: compare the ratios, measured back to back.
"""

import argparse
import json
import time

import numpy as np
import torch
from scipy import stats

from analysis.reading import scores
from trainables import metrics
from trainables.data import augment, loaders


def _predictions(n: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, classes, n)
    logits = rng.normal(0, 1, (n, classes))
    logits[np.arange(n), targets] += rng.normal(1.5, 1, n)  # ~60 % right
    return logits, targets


def _per_resample(logits, targets, resamples: int) -> dict:
    """The intervals as before: scipy's bootstrap calling each metric's scikit-learn function once per resample."""
    out, rng = {}, np.random.default_rng(0)
    for m in (m for m in metrics.applicable(logits.shape[1]) if m.name in scores.POINT):
        res = stats.bootstrap(
            (np.arange(len(targets)),),
            lambda idx, fn=m.fn: fn(logits[idx], targets[idx]),
            n_resamples=resamples,
            batch=scores.BOOT_BATCH,
            vectorized=False,
            method="percentile",
            random_state=rng,
        )
        out[m.key("test")] = (res.confidence_interval.low, res.confidence_interval.high)
    return out


def _timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def bootstrap(n: int, classes: int, resamples: int, before_resamples: int) -> dict:
    logits, targets = _predictions(n, classes)
    now_s, now = _timed(scores.point_metrics, logits, targets, resamples)
    before_s, before = _timed(_per_resample, logits, targets, before_resamples)
    before_s *= resamples / before_resamples
    diff = None
    if before_resamples == resamples:  # the same resamples: the intervals must agree
        diff = max(abs(now[k]["ci_low"] - lo) + abs(now[k]["ci_high"] - hi) for k, (lo, hi) in before.items())
    return {
        "images": n,
        "classes": classes,
        "resamples": resamples,
        "before_s": round(before_s, 2),
        "now_s": round(now_s, 3),
        "speedup": round(before_s / now_s, 1),
        "max_interval_diff": diff,
    }


def draws(n: int) -> dict:
    pictures = np.random.default_rng(0).integers(0, 256, (64, 48, 48, 3), dtype=np.uint8)
    ds = loaders.CachedImages(pictures, range(64), [0] * 64, augment.sample_transform(32, True, 1.0, "strong"))

    def now():
        for i in range(n):
            ds[(i % 64, i)]

    def before():
        for i in range(n):
            img = torch.from_numpy(np.array(pictures[i % 64])).permute(2, 0, 1)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(i)
                ds.transform(img)

    now()  # warm-up: first calls build the transform's state
    out = {}
    for name, fn in (("before", before), ("now", now), ("before", before), ("now", now)):  # interleaved, twice
        out.setdefault(name, []).append(_timed(fn)[0] / n * 1e3)
    before_ms, now_ms = min(out["before"]), min(out["now"])
    return {
        "draws": n,
        "before_ms": round(before_ms, 3),
        "now_ms": round(now_ms, 3),
        "speedup": round(before_ms / now_ms, 2),
        "cuda_build": torch.version.cuda is not None,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (the studies' default 1000)")
    p.add_argument("--draws", type=int, default=2000, help="loader draws timed per variant")
    a = p.parse_args()
    torch.set_num_threads(1)  # a loader process's share
    results = {
        "bootstrap_builtin": bootstrap(142, 8, a.resamples, a.resamples),
        "bootstrap_wikiart": bootstrap(16_200, 27, a.resamples, min(50, a.resamples)),
        "draws": draws(a.draws),
    }
    for name, r in results.items():
        print(name, " ".join(f"{k}={v}" for k, v in r.items()))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
