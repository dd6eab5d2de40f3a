#!/usr/bin/env bash
# The GPU check, prepared for the day a GPU is at hand: the GPU tests, the throughput benchmark (resnet50 and
# vit_base_patch16_224 at 224 px, bf16, eager and torch.compile), the packing comparison (trials sharing one GPU
# vs one at a time) and a 1-GPU smoke study with its leaderboard, in at most GPU_CHECK_BUDGET_S (470 s: 8 minutes
# with the archive). Every figure goes to $OUT/gpu_check.json: step -> status, exit code, seconds, figures
# (benchmarks/gpu_check_report.py), with the GPU's name at the top.
#
#   OUT=/tmp/gpu-check bash benchmarks/gpu_check.sh                        # on the GPU machine, from the repo root
#   OUT=/tmp/x GPU_CHECK_DRY=1 bash benchmarks/gpu_check.sh                 # the same steps, tiny, on the CPU
#   OUT=/tmp/x GPU_CHECK_STEPS="packing throughput_vit_compile" bash benchmarks/gpu_check.sh   # a rerun of some
#   bash benchmarks/gpu_check.sh --list                                     # the steps, their limits and packages
#
# Each step runs under its own time limit (LIMIT below, cut to what is left of the budget) with its output in
# $OUT/logs/STEP.log; one that fails, times out, lacks its packages or finds no time left is recorded as such and
# the others still run. A dry run (GPU_CHECK_DRY=1) takes tiny models, 64 px, 2-trial studies of 1 epoch on the
# CPU, a 1800 s budget and 4x the limits; the GPU tests skip themselves without a GPU.
# At the end $OUT/logs and the smoke study's MLflow store ($OUT/mlruns: the store and its artifacts) are packed
# into logs.tar.gz and mlruns.tar.gz, two files that are easy to bring back from a borrowed GPU machine
# (GPU_CHECK_ARCHIVE=0 leaves them unpacked).
# Packages: when the project's are not all importable, the install step takes the wheels in GPU_CHECK_WHEELS
# (default .whl, installed with --target into $SITE: for a machine that cannot reach PyPI) or PyPI, keeping an
# installed torch (a CUDA build made for that machine). Where torch, timm and pytest are there already, the wheels
# of optuna, colorlog, kornia and kornia_rs (7.5 MB) are enough for the GPU tests and the throughput runs
# (`pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d .whl ...`);
# the studies also need ray and mlflow, and skip without them. GPU_CHECK_COMMIT names the commit where there is
# no .git.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
PY=${PYTHON:-$(command -v python3 || command -v python)}
SITE=${TMPDIR:-/tmp}/gpu-check-site  # where carried wheels install
WHEELS=${GPU_CHECK_WHEELS:-$ROOT/.whl}
export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
DRY=${GPU_CHECK_DRY:-0}
SMOKE_EXPERIMENT=gpu-check-smoke
RESERVE_S=20  # kept back from the budget: a timed-out step's 10 s to die (--kill-after) and the archive
MIN_STEP_S=15  # a step with less time left than this is not started

STEPS=(env install gpu_tests throughput_cnn throughput_vit smoke leaderboard packing
  throughput_cnn_compile throughput_vit_compile)  # torch.compile last: the slowest, and the first to go short
# seconds each step may take on the GPU machine; what they are expected to take there adds up to ~430 s
declare -A LIMIT=(
  [env]=30                     # ~3 s
  [install]=180                # ~5 s when installed; a PyPI install of everything but torch: ~1-2 min
  [gpu_tests]=120              # ~40 s: imports, three memory probes on the CPU, AMP and data-path steps
  [throughput_cnn]=75          # ~35 s each: 12 s of loader rates, 2 x (30 timed + 5 warm-up steps) per loop
  [throughput_vit]=75
  [smoke]=120                  # ~50 s: Ray's start, 4 packed trials of 2 epochs, the closing steps
  [leaderboard]=60             # ~10 s
  [packing]=240                # ~120 s: the same 4-trial study packed, then one trial at a time
  [throughput_cnn_compile]=150 # ~90 s each: compiling the step (the model's and the bare loop's) and 1 repeat
  [throughput_vit_compile]=150
)
# python packages a step cannot run without (kornia: the data path; optuna: search_spaces; ray + mlflow: studies)
declare -A NEEDS=(
  [gpu_tests]="torch timm optuna kornia pytest"
  [throughput_cnn]="torch timm kornia"
  [throughput_vit]="torch timm kornia"
  [throughput_cnn_compile]="torch timm kornia"
  [throughput_vit_compile]="torch timm kornia"
  [smoke]="torch timm optuna kornia ray mlflow"
  [leaderboard]="mlflow pandas"
  [packing]="torch timm optuna kornia ray mlflow"
)

