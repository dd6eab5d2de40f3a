"""How artsweep waits out a tracking server that is away (restarting, overloaded, unreachable): which errors are
tried again, how far apart, and for how long. Two users: retrying() below, a call that blocks until it succeeds
(a trial opening its run, the study reading its trials), and trainables.tracking.outbox, which keeps a run's
writes on disk and tries them again on the same schedule without holding up training.

Tried again: what a wait can fix, a server that did not answer (connection refused or reset, a timeout) or said
"later" (408, 429, 5xx). Not tried again: a refusal (any other 4xx: 401/403 credentials, 400 a value MLflow will
never take, 404 a run that is gone), which gets the same answer every time, and a wrong call (NOT_RETRIED)."""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterator, TypeVar

from mlflow.exceptions import MlflowException

log = logging.getLogger("artsweep")
T = TypeVar("T")

FIRST_WAIT_S = 2.0  # first retry 2 s after a failure, ...
MAX_WAIT_S = 60.0  # ... the wait doubling up to at most 60 s between tries
DEADLINE_S = 600.0  # a blocking call gives up after 10 min: a server restarting for a minute delays, never fails
# A wrong call, which no wait can fix: raised at once. An error with no HTTP status is tried again, because
# MLflow raises many types for a server that is away (MlflowException, requests' and botocore's errors, OSError).
NOT_RETRIED = (TypeError, AttributeError, NameError, ImportError)
LATER = (408, 429)  # the 4xx that mean "not now" (request timeout, too many requests); 5xx mean it too


def http_status(error: BaseException) -> int | None:
    """The HTTP status of a failed tracking call, where the error has one: an MlflowException maps its error_code
    to one (a server's answer, or the same rule checked by the client or a local store; a server that does not
    answer is INTERNAL_ERROR, 500); requests' HTTPError (an artifact upload) carries its response."""
    if isinstance(error, MlflowException):
        return error.get_http_status_code()
    return getattr(getattr(error, "response", None), "status_code", None)


# MLflow's server answers 400 when its database connection pool is full (SQLAlchemy's "QueuePool limit of size
# N overflow M reached"): a busy server, not a refusal (benchmarks/scale.py: 64 trials at once on a pool of 5)
BUSY = ("QueuePool limit",)


def refused(error: BaseException) -> bool:
    """The tracking store said no for good: a 4xx other than LATER (or a busy server's). The same call gets the
    same answer."""
    status = http_status(error)
    busy = any(b in str(error) for b in BUSY)
    return status is not None and 400 <= status < 500 and status not in LATER and not busy


def retryable(error: BaseException) -> bool:
    return isinstance(error, Exception) and not isinstance(error, NOT_RETRIED) and not refused(error)


def next_wait(wait_s: float) -> float:
    """The wait after one of `wait_s` failed too."""
    return min(wait_s * 2, MAX_WAIT_S)


def schedule(first_s: float = FIRST_WAIT_S) -> Iterator[float]:
    """The waits between tries, in seconds: 2, 4, 8, 16, 32, 60, 60, ..."""
    wait = first_s
    while True:
        yield wait
        wait = next_wait(wait)


def retrying(call: Callable[[], T], what: str, timeout_s: float = DEADLINE_S) -> T:
    """call() until it succeeds, waiting on schedule() between tries; a non-retryable error, or one whose next
    try would start after `timeout_s`, is raised."""
    deadline, waits = time.monotonic() + timeout_s, schedule()
    while True:
        try:
            return call()
        except Exception as e:
            wait = next(waits)
            if not retryable(e) or time.monotonic() + wait > deadline:
                raise
            log.warning("artsweep: %s failed (%s); retrying in %.0f s", what, type(e).__name__, wait)
            time.sleep(wait)
