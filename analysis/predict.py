"""Top-k classes of image files, from a registered model or a checkpoint, one line per image.

python -m analysis.predict IMAGE... [--model models:/NAME/1 | --checkpoint model.pt] [--mlflow-uri URI] [-k 5]

Output: `PATH: class 0.812, class 0.104, ...` (most probable first) on stdout. A file that is missing or not
an image gets `analysis.predict: error: PATH: reason` on stderr, the others are still classified, and the
exit code is 2. Both sources go through trainables.checkpoint.Classifier, as the served model does.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from trainables import checkpoint
from trainables.data.decode import BadImage
from trainables.process import run_and_exit


def load(model_uri: str | None, checkpoint_path: str | None, mlflow_uri: str | None) -> checkpoint.Classifier:
    if checkpoint_path:
        return checkpoint.load(checkpoint_path)
    # mlflow.pyfunc takes seconds to import: only for --model (a --checkpoint needs none of MLflow)
    import mlflow

    from analysis.reading.mlflow_env import using_tracking_uri

    # The registered pyfunc (analysis.serving.ImageClassifier) holds the Classifier it loaded.
    with using_tracking_uri(mlflow_uri):
        return mlflow.pyfunc.load_model(model_uri).unwrap_python_model().clf


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any format trainables.data.decode reads)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="MLflow model URI, e.g. models:/NAME/1 (python -m analysis.registry)")
    src.add_argument("--checkpoint", help="a trial's model.pt")
    p.add_argument(
        "--mlflow-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"),
        help="tracking/registry URI for --model (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)",
    )
    p.add_argument("-k", type=int, default=5, help="classes per image (default 5)")
    a = p.parse_args(argv)
    if a.k < 1:
        p.error("-k must be >= 1")
    try:
        clf = load(a.model, a.checkpoint, a.mlflow_uri)
    except Exception as e:  # missing file, unknown model/version, unreachable store: one line, not a traceback
        p.exit(1, f"analysis.predict: error: cannot load {a.model or a.checkpoint}: {type(e).__name__}: {e}\n")
    good, fitted, bad = [], [], 0
    for path in a.images:
        try:  # decode each file alone so one bad file does not stop the rest
            fitted.append(clf.fit(Path(path).read_bytes()).copy())  # copy: writable, as torch wants
            good.append(path)
        except (BadImage, OSError) as e:
            bad += 1
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            print(f"analysis.predict: error: {path}: {reason}", file=sys.stderr)
    # fit() output is at the cached side already, where fitting again is the identity: same as top_k(paths)
    for path, top in zip(good, clf.top_k(fitted, a.k) if fitted else []):
        print(f"{path}: " + ", ".join(f"{c} {prob:.3f}" for c, prob in top))
    return 2 if bad else 0


if __name__ == "__main__":
    run_and_exit(main)