if [[ $DRY == 1 ]]; then  # tiny models and studies on the CPU: checks the wiring, measures nothing
  CNN=test_resnet VIT=test_vit REPEATS=1 SCALE=4 BUDGET=${GPU_CHECK_BUDGET_S:-1800}
  THROUGHPUT=(--device cpu --image-size 64 --batch-size 8 --steps 2 --warmup 1 --workers 0 --threads 2 --amp bf16)
  SMOKE=(--num-samples 2 --max-epochs 1)
  PACKING=(--trials 2 --max-epochs 1)
else
  CNN=resnet50 VIT=vit_base_patch16_224 REPEATS=2 SCALE=1 BUDGET=${GPU_CHECK_BUDGET_S:-470}
  THROUGHPUT=(--image-size 224 --batch-size 128 --amp bf16 --steps 30 --warmup 5)
  SMOKE=()  # --smoke as it comes: 4 trials, 2 epochs, 32 px, stand-in models
  PACKING=(--trials 4 --max-epochs 2)
fi

missing() {  # the names among "$@" that python cannot import
  (($# == 0)) || "$PY" -c 'import importlib.util as u, sys; print(*(m for m in sys.argv[1:] if not u.find_spec(m)))' "$@"
}

step_env() {
  nvidia-smi || echo "nvidia-smi: not here (no NVIDIA driver)"
  GPU_CHECK_COMMIT=${GPU_CHECK_COMMIT:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)} \
    "$PY" - <<'EOF'
import json, os, platform, subprocess

info = {"python": platform.python_version(), "cpus": os.cpu_count(), "commit": os.environ["GPU_CHECK_COMMIT"]}
try:
    import torch

    cuda = torch.cuda.is_available()
    info.update(torch=torch.__version__, cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(), gpus=torch.cuda.device_count())
    info["gpu"] = torch.cuda.get_device_name(0) if cuda else "none"
    info["bf16"] = cuda and torch.cuda.is_bf16_supported()
    if cuda:
        info["gpu_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
        info["driver"] = subprocess.run(query, capture_output=True, text=True).stdout.strip()
except ImportError as e:
    info.update(gpu="unknown", torch=f"not importable: {e}")
print(json.dumps(info))
EOF
}

step_install() {
  local absent
  absent=$(missing torch timm optuna kornia ray mlflow pytest)
  if [[ -z $absent ]]; then
    echo "the project's packages are installed"
  elif compgen -G "$WHEELS/*.whl" >/dev/null; then  # carried wheels, exactly these (no index, no dependencies)
    echo "missing: $absent; installing $WHEELS/*.whl into $SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" "$WHEELS"/*.whl
  elif [[ " $absent " == *" torch "* ]]; then
    echo "missing: $absent; pip install -e '.[dev]'"
    "$PY" -m pip install -q --retries 1 --timeout 15 -e ".[dev]"
  else  # the project's dependencies but torch and torchvision, then the project itself
    echo "missing: $absent; installing the project's dependencies, keeping torch $("$PY" -c 'import torch; print(torch.__version__)')"
    "$PY" -m pip install -q --retries 1 --timeout 15 pytest pytest-timeout $("$PY" -c '
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
print(*(d for d in deps if re.split(r"[\[<>=!~ ;]", d)[0] not in ("torch", "torchvision")))') &&
      "$PY" -m pip install -q --no-deps -e .
  fi
}

step_gpu_tests() {
  local files conftest=()
  mapfile -t files < <(grep -l "pytest.mark.gpu" tests/test_*.py)
  # tests/conftest.py imports mlflow; the GPU tests use none of its fixtures, so they run without it too
  [[ -z $(missing mlflow) ]] || conftest=(--noconftest)
  "$PY" -m pytest "${files[@]}" -m gpu -q -p no:cacheprovider "${conftest[@]}" --junitxml="$OUT/logs/gpu_tests.xml"
}

throughput() {  # MODEL REPEATS [--compile]
  "$PY" benchmarks/throughput.py --model "$1" --repeats "$2" "${THROUGHPUT[@]}" "${@:3}"
}
step_throughput_cnn() { throughput "$CNN" "$REPEATS"; }
step_throughput_vit() { throughput "$VIT" "$REPEATS"; }
step_throughput_cnn_compile() { throughput "$CNN" 1 --compile; }
step_throughput_vit_compile() { throughput "$VIT" 1 --compile; }

step_smoke() {  # run from $OUT/mlruns: a study's MLflow artifacts go to its working folder's mlartifacts/
  mkdir -p "$OUT/mlruns" && cd "$OUT/mlruns" &&
    "$PY" "$ROOT/tune.py" --family scratch --smoke --workers-per-trial 1 --no-dashboard "${SMOKE[@]}" \
      --experiment "$SMOKE_EXPERIMENT" --mlflow-uri "sqlite:///$OUT/mlruns/mlflow.db" --storage "$WORK/smoke"
}

step_leaderboard() {
  "$PY" -m analysis.leaderboard --experiment "$SMOKE_EXPERIMENT" --mlflow-uri "sqlite:///$OUT/mlruns/mlflow.db" \
    --csv "$OUT/logs/leaderboard.csv" --no-log
}

step_packing() { "$PY" benchmarks/packing.py --dir "$WORK/packing" "${PACKING[@]}"; }

record() { "$PY" benchmarks/gpu_check_report.py step "$OUT" "$@"; }

run_step() {  # NAME: runs step_NAME in a child of this script under its limit, then records it
  local name=$1 left limit absent since
  left=$((BUDGET - SECONDS - RESERVE_S))
  limit=$((LIMIT[$name] * SCALE < left ? LIMIT[$name] * SCALE : left))
  if ((limit < MIN_STEP_S)); then
    record "$name" --skipped "out of time: $left s of the $BUDGET s budget left"
    return
  fi
  absent=$(missing ${NEEDS[$name]:-})
  if [[ -n $absent ]]; then
    record "$name" --skipped "missing python packages: $absent"
    return
  fi
  echo "== $name (at most $limit s): $OUT/logs/$name.log"
  since=$(date +%s.%N)
  timeout --kill-after=10 "$limit" bash "$ROOT/benchmarks/gpu_check.sh" --step "$name" >"$OUT/logs/$name.log" 2>&1
  record "$name" --rc $? --since "$since" --limit "$limit"
}

archive() {  # the logs and the smoke study's store as two files (16 MiB each at most: the store's artifacts go first)
  [[ ${GPU_CHECK_ARCHIVE:-1} == 1 ]] || return 0
  tar -czf "$OUT/logs.tar.gz" -C "$OUT" logs && rm -rf "$OUT/logs"
  [[ -d $OUT/mlruns ]] || return 0
  tar -czf "$OUT/mlruns.tar.gz" -C "$OUT" mlruns
  if (($(stat -c %s "$OUT/mlruns.tar.gz") > 15 * 2 ** 20)); then
    tar -czf "$OUT/mlruns.tar.gz" -C "$OUT" mlruns/mlflow.db
  fi
  rm -rf "$OUT/mlruns"
}

main() {
  local name selected failed
  : "${OUT:?set OUT to an empty folder for the results}"
  mkdir -p "$OUT/logs" && OUT=$(cd "$OUT" && pwd)
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
  export OUT WORK
  trap 'rm -rf "$WORK"' EXIT
  read -ra selected <<<"${GPU_CHECK_STEPS:-${STEPS[*]}}"
  for name in "${selected[@]}"; do
    [[ -v "LIMIT[$name]" ]] || { echo "unknown step '$name'; the steps: ${STEPS[*]}" >&2 && exit 2; }
  done
  "$PY" benchmarks/gpu_check_report.py start "$OUT" --dry "$DRY" --budget "$BUDGET" || exit 2
  for name in "${selected[@]}"; do
    run_step "$name"
  done
  failed=$(grep -cE '"status": "(failed|timeout)"' "$OUT/gpu_check.json")
  cat "$OUT/gpu_check.json"
  archive
  echo "$failed step(s) failed or timed out; $OUT: $(ls "$OUT" | tr '\n' ' ')"
  ((failed == 0))
}

case ${1:-} in
  --list) for name in "${STEPS[@]}"; do echo "$name ${LIMIT[$name]} ${NEEDS[$name]:-}"; done ;;
  --step) "step_$2" ;;
  "") main ;;
  *) echo "usage: OUT=DIR [GPU_CHECK_DRY=1] [GPU_CHECK_STEPS='env ...'] bash $0 [--list]" >&2 && exit 2 ;;
esac
