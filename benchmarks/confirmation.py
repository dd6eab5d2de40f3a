"""Is the search's winner the real winner? Studies with confirmation, a final fit and an ensemble, measured.

python benchmarks/confirmation.py [--studies 3] [--num-samples 16] [--dir /tmp/artsweep-confirmation]
python benchmarks/confirmation.py --report --dir /tmp/artsweep-confirmation     # the figures of studies run before

Runs `tune.py --num-samples N --seed i --confirm 3 --confirm-seeds 3 --final-fit` on the built-in data (real
scratch architectures, 32 px, 5 epochs: the demo's settings) for seeds i = 0 .. studies-1, each a different split,
then reports per study: whether the search's best trial is still the best configuration after confirmation (and
where it landed), the seed standard deviation of val macro F1 of each confirmed configuration, and the test macro
F1 of the crowned winner, the final fit, the ensemble of the 3 best confirmation runs (analysis.ensemble) and the
family's published recipe (its trial in the study). Last line: one JSON object with every figure.
"""

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from analysis.reading import ensemble, scores
from analysis.reading.confirm import best_run, confirmed, finals, searched
from analysis.reading.evaluation import test_scores
from analysis.reading.runs import trial_rows
from trainables import checkpoint
from trainables.tracking.mlflow_runs import latest_study

ROOT = Path(__file__).resolve().parents[1]


def run_study(work: Path, seed: int, num_samples: int) -> None:
    cmd = [
        sys.executable,
        str(ROOT / "tune.py"),
        "--num-samples",
        str(num_samples),
        "--seed",
        str(seed),
        "--confirm",
        "3",
        "--confirm-seeds",
        "3",
        "--final-fit",
        "--experiment",
        f"confirmation-{seed}",
        "--mlflow-uri",
        f"sqlite:///{work / 'mlflow.db'}",
        "--storage",
        str(work / "ray_results"),
        "--no-dashboard",
    ]
    with open(work / f"study-{seed}.log", "w") as log:
        subprocess.run(cmd, cwd=work, stdout=log, stderr=subprocess.STDOUT, check=True)


def figures(client: MlflowClient, experiment: str) -> dict:
    exp, study = latest_study(client, experiment)
    parent = study.info.run_id
    rows = trial_rows(client, exp.experiment_id, parent)
    search, conf = searched(rows), confirmed(rows)
    best = best_run(rows)
    top = ensemble.members(rows, 3)
    probs, targets = ensemble.member_probabilities(client, top, parent)
    ens = scores.point_metrics(ensemble.as_logits(checkpoint.average(list(probs.values()))), targets, n_boot=0)
    recipe = next((r for r in search if r.phase == "recipe" and r.epochs), None)
    recipe_test = test_scores(client, recipe, parent)[0] if recipe else {}
    final = finals(rows)
    return {
        "experiment": experiment,
        "trials": len(search),
        "confirm_runs": sum(len(c.runs) for c in conf),
        "search_winner_stays": conf[0].search_rank == 1,
        "search_winner_confirmed_rank": next(c.rank for c in conf if c.search_rank == 1),
        "confirmed": [
            {
                "search_rank": c.search_rank,
                "rank": c.rank,
                "search_best": round(c.source.best, 4),
                "mean": round(c.mean, 4),
                "ci95": round(c.half_width, 4),
                "sd": round(c.sd, 4),
            }
            for c in conf
        ],
        "test_macro_f1": {
            "winner": round(client.get_run(best.run_id).data.metrics["test_macro_f1"], 4),
            "final_fit": round(client.get_run(final[0].run_id).data.metrics["test_macro_f1"], 4) if final else None,
            "ensemble_top3": round(ens["test_macro_f1"]["value"], 4),
            "recipe": round(recipe_test["test_macro_f1"], 4) if recipe_test else None,
            "recipe_epochs": recipe.epochs if recipe else None,
        },
        "test_images": len(targets),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--studies", type=int, default=3)
    p.add_argument("--num-samples", type=int, default=16)
    p.add_argument("--dir", type=Path, default=Path("/tmp/artsweep-confirmation"))
    p.add_argument("--report", action="store_true", help="only report the studies already in --dir")
    a = p.parse_args()
    a.dir.mkdir(parents=True, exist_ok=True)
    out = []
    for seed in range(a.studies):
        if not a.report:
            print(f"study {seed}: running (log: {a.dir / f'study-{seed}.log'}) ...", flush=True)
            run_study(a.dir, seed, a.num_samples)
        f = figures(MlflowClient(f"sqlite:///{a.dir / 'mlflow.db'}"), f"confirmation-{seed}")
        out.append(f)
        t = f["test_macro_f1"]
        sds = [c["sd"] for c in f["confirmed"]]
        print(
            f"study {seed}: {f['trials']} trials, search winner {'stays' if f['search_winner_stays'] else 'loses'} "
            f"(confirmed rank {f['search_winner_confirmed_rank']}); seed sd of val macro F1 "
            f"{', '.join(f'{s:.4f}' for s in sds)}; test macro F1 winner {t['winner']:.4f}, final fit "
            f"{t['final_fit']}, ensemble {t['ensemble_top3']:.4f}, recipe {t['recipe']} "
            f"({t['recipe_epochs']} epochs)",
            flush=True,
        )
    stays = sum(f["search_winner_stays"] for f in out)
    sds = [c["sd"] for f in out for c in f["confirmed"]]
    print(
        f"search winner stays the winner in {stays} of {len(out)} studies; median seed sd of val macro F1 "
        f"{statistics.median(sds):.4f} (range {min(sds):.4f} - {max(sds):.4f})"
    )
    print(json.dumps({"studies": out, "stays": stays, "median_seed_sd": statistics.median(sds)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
