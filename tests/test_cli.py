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


@pytest.mark.parametrize("argv,needle", [
    (["--data", "/no/such/folder"], "no such folder"),
    (["--family", "nope"], "unknown family 'nope'"),
    (["--num-samples", "0"], "--num-samples must be a positive integer"),
    (["--max-epochs", "-3"], "--max-epochs must be a positive integer"),
    (["--workers-per-trial", "0"], "--workers-per-trial must be a positive integer"),
    (["--arch", "resnet9000"], "is not in family 'scratch'"),
    (["--num-samples", "two"], "invalid int value"),
])
def test_bad_input_exits_2_with_one_line(capsys, argv, needle):
    code, err = run_main(capsys, *argv)
    assert code == 2
    assert needle in err and len(err.splitlines()) == 1, err


def test_folder_without_class_subfolders(capsys, tmp_path):
    (tmp_path / "loose.jpg").write_bytes(b"not really")
    code, err = run_main(capsys, "--data", str(tmp_path))
    assert code == 2 and "class sub-folder" in err and len(err.splitlines()) == 1


def test_unreachable_tracking_server(capsys, tiny_folder):
    code, err = run_main(capsys, "--data", str(tiny_folder), "--mlflow-uri", "http://127.0.0.1:9")
    assert code == 2 and "cannot reach MLflow tracking store" in err and "mlflow server" in err


def test_real_process_exit_code_and_help():
    bad = subprocess.run([sys.executable, "tune.py", "--data", "/no/such/folder"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "error:" in bad.stderr
    help_ = subprocess.run([sys.executable, "tune.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    for flag in ("--family", "--data", "--num-samples", "--max-epochs", "--workers-per-trial", "--image-size",
                 "--experiment", "--mlflow-uri", "--storage", "--seed", "--address", "--smoke"):
        assert flag in help_.stdout
