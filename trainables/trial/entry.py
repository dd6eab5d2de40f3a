"""The function every Ray Train worker runs, in a module that imports nothing.

Ray pickles `train_loop` by reference: the Train controller and each worker import this module to find it.
Kept apart from trainables.trial.driver (Ray Tune, MLflow) and trainables.trial.worker (torch, timm, scikit-learn), so
the controller never loads the training stack and a worker loads only that (each trial starts fresh
processes: on 2 busy cores every avoided import is seconds per trial; benchmarks/overhead.py measures it).
"""


def train_loop(config: dict) -> None:
    import time

    t0 = time.perf_counter()
    from trainables.trial.worker import train_loop_per_worker

    train_loop_per_worker({**config, "time_import_s": time.perf_counter() - t0})  # reported as time_import_s
