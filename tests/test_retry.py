"""One retry policy for every MLflow call that waits out a server (trainables.tracking.retry): waits of 2 s
doubling to 60 s, a blocking call gives up at its deadline with the last error, and an error no wait can fix is
raised at once, by the blocking call and by the outbox alike."""

import itertools
import time

import pytest

from trainables.tracking import retry
from trainables.tracking.outbox import Outbox

pytestmark = pytest.mark.unit


class Clock:
    """Stands in for the time module inside retry: sleeping moves the clock, nothing waits."""

    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(retry, "time", fake)
    return fake


def failing(times: int, error: Exception):
    """A call that raises `error` its first `times` calls, then returns how many calls it took."""
    calls = itertools.count(1)

    def call():
        n = next(calls)
        if n <= times:
            raise error
        return n

    return call


def test_the_schedule_doubles_from_2_s_to_at_most_60_s():
    assert list(itertools.islice(retry.schedule(), 8)) == [2, 4, 8, 16, 32, 60, 60, 60]
    assert retry.DEADLINE_S == 600


def test_a_call_that_fails_a_few_times_succeeds_after_the_scheduled_waits(clock, caplog):
    assert retry.retrying(failing(3, ConnectionError("refused")), "reading the trials") == 4
    assert clock.sleeps == [2, 4, 8]
    assert caplog.text.count("reading the trials failed (ConnectionError); retrying") == 3


def test_a_call_that_keeps_failing_gives_up_at_its_deadline_with_the_last_error(clock):
    call = failing(10**6, ConnectionError("refused"))
    with pytest.raises(ConnectionError):
        retry.retrying(call, "x", timeout_s=100)
    assert clock.sleeps == [2, 4, 8, 16, 32]  # the next try, at 62 + 60 s, would start after 100 s
    clock.now, clock.sleeps = 0.0, []
    with pytest.raises(ConnectionError):
        retry.retrying(call, "x")  # the default deadline: 600 s
    assert clock.sleeps == [2, 4, 8, 16, 32] + [60] * 8 and clock.now == 542  # 542 + 60 > 600


def test_an_error_no_wait_can_fix_is_raised_at_once(clock):
    for error in (TypeError("wrong call"), AttributeError("no such thing"), ImportError("no boto3")):
        call = failing(1, error)
        with pytest.raises(type(error)):
            retry.retrying(call, "x")
        assert clock.sleeps == [] and call() == 2  # tried exactly once


class FlakyOutbox(Outbox):
    """An outbox whose server fails its first `times` sends with `error` (no server: nothing is sent)."""

    def __init__(self, spool, times: int, error: Exception):
        super().__init__("http://127.0.0.1:9", "run1", spool)
        self.call, self.sent = failing(times, error), []

    def _send(self, item: dict) -> None:
        self.call()
        self.sent.append(item)


def test_the_outbox_keeps_a_write_the_server_refused_and_tries_again_on_the_schedule(tmp_path):
    box = FlakyOutbox(tmp_path, 2, ConnectionError("refused"))
    assert not box.tags({"a": "1"}) and box.journal.is_file()  # kept on disk
    assert box.next_try - time.monotonic() == pytest.approx(2, abs=0.5) and box.wait == 4
    assert not box.flush(force=True) and box.wait == 8  # failed again: the next wait doubles
    assert box.flush(force=True) and box.sent == [{"kind": "tags", "tags": {"a": "1"}}] and box.wait == 2
    assert not box.journal.exists()


def test_the_outbox_raises_an_error_no_wait_can_fix(tmp_path):
    box = FlakyOutbox(tmp_path, 1, TypeError("wrong call"))
    with pytest.raises(TypeError):
        box.tags({"a": "1"})
    assert not box.journal.exists()


def test_a_full_connection_pool_is_a_busy_server_not_a_refusal():
    """MLflow's server answers 400 INVALID_PARAMETER_VALUE when SQLAlchemy's pool is full (benchmarks/scale.py
    met it at 64 trials on the default pool): a write retried later goes through; a real 400 stays refused."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    busy = MlflowException(
        "QueuePool limit of size 5 overflow 10 reached, connection timed out, timeout 30.00",
        error_code=INVALID_PARAMETER_VALUE,
    )
    wrong = MlflowException("Changing param values is not allowed", error_code=INVALID_PARAMETER_VALUE)
    assert retry.http_status(busy) == retry.http_status(wrong) == 400
    assert retry.retryable(busy) and not retry.refused(busy)
    assert retry.refused(wrong) and not retry.retryable(wrong)
