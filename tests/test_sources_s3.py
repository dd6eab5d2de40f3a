"""--data in a bucket: an S3 API on loopback (moto's server mode, a stand-in for Amazon S3: tests/tracking_stack.py).
Class folders and Parquet shards are listed there, read by the decode cache without a local copy, and give the
pixels the same files give on disk. Then IAM checks go on (the last test), so a denied read is a real 403: a missing
bucket, a denied read or a wrong secret stop tune.py with exit 2 and one line, before Ray starts. The same data
read by a study on two nodes: tests/test_multinode_e2e.py."""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.parquet_set import write_shards
from tests.tracking_stack import S3
from trainables.data import cache, dataset
from trainables.data.scan import scan

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
SIZE = 24


@pytest.fixture(scope="module")
def bucket(tiny_folder, tmp_path_factory):
    """(the S3 stand-in, a reader's environment, a lister's environment): tiny_folder under tiny/, as Parquet
    shards under shards/; IAM off until the last test."""
    work = tmp_path_factory.mktemp("s3data")
    s3 = S3(work).start()
    try:
        shards = write_shards(tiny_folder, work / "shards", shards=3, row_group=10)[0].parent
        s3.upload(tiny_folder, "tiny")
        s3.upload(shards, "shards")
        # moto checks a HEAD of a bucket against "s3:HeadBucket" (Amazon S3: against s3:ListBucket)
        reader = s3.user("reader", ["s3:GetObject", "s3:ListBucket", "s3:HeadBucket"])
        lister = s3.user("lister", ["s3:ListBucket", "s3:HeadBucket"])  # may list the bucket, not read what is in it
        yield s3, reader, lister
    finally:
        s3.stop()


@pytest.fixture
def as_(monkeypatch):
    def use(env: dict) -> None:
        for k, v in env.items():
            monkeypatch.setenv(k, v)

    return use


def test_class_folders_in_a_bucket_decode_to_the_files_pixels(bucket, as_, tiny_folder, tmp_path):
    s3, reader, _ = bucket
    as_(reader)
    remote, local = scan(f"s3://{s3.bucket}/tiny"), scan(tiny_folder)
    assert remote.classes == local.classes and np.array_equal(remote.labels, local.labels)
    assert [p.rsplit("/", 2)[-2:] for p in remote.paths] == [p.rsplit("/", 2)[-2:] for p in local.paths]
    assert remote.origin["kind"] == "objects" and all(p.startswith(f"s3://{s3.bucket}/tiny/") for p in remote.paths)
    splits = dataset.make_splits(remote, 0.2, 0.2, seed=0)
    got, meta, built = cache.open_or_build(splits.paths, SIZE, root=tmp_path / "s3", versions=splits.versions)
    want, _, _ = cache.open_or_build(local.paths, SIZE, root=tmp_path / "files")
    assert built and meta["bad"] == [] and np.array_equal(got, want)


def test_parquet_shards_in_a_bucket(bucket, as_, tmp_path):
    s3, reader, _ = bucket
    as_(reader)
    source = scan(f"s3://{s3.bucket}/shards", label="period")
    assert source.origin["kind"] == "parquet" and len(source.paths) == 84
    assert all(p.startswith(f"s3://{s3.bucket}/shards/train-") and "#row=" in p for p in source.paths)
    images, meta, _ = cache.open_or_build(source.paths, SIZE, root=tmp_path, versions=source.versions, processes=2)
    assert meta["bad"] == [] and images.shape[0] == 84 and all(images[i].any() for i in range(84))


def tune(env: dict, *flags: str, cwd: Path) -> tuple[int, str, float]:
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, str(ROOT / "tune.py"), *flags],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return out.returncode, out.stdout + out.stderr, time.monotonic() - t0


def test_a_missing_bucket_a_denied_read_and_a_wrong_secret_stop_tune_before_ray(bucket, tmp_path):
    s3, reader, lister = bucket
    code, out, _ = tune(reader, "--data", f"s3://no-such-{s3.bucket}/tiny", "--smoke", cwd=tmp_path)
    assert code == 2 and out.strip() == (
        f"tune.py: error: --data s3://no-such-{s3.bucket}/tiny: the bucket 'no-such-{s3.bucket}' does not exist "
        "(or is not visible)"
    )
    s3.enforce_auth()  # the last test of the module: from here on, IAM decides
    cases = [
        (lister, f"s3://{s3.bucket}/tiny", "access denied"),
        (lister, f"s3://{s3.bucket}/shards", "access denied"),
        # a HEAD's 403 has no body to say why: a wrong secret reads as a denial, as it does on Amazon S3
        ({**reader, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}, f"s3://{s3.bucket}/tiny", "access denied"),
    ]
    for env, data, message in cases:
        code, out, _ = tune(env, "--data", data, "--smoke", cwd=tmp_path)
        lines = [line for line in out.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and message in lines[0], out[-2000:]
        assert lines[0].startswith(f"tune.py: error: --data {data}")
        assert env["AWS_SECRET_ACCESS_KEY"] not in out
    assert not (tmp_path / "ray_results").exists() and not list(tmp_path.glob("mlflow*"))  # nothing started
