"""Tracking never kills training: writes made while the MLflow server is down wait on disk, in order, and reach
the same run once the real server is back (stopped and started again on its port and store)."""

import pytest
from mlflow.tracking import MlflowClient

from tests.servers import MlflowServer
from trainables.tracking.outbox import Outbox, pending, send_pending

pytestmark = [pytest.mark.integration, pytest.mark.fault]


def test_writes_wait_on_disk_through_an_outage_and_arrive_once_in_order(tmp_path):
    server = MlflowServer(tmp_path).start()
    client = MlflowClient(server.uri)
    run_id = client.create_run(client.create_experiment("outbox")).info.run_id
    spool = tmp_path / "spool"
    (tmp_path / "model.pt").write_bytes(b"weights")
    server.stop()
    try:
        box = Outbox(server.uri, run_id, spool, "recorder")
        assert not box.metrics({"val_macro_f1": 0.1, "train_loss": 2.0}, 1)  # the server is down
        for step in (2, 3):
            box.metrics({"val_macro_f1": 0.1 * step}, step)
        box.artifact(tmp_path / "model.pt", "checkpoint")
        (tmp_path / "model.pt").unlink()  # the caller's copy may be gone (Ray rotated it)
        box.tags({"best_epoch": 3})
        box.terminate("FINISHED")
        assert pending(spool) == [(run_id, "recorder")] and len(box.items) == 6
        assert Outbox(server.uri, run_id, spool, "recorder").items == box.items  # another process sees them
    finally:
        server.start()
    assert send_pending(server.uri, spool, timeout_s=60) == [] and pending(spool) == []
    run = client.get_run(run_id)
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "val_macro_f1")] == [
        (1, 0.1),
        (2, pytest.approx(0.2)),
        (3, pytest.approx(0.3)),
    ]
    assert run.data.tags["best_epoch"] == "3" and run.info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(run_id, "checkpoint")] == ["checkpoint/model.pt"]
    assert not spool.exists() or not any(spool.iterdir())
    server.stop()


def test_sync_sends_what_a_study_left_on_disk_and_ends_its_runs(tmp_path, capsys):
    """A study that ended while the server was away: `python -m analysis.sync` sends its spool later."""
    from analysis import sync
    from trainables.config import RunSettings
    from trainables.tracking import mlflow_runs

    server = MlflowServer(tmp_path).start()
    client = MlflowClient(server.uri)
    exp_id, parent = mlflow_runs.setup_study(server.uri, "sync", {"family": "scratch"}, None)
    child = client.create_run(exp_id, tags={"mlflow.parentRunId": parent}).info.run_id
    s = RunSettings(
        family="scratch",
        data_dir="-",
        num_samples=1,
        max_epochs=1,
        workers_per_trial=1,
        experiment="sync",
        mlflow_uri=server.uri,
        storage=str(tmp_path / "ray"),
        run_name="sync-1",
        mlflow_experiment_id=exp_id,
        parent_run_id=parent,
    )
    mlflow_runs.log_study(server.uri, parent, s.to_dict(), {})
    server.stop()
    box = Outbox(server.uri, child, tmp_path / "ray" / "sync-1" / "pending", "recorder")
    box.metrics({"val_macro_f1": 0.5}, 1)
    box.terminate("FINISHED")
    server.start()
    assert sync.main(["--experiment", "sync", "--mlflow-uri", server.uri, "--end-study", "FINISHED"]) == 0
    assert "sent the pending writes of 1 run(s)" in capsys.readouterr().out
    assert [m.value for m in client.get_metric_history(child, "val_macro_f1")] == [0.5]
    assert client.get_run(child).info.status == "FINISHED" and client.get_run(parent).info.status == "FINISHED"
    server.stop()
