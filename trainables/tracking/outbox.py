"""MLflow writes of one run that survive the tracking server going away: tracking never kills training.

Every write (metrics of an epoch, tags, an artifact) goes into the run's outbox, which sends what it holds in
order. When the server does not answer (down, timeout, 5xx), the writes stay, in order, in a spool folder on
disk (a JSON-lines journal, artifacts copied beside it) and are tried again on trainables.tracking.retry's
schedule (2 s doubling to 60 s; an error that says the call itself is wrong is raised at once); one WARNING per
outage, one line when the server answers again. Whatever is still pending when a trial ends stays in the spool,
which the study sends at its end (bounded wait) and `python -m analysis.sync --experiment NAME` sends later.

A write the store refuses for good (retry.refused: a 4xx other than 408/429, e.g. a param logged again with
another value, or 401/403) is not tried again and holds nothing up: it is set aside with the server's reason in
`<writer>.refused` beside the journal (refusals() lists them; analysis.sync shows them), one WARNING per run
and status, and the writes behind it go on.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Mapping

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from trainables.tracking import retry

# MLflow's own HTTP retries (7, backoff to minutes) would hold every write of a run for ~4 minutes while the
# server is down; here one quick retry, then trainables.tracking.retry's schedule takes over.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per download floods logs
log = logging.getLogger("artsweep")


class Outbox:
    def __init__(self, uri: str, run_id: str, spool: Path, writer: str = "study"):
        """writer: whose journal this is (each process writing a run keeps its own: no two write one file)."""
        self.uri, self.run_id, self.folder = uri, run_id, Path(spool) / run_id
        self.journal, self.refused_file = self.folder / f"{writer}.jsonl", self.folder / f"{writer}.refused"
        self.items = self._read()
        self._reported: set[int | None] = set()  # the statuses of refusals already reported (one line each)
        self.down_since: float | None = None
        self.next_try, self.wait = 0.0, retry.FIRST_WAIT_S
        self._client = None

    # ------------------------------------------------------------ what callers write
    def metrics(self, values: Mapping[str, float], step: int) -> bool:
        now = int(time.time() * 1000)
        return self._put(
            {
                "kind": "metrics",
                "step": step,
                "time": now,
                "values": {k: float(v) for k, v in values.items() if isinstance(v, (int, float))},
            }
        )

    def tags(self, tags: Mapping[str, str]) -> bool:
        return self._put({"kind": "tags", "tags": {k: str(v) for k, v in tags.items()}})

    def params(self, params: Mapping[str, str]) -> bool:
        """Params known only once the run trains (MLflow refuses one logged again with another value)."""
        return self._put({"kind": "params", "params": {k: str(v) for k, v in params.items()}})

    def terminate(self, status: str) -> bool:
        """End the run (FINISHED / FAILED / KILLED) once everything before it was sent."""
        return self._put({"kind": "terminate", "status": status, "time": int(time.time() * 1000)})

    def artifact(self, path: Path, artifact_path: str) -> bool:
        """Sent from `path` when the server answers; copied into the spool only when it must wait (the caller's
        folder, a checkpoint Ray rotates, may be gone by the time it is sent)."""
        return self._put({"kind": "artifact", "path": str(path), "artifact_path": artifact_path})

    # ------------------------------------------------------------ sending
    def flush(self, force: bool = False) -> bool:
        """Send what is pending, in order; False while something could not be sent (kept on disk)."""
        if not self.items:
            return True
        if not force and time.monotonic() < self.next_try:
            return False
        while self.items:
            if not self._deliver(self.items[0]):
                return False
            self.items.pop(0)
            self._save()
        if self.down_since is not None:
            log.warning(
                "artsweep: MLflow answers again; run %s caught up after %.0f s",
                self.run_id,
                time.monotonic() - self.down_since,
            )
        self.down_since, self.wait = None, retry.FIRST_WAIT_S
        return True

    def drain(self, timeout_s: float) -> bool:
        """Keep trying for up to timeout_s; True when everything was sent."""
        deadline = time.monotonic() + timeout_s
        while not self.flush(force=True) and time.monotonic() < deadline:
            time.sleep(min(self.wait, max(0.0, deadline - time.monotonic())))
        return not self.items

    def _put(self, item: dict) -> bool:
        """Send at once when nothing waits (no disk work on the healthy path); else keep it, in order, on disk.
        False while the write waits (a refused one does not: it is set aside)."""
        if not self.items and time.monotonic() >= self.next_try and self._deliver(item):
            return True
        self.items.append(self._keep(item))
        self._save()
        return False

    def _deliver(self, item: dict) -> bool:
        """Send `item`: True when done with it (sent, or refused for good and set aside), False when the server
        failed (the next try is scheduled); a wrong call raises."""
        try:
            self._send(item)
        except Exception as e:  # which failures a retry can fix: retry.refused / retry.retryable
            if not retry.refused(e):
                self._failed(e)
                return False
            self._set_aside(item, e)
        return True

    def _keep(self, item: dict) -> dict:
        """A waiting artifact gets its own copy in the spool."""
        if item["kind"] != "artifact" or "file" in item:
            return item
        keep = self.folder / uuid.uuid4().hex[:12] / Path(item["path"]).name  # the upload keeps the file's name
        keep.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(item["path"], keep)
        return {"kind": "artifact", "file": str(keep.relative_to(self.folder)), "artifact_path": item["artifact_path"]}

    def _send(self, item: dict) -> None:
        client = self._client = self._client or MlflowClient(self.uri)
        if item["kind"] == "metrics":
            client.log_batch(
                self.run_id, metrics=[Metric(k, v, item["time"], item["step"]) for k, v in item["values"].items()]
            )
        elif item["kind"] == "tags":
            client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in item["tags"].items()])
        elif item["kind"] == "params":
            client.log_batch(self.run_id, params=[Param(k, v) for k, v in item["params"].items()])
        elif item["kind"] == "terminate":
            client.set_terminated(self.run_id, status=item["status"], end_time=item["time"])
        elif "path" in item:
            client.log_artifact(self.run_id, item["path"], artifact_path=item["artifact_path"])
        else:
            client.log_artifact(self.run_id, str(self.folder / item["file"]), artifact_path=item["artifact_path"])
            shutil.rmtree((self.folder / item["file"]).parent, ignore_errors=True)

    def _failed(self, e: Exception) -> None:
        """Raises `e` when no retry can help (retry.retryable), else schedules the next try."""
        if not retry.retryable(e):
            raise e
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
            log.warning(
                "artsweep: MLflow did not take a write of run %s (%s: %s); keeping %d write(s) in %s and retrying",
                self.run_id,
                type(e).__name__,
                str(e).splitlines()[0][:160] if str(e) else "",
                len(self.items),
                self.folder,
            )
        self.next_try, self.wait = now + self.wait, retry.next_wait(self.wait)

    def _set_aside(self, item: dict, e: Exception) -> None:
        """Record a refused write with the server's reason in self.refused_file (a spooled artifact's copy goes);
        the first refusal of each status is reported."""
        status, reason = retry.http_status(e), (str(e).splitlines() or [type(e).__name__])[0][:300]
        what = _describe(item)
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.refused_file.open("a") as f:
            f.write(json.dumps({"write": what, "status": status, "reason": reason, "time": time.time()}) + "\n")
        if "file" in item:
            shutil.rmtree((self.folder / item["file"]).parent, ignore_errors=True)
        if status not in self._reported:
            self._reported.add(status)
            log.warning(
                "artsweep: MLflow refused a write of run %s for good (%s): %s; set aside in %s (not retried; "
                "the run's later writes go on; further %s refusals of this run are only listed there)",
                self.run_id,
                what,
                reason,
                self.refused_file,
                status,
            )

    # ------------------------------------------------------------ the journal on disk
    def _read(self) -> list[dict]:
        if not self.journal.is_file():
            return []
        return [json.loads(line) for line in self.journal.read_text().splitlines() if line]

    def _save(self) -> None:
        if not self.items:
            self.journal.unlink(missing_ok=True)
            if self.folder.is_dir() and not any(self.folder.iterdir()):
                self.folder.rmdir()
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.journal.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(i) + "\n" for i in self.items))
        tmp.replace(self.journal)


def _describe(item: dict) -> str:
    """A write in a few words: its kind and keys (values stay in the record only where MLflow's reason has them)."""
    kind = item["kind"]
    if kind == "artifact":
        return f"artifact {item['artifact_path']}/{Path(item.get('path') or item['file']).name}"
    if kind == "terminate":
        return f"end of the run ({item['status']})"
    return f"{kind} {', '.join(sorted(item['values'] if kind == 'metrics' else item[kind]))}"


def refusals(spool: Path) -> Iterator[tuple[str, dict]]:
    """(run id, record) of every write set aside in `spool` because the store refused it for good."""
    for path in sorted(Path(spool).glob("*/*.refused")):
        for line in path.read_text().splitlines():
            if line:
                yield path.parent.name, json.loads(line)


def pending(spool: Path) -> list[tuple[str, str]]:
    """(run id, writer) of every journal with writes still waiting in `spool`."""
    return sorted((p.parent.name, p.stem) for p in Path(spool).glob("*/*.jsonl"))


def send_pending(uri: str, spool: Path, timeout_s: float) -> list[str]:
    """Send every pending write in `spool` (bounded wait; timeout 0: one try, stopping at the first run the
    server does not take); returns the run ids still pending."""
    deadline = time.monotonic() + timeout_s
    left = []
    for run_id, writer in pending(spool):
        if left and timeout_s <= 0:
            left.append(run_id)
        elif not Outbox(uri, run_id, spool, writer).drain(max(0.0, deadline - time.monotonic())):
            left.append(run_id)
    return sorted(set(left))
