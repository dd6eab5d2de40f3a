"""The trial's MLflow child run, written as each report is taken: by Ray Train's controller for a distributed
trial, in the trial's Tune actor for one in process (trainables.trial.driver.InProcessReports).

Train's controller registers a report's resume checkpoint and then calls its callbacks, so "logged" and
"checkpointed" are the same event and a worker group restarted from its latest checkpoint never logs an epoch
twice (nor skips one). In process the recorder logs just before Tune stores the checkpoint (ray.tune.report):
a process lost between the two logs that epoch again after its restart. All writes go through an Outbox: a tracking server
that is down delays the record and never fails the trial.

Rank 0's report carries, besides its metrics: TAGS_KEY (tags to set, on the first report of a worker group) and
IMPROVED_KEY (this epoch is the best so far: the checkpoint folder also holds model.pt, the best checkpoint).
Both are taken out before Tune sees the report.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ray.train.v2.api.callback import UserCallback

from trainables.metrics import IMPROVED_KEY, PG_KEY, RUN_ID_KEY, SYSTEM_KEY, TAGS_KEY
from trainables.tracking.artifacts import ARTIFACT, FILENAME
from trainables.tracking.outbox import Outbox

log = logging.getLogger("artsweep")
DRAIN_S = 10.0  # at a trial's last epoch, wait this long at most for writes held during an outage (the study
# sends what is left: sweep.callbacks.CloseTrialRuns while it runs, finish_record at its end)


class EpochRecorder(UserCallback):
    def __init__(self, uri: str, run_id: str, spool: str, max_epochs: int):
        self.uri, self.run_id, self.spool, self.max_epochs = uri, run_id, spool, max_epochs
        self._outbox = None

    def after_report(self, run_context, metrics, checkpoint=None, **_):
        """Train's controller: log the report (its checkpoint is registered) before Tune sees it (next callback)."""
        self.log(*self.take(metrics), checkpoint)

    @staticmethod
    def take(metrics: list) -> tuple:
        """Pop the recorder's keys from the ranks' reports (they never reach Tune): (rank 0's report, its tags,
        whether it is a new best, the system metrics of every node)."""
        report = metrics[0]
        tags, improved = report.pop(TAGS_KEY, None), report.pop(IMPROVED_KEY, False)
        system = {k: v for m in metrics for k, v in (m.pop(SYSTEM_KEY, None) or {}).items()}  # one per node
        return report, tags, improved, system

    def log(self, report: dict, tags, improved: bool, system: dict, checkpoint=None) -> None:
        try:
            out = self._outbox = self._outbox or Outbox(self.uri, self.run_id, Path(self.spool), "recorder")
            if tags:
                out.tags(tags)
            epoch = int(report["epoch"])
            out.metrics(
                {**{k: v for k, v in report.items() if k not in (PG_KEY, RUN_ID_KEY, "epoch")}, **system}, epoch
            )
            if improved and checkpoint is not None:
                with checkpoint.as_directory() as folder:
                    out.artifact(Path(folder) / FILENAME, str(Path(ARTIFACT).parent))
                out.tags({"best_epoch": epoch})
            if epoch >= self.max_epochs:
                out.drain(DRAIN_S)
        except Exception as e:  # noqa: BLE001 - the record must never fail the training it records
            log.warning("artsweep: could not record epoch of run %s: %s: %s", self.run_id, type(e).__name__, e)
