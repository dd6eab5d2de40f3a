"""What a study's new SQLite tracking store costs: MLflow building it (every schema migration) against the copy of its
empty store that tune.py puts in place first (trainables/tracking/new_store.py).

python benchmarks/new_store.py [--rounds 5]

Each round, alternating, opens a new store both ways as tune.py's pre-flight does (MlflowClient(uri) and one
search_experiments call, in this process, after MLflow's imports), in a fresh folder. The empty store is built in a
fresh ARTSWEEP_CACHE first and its build time reported apart (once per machine and MLflow version). The last line
printed is the whole result as JSON: seconds per new store, median of the rounds, both ways, and their ratio.
"""

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5, help="new stores made each way (default 5)")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["ARTSWEEP_CACHE"] = str(Path(tmp) / "cache")
        import mlflow
        from mlflow.tracking import MlflowClient

        from trainables.tracking import new_store

        t = time.perf_counter()
        new_store.template()
        template_s = time.perf_counter() - t
        built, copied = [], []
        for i in range(a.rounds):
            for way, times in (("built", built), ("copied", copied)):
                uri = f"sqlite:///{Path(tmp) / f'{way}{i}.db'}"
                t = time.perf_counter()
                if way == "copied":
                    assert new_store.seed(uri)
                MlflowClient(uri).search_experiments(max_results=1)
                times.append(time.perf_counter() - t)
                print(f"round {i + 1}: {way} {times[-1]:.3f} s", flush=True)
    result = {
        "mlflow": mlflow.__version__,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "rounds": a.rounds,
        "template_build_s": round(template_s, 3),
        "built_by_mlflow_s": round(statistics.median(built), 3),
        "copied_s": round(statistics.median(copied), 3),
        "speedup": round(statistics.median(built) / statistics.median(copied), 1),
    }
    print(
        f"new SQLite store: MLflow builds it in {result['built_by_mlflow_s']} s, the copy takes {result['copied_s']} s"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
