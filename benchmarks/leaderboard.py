"""The leaderboard of a large study on a real `mlflow server`: how long it takes, and that it ranks as the
trials' histories do.

python benchmarks/leaderboard.py [--trials 1000] [--epochs 10] [--check 200] [--repeat 3] [--dir DIR]
python benchmarks/leaderboard.py --trials 50 --check -1 --repeat 1        # quick: every trial checked

Writes a study shaped like tune.py's (tests/test_leaderboard.py log_study: a parent run tagged
artsweep.study=1; per trial a child run with its tags, 11 params, val_macro_f1, the running best and 8 other
metrics per epoch, half the trials stopped by ASHA) straight into a SQLite file (a SQLite MlflowClient: about
6x faster than through the server), starts `mlflow server` on it (tests/servers.py: loopback, one worker) and
times
  cli         python -m analysis.leaderboard --experiment E --mlflow-uri http://... --no-log, end to end
              (process start, imports, one paged search_runs, the table), --repeat times
  trial_rows  the same ranking in this process
  history     get_metric_history of one trial: the request the leaderboard made per trial before
and checks, on --check trials drawn at random (0: none; -1: all), that trial_rows' best, best epoch, epochs
and relative order are what their full histories give, and that the printed lines fit 120 characters.
Last line: one JSON object of the figures.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mlflow.tracking import MlflowClient  # noqa: E402

from analysis.reading import board, runs  # noqa: E402
from tests.servers import MlflowServer  # noqa: E402
from tests.test_leaderboard import history_ranking, log_study, synthetic_trials  # noqa: E402
from trainables.tracking.mlflow_runs import latest_study  # noqa: E402

EXPERIMENT = "leaderboard-bench"


def write_study(db: Path, work: Path, n: int, epochs: int) -> tuple[str, float]:
    """(parent run id, seconds) of a study of n trials written into the SQLite file `db`; one a previous run
    left there is used again (0 s)."""
    client = MlflowClient(f"sqlite:///{db}")
    if client.get_experiment_by_name(EXPERIMENT):
        return latest_study(client, EXPERIMENT)[1].info.run_id, 0.0
    exp = client.create_experiment(EXPERIMENT, artifact_location=(work / "artifacts").as_uri())
    t0 = time.perf_counter()
    parent = log_study(client, exp, synthetic_trials(n, seed=0, max_epochs=epochs, decimals=None))
    return parent, time.perf_counter() - t0


def time_cli(uri: str) -> tuple[float, list[str]]:
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "analysis.leaderboard", "--experiment", EXPERIMENT, "--mlflow-uri", uri, "--no-log"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return time.perf_counter() - t0, out.splitlines()


def check(client: MlflowClient, exp: str, parent: str, rows: list, k: int) -> tuple[int, float]:
    """(trials checked, seconds per history request); AssertionError when trial_rows disagrees."""
    ids = [r.run_id for r in rows]
    subset = set(ids if k < 0 else random.Random(0).sample(ids, min(k, len(ids))))
    t0 = time.perf_counter()
    expected = history_ranking(client, exp, parent, only=subset)
    per = (time.perf_counter() - t0) / max(1, len(subset))
    got = [(r.run_id, r.best, r.best_epoch, r.epochs) for r in rows if r.run_id in subset]
    assert got == expected, next((g, e) for g, e in zip(got, expected) if g != e)
    return len(subset), per


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=1000, help="child runs of the study")
    p.add_argument("--epochs", type=int, default=10, help="epochs of a trial that ran its budget")
    p.add_argument("--check", type=int, default=200, help="trials checked against their histories (-1: all)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs of the leaderboard command")
    p.add_argument(
        "--dir", type=Path, help="work folder, kept: a study written there is used again (default: a temporary one)"
    )
    a = p.parse_args()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="artsweep-lb-") as tmp:
        work = a.dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        print(f"writing {a.trials} trials ...", file=sys.stderr, flush=True)
        parent, write_s = write_study(work / "server.db", work, a.trials, a.epochs)
        server = MlflowServer(work).start()
        try:
            client = MlflowClient(server.uri)
            exp = client.get_experiment_by_name(EXPERIMENT).experiment_id
            cli = [time_cli(server.uri) for _ in range(a.repeat)]
            t0 = time.perf_counter()
            rows = runs.trial_rows(client, exp, parent)
            rows_s = time.perf_counter() - t0
            assert len(rows) == a.trials, f"{work} holds a study of {len(rows)} trials"
            checked, history_s = check(client, exp, parent, rows, a.check) if a.check else (0, 0.0)
        finally:
            server.stop()
    lines = cli[-1][1]
    assert max(map(len, lines)) <= board.WIDTH, max(lines, key=len)
    assert sum(line.split()[1:2] == [r.name] for line, r in zip(lines[lines.index("") + 2 :], rows)) == len(rows)
    figures = {
        "trials": a.trials,
        "epochs": a.epochs,
        "write_s": round(write_s, 1),
        "cli_s": [round(s, 2) for s, _ in cli],
        "trial_rows_s": round(rows_s, 2),
        "checked": checked,
        "history_s_per_trial": round(history_s, 4),
        "history_s_all": round(history_s * a.trials, 1),
        "max_line": max(map(len, lines)),
        "load_before": [round(x, 2) for x in load],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }
    print(
        f"{a.trials} trials: leaderboard command {min(figures['cli_s']):.2f} s (best of {a.repeat}), trial_rows "
        f"{rows_s:.2f} s in process; one history request {history_s * 1000:.0f} ms ({figures['history_s_all']} s "
        f"for every trial); {checked} trials rank as their histories do; load before {load[0]:.2f}"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
