"""The outbox tries again only what a retry can fix: a server that is away, slow or says "later" (no status, 408,
429, 5xx). A write the store refuses for good (400: a param logged again with another value; 403: a user who may
only read) is reported once, set aside with the server's reason, and holds up none of the run's later writes,
against a real `mlflow server` behind its basic-auth app."""

import pytest
import requests
from mlflow.exceptions import MlflowException, RestException
from mlflow.protos.databricks_pb2 import UNAUTHENTICATED
from mlflow.tracking import MlflowClient

from tests.servers import MlflowServer, as_user
from trainables.tracking import retry
from trainables.tracking.outbox import Outbox, pending, refusals, send_pending


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("refusals"), auth="NO_PERMISSIONS").start()
    yield server
    server.stop()


def warnings(caplog, run_id: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if f"refused a write of run {run_id}" in r.getMessage()]


def http_error(status: int) -> requests.HTTPError:
    """What an artifact upload raises (mlflow.utils.request_utils.augmented_raise_for_status)."""
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"{status} Error", response=response)


@pytest.mark.unit
def test_only_what_a_retry_can_fix_is_retried():
    later = [
        MlflowException("API request to http://127.0.0.1:9/api failed with exception ConnectionError"),  # no server
        RestException({"error_code": "RESOURCE_EXHAUSTED", "message": "slow down"}),  # 429
        RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "restarting"}),  # 503
        http_error(429),
        http_error(408),
        http_error(502),
        requests.ConnectionError("connection refused"),
        TimeoutError("timed out"),
    ]
    for_good = [
        RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "Changing param values is not allowed"}),
        RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no run"}),  # 404
        MlflowException("Response body: 'You are not authenticated'", error_code=UNAUTHENTICATED),  # 401
        http_error(403),
        http_error(413),
    ]
    assert [(retry.retryable(e), retry.refused(e)) for e in later] == [(True, False)] * len(later)
    assert [(retry.retryable(e), retry.refused(e)) for e in for_good] == [(False, True)] * len(for_good)
    assert [retry.http_status(e) for e in for_good] == [400, 404, 401, 403, 413]
    assert not retry.retryable(TypeError("wrong call")) and not retry.refused(TypeError("wrong call"))


@pytest.mark.integration
@pytest.mark.fault
def test_a_param_the_server_refuses_is_set_aside_and_the_later_epochs_still_arrive(server, tmp_path, caplog):
    password = server.add_user("trainer")
    spool = tmp_path / "spool"
    with as_user("trainer", password):
        client = MlflowClient(server.uri)
        run_id = client.create_run(client.create_experiment("refused-param")).info.run_id
        box = Outbox(server.uri, run_id, spool, "recorder")
        assert box.params({"lr": 0.1}) and box.metrics({"val_macro_f1": 0.1}, 1)
        assert box.params({"lr": 0.2}) and not box.items  # refused at once: set aside, nothing waits
        assert box.metrics({"val_macro_f1": 0.2}, 2) and box.next_try == 0  # no retry was scheduled
        server.stop()
        try:  # a refused write among writes kept through an outage: sent in order, it blocks none behind it
            assert not box.metrics({"val_macro_f1": 0.3}, 3)
            box.params({"lr": 0.3})
            box.metrics({"val_macro_f1": 0.4}, 4)
            box.terminate("FINISHED")
            assert [i["kind"] for i in box.items] == ["metrics", "params", "metrics", "terminate"]
        finally:
            server.start()
        assert send_pending(server.uri, spool, timeout_s=60) == [] and pending(spool) == []
        history = client.get_metric_history(run_id, "val_macro_f1")
        run = client.get_run(run_id)
    assert [(m.step, m.value) for m in history] == [(s, pytest.approx(s / 10)) for s in (1, 2, 3, 4)]
    assert run.data.params == {"lr": "0.1"} and run.info.status == "FINISHED"
    aside = list(refusals(spool))
    assert [(r, a["write"], a["status"]) for r, a in aside] == [(run_id, "params lr", 400)] * 2
    assert all(a["reason"].startswith("INVALID_PARAMETER_VALUE: Changing param values") for _, a in aside)
    lines = warnings(caplog, run_id)  # each refused write reported once (the live box's, then send_pending's)
    assert len(lines) == 2 and all("params lr" in s and "INVALID_PARAMETER_VALUE" in s for s in lines), lines


@pytest.mark.integration
def test_a_write_the_user_may_not_make_is_set_aside_not_retried(server, tmp_path, caplog):
    owner = server.add_user("owner")
    with as_user("owner", owner):
        client = MlflowClient(server.uri)
        experiment = client.create_experiment("read-only")
        run_id = client.create_run(experiment).info.run_id
    reader = server.add_user("reader", {experiment: "READ"})
    spool = tmp_path / "spool"
    with as_user("reader", reader):
        box = Outbox(server.uri, run_id, spool, "recorder")
        for epoch in (1, 2, 3):
            assert box.metrics({"val_macro_f1": epoch / 10}, epoch)
        box.tags({"best_epoch": 3})
        box.terminate("FINISHED")
        assert box.drain(0) and not box.items and pending(spool) == []
        assert box.next_try == 0 and box.down_since is None  # no retry was ever scheduled
    aside = [a for _, a in refusals(spool)]
    assert [(a["write"], a["status"]) for a in aside] == [
        ("metrics val_macro_f1", 403),
        ("metrics val_macro_f1", 403),
        ("metrics val_macro_f1", 403),
        ("tags best_epoch", 403),
        ("end of the run (FINISHED)", 403),
    ]
    assert len(warnings(caplog, run_id)) == 1  # one line for the run's 403s; the rest are listed in the file
    with as_user("owner", owner):
        run = client.get_run(run_id)
    assert run.data.metrics == {} and run.info.status == "RUNNING"  # refused for real
