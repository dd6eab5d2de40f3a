"""A new SQLite tracking store is a copy of the empty one MLflow built once: the same tables, schema revision and
rows as a store MLflow builds on a new file, its Default experiment made by MLflow with this store's artifact root;
an existing store is never touched, and anything else is left to MLflow."""

import sqlite3

import pytest
from mlflow.tracking import MlflowClient

from trainables.tracking import new_store

pytestmark = pytest.mark.unit


def tables(db) -> dict:
    """Each table's columns and constraints (their order aside: MLflow's own builds differ in it) and its rows,
    the creation times of the Default experiment aside."""
    with sqlite3.connect(db) as c:
        out = {}
        for name, sql in c.execute("select name, sql from sqlite_master where type = 'table'"):
            rows = c.execute(f'select * from "{name}"').fetchall()
            if name == "experiments":
                rows = [r[:4] for r in rows]
            out[name] = (sorted(line.strip().rstrip(",") for line in sql.splitlines()), rows)
        return out


def test_a_new_store_is_the_store_mlflow_builds(tmp_path, monkeypatch):
    monkeypatch.setenv("ARTSWEEP_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # both stores' Default experiment: ./mlruns, here
    MlflowClient(f"sqlite:///{tmp_path / 'built.db'}").search_experiments()  # MLflow's own build
    assert new_store.seed(f"sqlite:///{tmp_path / 'seeded.db'}")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [new_store.template().name]  # built once, no leftovers
    client = MlflowClient(f"sqlite:///{tmp_path / 'seeded.db'}")
    (default,) = client.search_experiments()
    assert (default.name, default.artifact_location) == ("Default", str(tmp_path / "mlruns" / "0"))
    assert tables(tmp_path / "seeded.db") == tables(tmp_path / "built.db")
    run = client.create_run(client.create_experiment("e"))  # and it takes a study's writes
    client.log_metric(run.info.run_id, "val_macro_f1", 0.5, step=1)
    assert client.get_run(run.info.run_id).data.metrics == {"val_macro_f1": 0.5}


def test_an_existing_store_or_a_server_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("ARTSWEEP_CACHE", str(tmp_path / "cache"))
    store = tmp_path / "mlflow.db"
    store.write_bytes(b"not a template")
    assert not new_store.seed(f"sqlite:///{store}") and store.read_bytes() == b"not a template"
    assert not new_store.seed("http://127.0.0.1:5000") and not (tmp_path / "cache").exists()


def test_a_cache_it_cannot_write_leaves_the_store_to_mlflow(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("ARTSWEEP_CACHE", str(tmp_path / "file" / "cache"))  # under a file: no folder can be made
    assert not new_store.seed(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert not (tmp_path / "mlflow.db").exists()
    MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_experiments()  # MLflow builds it as before
