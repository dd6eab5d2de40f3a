"""Bad input fails before anything starts: one line on stderr, exit code 2."""

import subprocess
import sys
from pathlib import Path

import pytest

import tune

ROOT = Path(__file__).resolve().parents[1]


def run_main(capsys, *argv):
    with pytest.raises(SystemExit) as e:
        tune.main(list(argv))
    err = capsys.readouterr().err.strip()
    return e.value.code, err


@pytest.mark.unit
@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--data", "/no/such/folder"], "no such folder"),
        (["--family", "nope"], "unknown family 'nope'"),
        (["--num-samples", "0"], "--num-samples must be a positive integer"),
        (["--max-epochs", "-3"], "--max-epochs must be a positive integer"),
        (["--workers-per-trial", "0"], "--workers-per-trial must be a positive integer"),
        (["--arch", "resnet9000"], "is not in family 'scratch'"),
        (["--num-samples", "two"], "invalid int value"),
        (["--set", "width=0.3"], "width in family 'scratch' is one of 0.25, 0.5, 1.0"),
        (["--set", "depth=4"], "no knob 'depth' in family 'scratch'"),
        (["--set", "lr"], "--set takes KNOB=VALUE"),
    ],
)
def test_bad_input_exits_2_with_one_line(capsys, argv, needle):
    code, err = run_main(capsys, *argv)
    assert code == 2
    assert needle in err and len(err.splitlines()) == 1, err


@pytest.mark.unit
def test_folder_without_class_subfolders(capsys, tmp_path):
    (tmp_path / "loose.jpg").write_bytes(b"not really")
    code, err = run_main(capsys, "--data", str(tmp_path))
    assert code == 2 and "class sub-folder" in err and len(err.splitlines()) == 1


@pytest.mark.unit
def test_unreachable_tracking_server(capsys, tiny_folder):
    code, err = run_main(capsys, "--data", str(tiny_folder), "--mlflow-uri", "http://127.0.0.1:9")
    assert code == 2 and "cannot reach MLflow tracking store" in err and "mlflow server" in err


@pytest.mark.integration  # tune.py as a process
def test_real_process_exit_code_and_help():
    bad = subprocess.run(
        [sys.executable, "tune.py", "--data", "/no/such/folder"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "error:" in bad.stderr
    help_ = subprocess.run([sys.executable, "tune.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    for flag in (
        "--family",
        "--data",
        "--num-samples",
        "--max-epochs",
        "--workers-per-trial",
        "--image-size",
        "--experiment",
        "--mlflow-uri",
        "--storage",
        "--seed",
        "--address",
        "--smoke",
    ):
        assert flag in help_.stdout
    # --help answers before torch, Ray or MLflow is loaded (about 0.5 s against 6 s with them)
    loaded = subprocess.run(
        [sys.executable, "-c", HELP_LOADS], cwd=ROOT, capture_output=True, text=True, timeout=120
    ).stdout.splitlines()
    assert "--smoke" in "".join(loaded) and loaded[-1] == "[]", loaded[-3:]


HELP_LOADS = """import runpy, sys
sys.argv = ["tune.py", "--help"]
try:
    runpy.run_path("tune.py", run_name="__main__")
except SystemExit:
    pass
print(sorted(m for m in ("torch", "ray", "mlflow", "timm", "torchvision") if m in sys.modules))
"""


@pytest.mark.unit
@pytest.mark.parametrize(
    "argv,needles",
    [
        (["--image-size", "100000"], ["--image-size 100000 is outside [16, 1024] px", "GB for"]),
        (["--image-size", "8"], ["is outside [16, 1024] px"]),
        (["--workers-per-trial", "64"], ["--workers-per-trial 64 is more than the", "this machine"]),
        (["--storage", "/proc/forbidden"], ["--storage /proc/forbidden: cannot write there"]),
    ],
)
def test_what_cannot_work_is_refused_before_ray_starts(capsys, tmp_path, argv, needles):
    code, err = run_main(capsys, *argv, "--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert code == 2 and len(err.splitlines()) == 1 and all(n in err for n in needles), err
    assert not (tmp_path / "mlflow.db").exists()  # refused before the store was even opened


@pytest.mark.unit
def test_pretrained_weights_missing_offline_are_named_at_start(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no network: what a cluster without internet sees
    code, err = run_main(capsys, "--family", "cnn", "--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert code == 2 and len(err.splitlines()) == 1, err
    assert (
        all(name in err for name in ("resnet50.a1_in1k", "vgg16.tv_in1k", "convnext_tiny")) and "--weights-dir" in err
    )


@pytest.mark.integration  # 2 processes
def test_two_processes_create_one_new_store_safely(tmp_path):
    """MLflow's schema migration races when two processes create a SQLite store at once; the study takes a
    lock around the first use, so both succeed and the store works."""
    uri = f"sqlite:///{tmp_path / 'new.db'}"
    code = f"from sweep.settings import check_tracking; check_tracking({uri!r})"
    procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    from mlflow.tracking import MlflowClient

    assert MlflowClient(uri).create_experiment("after") and len(MlflowClient(uri).search_experiments()) == 2


@pytest.mark.unit
def test_any_experiment_name_gets_a_safe_unique_run_folder():
    from sweep.study import run_name

    a, b = run_name("my study/2026 (v1)", "0a1b2c3d4e"), run_name("my study/2026 (v1)", "ffff0000aa")
    assert a != b and "/" not in a and " " not in a and a.startswith("my_study_2026_v1")


@pytest.mark.unit
@pytest.mark.parametrize("ends", ["returns", "raises"])
def test_a_command_ends_with_its_code_and_the_collector_frozen(ends):
    """run_and_exit: main's code (or its exception) goes out unchanged, and however main ended, every object is in
    the collector's permanent generation, so the interpreter's last collections skip them."""
    import gc

    from trainables.process import run_and_exit

    def main():
        if ends == "raises":
            raise KeyboardInterrupt
        return 3

    gc.unfreeze()
    try:
        with pytest.raises(SystemExit if ends == "returns" else KeyboardInterrupt) as e:
            run_and_exit(main)
        assert ends == "raises" or e.value.code == 3
        assert gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()
