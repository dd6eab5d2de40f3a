"""artsweep: search hyper-parameters and train the best image classifier the budget allows.

  python tune.py                                     # demo: 4 scratch CNN trials on the built-in dataset, ~2.5 minutes
  python tune.py --family scratch --data /data/wikiart --num-samples 32 --max-epochs 15 --final-fit
  python tune.py --smoke                             # a tiny study to check the wiring (about a minute)
  mlflow ui --backend-store-uri sqlite:///mlflow.db  # browse every trial afterwards

Ray Tune proposes configurations with Optuna (TPE), recipes first, and ASHA stops poor trials early on val_macro_f1;
the best are confirmed over seeds; each trial is a Ray Train DDP run; MLflow records every trial.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from search_spaces import ALL, FAMILIES
from sweep.defaults import DEMO, SMOKE
from sweep.errors import UsageError
from trainables.process import run_and_exit


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit code 2, like every other input error here
        self.exit(2, f"tune.py: error: {message} (see python tune.py --help)\n")


def parse_args(argv=None) -> argparse.Namespace:
    arg = (p := _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)).add_argument
    arg(
        "--family",
        default="scratch",
        help=f"model family to search: {', '.join(FAMILIES)}, or {ALL} to let every "
        "family compete in one study (default: scratch)",
    )
    arg("--arch", help="pin one architecture of the family instead of searching it")
    arg(
        "--data",
        help="a local path or a URI (s3://, gs://, file://; options and credentials from the environment, e.g. "
        "AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID) to a folder with one sub-folder of images per class, a CSV manifest "
        "(path,label[,split]), or Parquet shards (a .parquet file, a folder of them, or a glob: the Hugging Face "
        "layout, an image column of bytes and label columns) "
        "(default: the built-in generated 'painting styles' set, written to ~/.cache/artsweep once)",
    )
    arg(
        "--label",
        metavar="COLUMN",
        help="the label column of a CSV manifest or Parquet shards, e.g. style, genre or artist for WikiArt "
        "(default: 'label', or the only label-like column there is); class names come from the Parquet schema's "
        "Hugging Face metadata when it has them, else from the values",
    )
    arg(
        "--num-samples",
        type=int,
        help=f"trials to run (default {DEMO['num_samples']}, smoke {SMOKE['num_samples']}; "
        f"with a budget: as many as fit; the demo on the built-in data: {DEMO['builtin_trials']} trials within a "
        f"{DEMO['builtin_time_budget']} time budget)",
    )
    arg(
        "--time-budget",
        help="wall time for the whole study, from now: 90s, 20m, 2h, 1h30m; trials stop at an "
        "epoch boundary and no new one starts once it would not fit (with no --num-samples: as many as fit)",
    )
    arg("--gpu-hours", type=float, help="GPU-hours (CPU-hours without GPUs) the trials may reserve, as --time-budget")
    arg(
        "--price-per-gpu-hour",
        type=float,
        default=0.0,
        help="price of one GPU-hour: the study's record and summary then show its cost",
    )
    arg(
        "--max-epochs",
        type=int,
        help=f"epoch budget per trial = ASHA max_t (default {DEMO['max_epochs']}, smoke {SMOKE['max_epochs']})",
    )
    arg(
        "--workers-per-trial",
        type=int,
        default=1,
        help="DDP workers per trial: GPUs on a cluster, CPU processes (gloo) otherwise (default 1)",
    )
    arg("--image-size", type=int, help="input side in px (default: the family's; 32 on the built-in set)")
    arg("--experiment", help="MLflow experiment name, also the Ray run name (default artsweep-FAMILY)")
    arg("--mlflow-uri", help="MLflow tracking URI (default: sqlite:///./mlflow.db; a server: http://host:5000)")
    arg("--storage", help="Ray results and checkpoints folder or URI (default ./ray_results)")
    arg("--seed", type=int, default=0, help="seeds the split, the sampler, model init and TPE (default 0)")
    arg("--address", help="join a running Ray cluster ('auto' or host:port) instead of starting one")
    arg(
        "--amp",
        default="auto",
        choices=["auto", "bf16", "fp16", "off"],
        help="mixed precision (default auto: bf16 where supported, fp16 on older GPUs)",
    )
    arg(
        "--compile",
        action="store_true",
        help="torch.compile each trial's model (slower start, faster steps on GPUs; figures in docs/benchmarks.md)",
    )
    arg(
        "--pretrained",
        choices=["timm", "none"],
        help="timm: pretrained weights (downloaded, from the HF cache, or "
        "from --weights-dir); none: random init (default timm; none with --smoke)",
    )
    arg("--weights-dir", help="offline weights: DIR/<timm name>.safetensors (or .pth/.bin) per model")
    arg(
        "--standins",
        action="store_true",
        help="search each family's CPU-sized stand-in architectures (timm test "
        "models) instead of the real ones; implied by --smoke; logged as the arch",
    )
    arg(
        "--resize",
        default="crop",
        choices=["crop", "letterbox"],
        help="aspect-preserving resize + centre crop (default) or letterbox padding",
    )
    arg(
        "--resume",
        action="store_true",
        help="continue the stopped study of --experiment (same --storage and "
        "--mlflow-uri): finished trials stay, interrupted ones start again, the rest of its --num-samples run, all "
        "in the same MLflow parent run; other flags are taken from the study",
    )
    arg(
        "--set",
        action="append",
        dest="pins",
        metavar="KNOB=VALUE",
        help="fix a knob of the search space instead of searching it, for every trial, recipe and confirmation "
        "(repeatable): --set width=0.25 --set batch_size=64; a value outside the knob's range or choices is refused "
        "before anything starts; recorded with each trial run as a param",
    )
    arg("--no-early-stopping", action="store_true", help="every trial runs --max-epochs (no ASHA)")
    arg("--no-recipes", action="store_true", help="don't start with the families' published recipes (docs/recipes.md)")
    arg(
        "--confirm",
        type=int,
        metavar="K",
        help="after the search, train its K best distinct configurations again with "
        "new seeds, all epochs; the winner is the best mean (default 3 when --num-samples, or the 8 trials of a "
        "study without it or a budget, is >= 8, else 0 = off; docs/architecture.md#phases)",
    )
    arg("--confirm-seeds", type=int, default=3, metavar="S", help="new seeds per confirmed configuration (default 3)")
    arg(
        "--final-fit",
        action="store_true",
        help="then train the winner on train + val for its median peak epoch, "
        "score it on test and register it as the `champion` (the old one becomes `previous`)",
    )
    arg(
        "--objectives",
        metavar="SCORE,COST",
        help="search accuracy against a cost of serving instead of accuracy alone: val_macro_f1,latency_ms (or "
        "val_macro_f1,throughput_img_s); multi-objective TPE proposes, MOASHA stops trials by Pareto dominance, and "
        "the trials on the front are tagged pareto=true and drawn on the study's run; you pick the point to deploy "
        "(python -m analysis.registry --trial RUN_ID); latency: batch 1, measured once per network before any trial "
        "starts, on a GPU or node the trials leave alone",
    )
    arg(
        "--max-latency-ms",
        type=float,
        metavar="MS",
        help="a latency budget: batch-1 inference within MS milliseconds on the trials' device kind; TPE learns "
        "where it holds (constrained TPE), a network over it stops at its first rung and never wins",
    )
    arg(
        "--export",
        choices=["onnx"],
        help="also export the winner (the champion with --final-fit) to ONNX, check it against PyTorch on the "
        "validation split, and register it as a version tagged format=onnx (python -m analysis.export does this "
        "for any run)",
    )
    arg(
        "--pack",
        default="auto",
        choices=["auto", "off"],
        help="auto: single-worker trials share a GPU when their "
        "estimated memory fits several times (fractional GPUs; DDP trials keep whole GPUs); off: one GPU each",
    )
    arg(
        "--max-retries",
        type=int,
        default=2,
        help="restarts of a trial's workers after one is lost (a crash, a "
        "reclaimed spot node), each from the trial's last finished epoch (default 2)",
    )
    arg(
        "--no-dashboard",
        action="store_true",
        help="don't start Ray's dashboard (saves memory and CPU on small "
        "machines; artsweep still frees the workers of trials ASHA stops)",
    )
    arg("--verbose", action="store_true", help="show Ray's output (Tune's tables, worker logs) here, not in ray.log")
    arg(
        "--smoke",
        action="store_true",
        help=f"tiny budget for a quick check: {SMOKE['num_samples']} trials, "
        f"{SMOKE['max_epochs']} epochs, {SMOKE['image_size']} px, {SMOKE['max_train_images']} images/epoch, CPU-sized "
        "stand-in architectures, no pretrained weights (explicit flags win)",
    )
    a = p.parse_args(argv)  # --help exits here, having loaded none of torch, Ray and MLflow
    from trainables.tracking.credentials import CredentialsError, check_uri

    try:  # before anything prints or stores the URI
        check_uri(a.mlflow_uri)
    except CredentialsError as e:
        p.exit(2, f"tune.py: error: {e}\n")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    from sweep.settings import from_flags
    from trainables.tracking.mlflow_runs import default_uri

    try:
        checked = None if a.resume else from_flags(a, Path.cwd())  # refused here without the study's imports (~4 s)
        from sweep.study import Study  # Ray Tune, the closing's reports

        study = (
            Study.resume(
                a.experiment or f"artsweep-{a.family}",
                a.storage,
                a.mlflow_uri or default_uri(Path.cwd()),
                a.address,
                not a.no_dashboard,
                verbose=a.verbose,
            )
            if a.resume
            else Study.start(*checked, a.address, not a.no_dashboard, verbose=a.verbose)
        )
    except UsageError as e:
        sys.stderr.write(f"tune.py: error: {e}\n")
        raise SystemExit(2) from None
    return study.run()


if __name__ == "__main__":
    run_and_exit(main)
