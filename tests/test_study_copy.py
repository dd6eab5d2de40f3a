"""The shared study's guard (tests/servers.py, tests/conftest.py): MlflowServer.record() sees every kind of write
a test could make to a store, so the session's read-only check on the shared study can fail; a copy of a live
server serves the same record and takes writes without passing them to the original."""

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.servers import MlflowServer, forget_artifact_locations

WRITES = {  # what the study's writers do: crown (tags, test metrics), register, log artifacts
    "tag": lambda client, run, folder: client.set_tag(run, "winner", "true"),
    "metric": lambda client, run, folder: client.log_metric(run, "test_accuracy", 0.9),
    "metric step": lambda client, run, folder: client.log_metric(run, "val_macro_f1", 0.5, step=2),  # same value
    "artifact": lambda client, run, folder: client.log_artifact(run, str(folder / "model.pt"), "leaderboard"),
    "artifact replaced": lambda client, run, folder: client.log_artifact(run, str(folder / "new" / "model.pt"), "x"),
    "model version": lambda client, run, folder: client.create_model_version("m", f"runs:/{run}/x", run),
    "alias": lambda client, run, folder: client.set_registered_model_alias("m", "champion", "1"),
}


def _study_like(client: MlflowClient, folder: Path, artifact_location: str | None = None) -> str:
    """A run with a metric and an artifact (x/model.pt), registered as version 1 of model "m"; its id. Beside
    folder/model.pt, folder/new/model.pt: the same name and size, other bytes."""
    run = client.create_run(client.create_experiment("e", artifact_location=artifact_location)).info.run_id
    client.log_metric(run, "val_macro_f1", 0.5, step=1)
    (folder / "new").mkdir()
    (folder / "new" / "model.pt").write_bytes(b"WEIGHTS")
    (folder / "model.pt").write_bytes(b"weights")
    client.log_artifact(run, str(folder / "model.pt"), "x")
    client.create_registered_model("m")
    client.create_model_version("m", f"runs:/{run}/x", run)
    return run


@pytest.mark.unit
def test_the_record_sees_every_kind_of_write_and_no_read(tmp_path):
    server = MlflowServer(tmp_path)  # never started: its store and artifact folder, written through SQLite
    client = MlflowClient(f"sqlite:///{server.db}")
    run = _study_like(client, tmp_path, (server.artifacts / "1").as_uri())
    before = server.record()
    client.search_runs([client.get_run(run).info.experiment_id])
    client.get_metric_history(run, "val_macro_f1")
    client.get_model_version("m", "1")
    client.download_artifacts(run, "x/model.pt", str(tmp_path))
    assert server.changes_since(before) == {}  # reading changes nothing
    for name, write in WRITES.items():
        write(client, run, tmp_path)
        assert server.changes_since(before), f"{name} went unseen"
        before = server.record()


@pytest.mark.integration
def test_a_copy_serves_the_same_record_and_keeps_its_writes(tmp_path):
    (tmp_path / "original").mkdir()
    original = MlflowServer(tmp_path / "original").start()
    try:
        run = _study_like(MlflowClient(original.uri), tmp_path)
        before = original.record()
        copy = original.copy(tmp_path / "copy").start()
        forget_artifact_locations()  # else this process's artifact calls for `run` still go to the original
        try:
            assert copy.changes_since(before) == {}  # the same rows and files
            theirs = MlflowClient(copy.uri)
            fetched = theirs.download_artifacts(run, "x/model.pt", str(tmp_path / "fetched"))
            assert Path(fetched).read_bytes() == b"weights" and theirs.get_model_version("m", "1").run_id == run
            for write in WRITES.values():
                write(theirs, run, tmp_path)
            assert copy.changes_since(before)
        finally:
            copy.stop()
        assert original.changes_since(before) == {}
        assert "winner" not in MlflowClient(original.uri).get_run(run).data.tags
    finally:
        original.stop()
