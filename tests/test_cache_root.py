"""One cache folder per machine: every part of artsweep that keeps files on this machine (decode caches, the
built-in data set, memory probes, MLflow writes waiting for the server, Ray's log of a study on remote storage)
puts them under ARTSWEEP_CACHE when it is set."""

from pathlib import Path

import numpy as np
import pytest
from torch import nn

from sweep.study import ray_log
from trainables import paths
from trainables.config import RunSettings
from trainables.data import builtin_dataset, cache
from trainables.trial import memory

pytestmark = pytest.mark.unit


def settings(storage: str) -> RunSettings:
    return RunSettings(
        family="scratch",
        data_dir="/data",
        num_samples=1,
        max_epochs=1,
        workers_per_trial=1,
        experiment="e",
        mlflow_uri="http://127.0.0.1:5000",
        storage=storage,
        run_name="e-20260101",
    )


def test_every_user_of_the_cache_resolves_under_ARTSWEEP_CACHE(tmp_path, monkeypatch):
    monkeypatch.setenv("ARTSWEEP_CACHE", str(tmp_path))
    remote = settings("s3://bucket/studies")  # nowhere on this machine: spool and log go to the cache
    users = {
        "decode caches": cache.decoded_root(),
        "built-in data set": builtin_dataset.default_dir(),
        "memory probes": memory.cache_file(),
        "pending MLflow writes": Path(remote.spool),
        "Ray's log": ray_log(remote),
    }
    assert paths.cache_root() == tmp_path
    assert {k: v for k, v in users.items() if tmp_path not in v.parents} == {}


def test_the_defaults_write_there(tmp_path, monkeypatch):
    """Not only the names: a decode cache and a memory probe made with their defaults land under it."""
    monkeypatch.setenv("ARTSWEEP_CACHE", str(tmp_path))
    image = builtin_dataset.render("cubism", np.random.default_rng(0))
    image.save(tmp_path / "a.png")
    _, meta, built = cache.open_or_build([str(tmp_path / "a.png")], 16, processes=1)
    assert built and (tmp_path / "decoded" / meta["key"] / "meta.json").is_file()
    memory.probe("test:conv", lambda: nn.Conv2d(3, 2, 3), 8)
    assert "test:conv@8" in (tmp_path / "memory.json").read_text()


def test_a_local_storage_keeps_spool_and_log_in_the_study_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("ARTSWEEP_CACHE", str(tmp_path / "cache"))
    for storage in (str(tmp_path / "studies"), f"file://{tmp_path}/studies"):
        s = settings(storage)
        assert Path(s.spool) == tmp_path / "studies" / s.run_name / "pending"
        assert ray_log(s) == tmp_path / "studies" / s.run_name / "ray.log"


@pytest.mark.parametrize(
    "storage, local",
    [("/srv/studies", "/srv/studies"), ("file:///srv/studies", "/srv/studies"), ("s3://b/x", None), ("gs://b", None)],
)
def test_storage_is_remote_only_when_a_uri_names_another_filesystem(storage, local):
    assert paths.remote(storage) is (local is None) and paths.local_path(storage) == local
