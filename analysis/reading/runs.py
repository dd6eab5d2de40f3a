"""A study's trials as rows, read from MLflow: what the leaderboard, the plots and the evaluation rank.

Used by every analysis command (study_parser, open_study) and by the study's closing steps and summary.
One paged search_runs ranks a study (1,000 trials on an `mlflow server`: benchmarks/leaderboard.py); the
per-epoch histories only the plots draw are fetched on demand (with_histories).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from trainables.metrics import BEST_KEY, OBJECTIVE, OBJECTIVE_KEY
from trainables.objectives import FEASIBLE_TAG, PARETO_TAG
from trainables.tracking.mlflow_runs import PHASE_TAG, SUPERSEDED_TAG, check_reachable, latest_study
from trainables.trial.rerun import SOURCE_TAG

PAGE = 10_000  # runs per search_runs request (an `mlflow server` answers at most 50,000)
FETCH_THREADS = 8  # concurrent get_metric_history requests of with_histories


@dataclass
class TrialRow:
    run_id: str
    name: str
    status: str
    family: str
    arch: str
    params: dict  # the searched values under their study names (MLflow params)
    best: float  # best val_macro_f1 over the trial's epochs (nan if none)
    best_epoch: int  # the first epoch that reached `best` (0 if none)
    epochs: int  # epochs with a reported val_macro_f1
    stopped_early: bool
    wall_s: float  # from the child run's creation (trial start) to its end; nan while running
    history: list | None = dataclasses.field(repr=False, default=None)  # val_macro_f1 per epoch; None until
    # with_histories fetched it
    phase: str = "search"  # the run's `phase` tag: recipe (a published recipe, tried first), search,
    # confirm or final (trainables.trial.rerun: re-runs of a search trial's configuration)
    source: str = ""  # a re-run's source trial run id
    latency_ms: float = math.nan  # batch-1 latency of its network (sweep.costs; nan: not measured)
    throughput_img_s: float = math.nan  # images/s at the serving batch
    feasible: bool = True  # within the study's latency budget (tag `feasible`; no budget: True)
    pareto: bool = False  # on the Pareto front of a Pareto search (tag `pareto`, set when the study closes)

    def param(self, name: str, default=""):
        """A param by its plain name, also in an `all` study, where it is qualified (`cnn.lr`)."""
        return self.params.get(name, self.params.get(f"{self.family}.{name}", default))


def child_runs(client: MlflowClient, experiment_id: str, parent_run_id: str) -> list:
    """The study's child runs, superseded ones left out, in search_runs' order, page after page."""
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'",
            max_results=PAGE,
            page_token=token,
        )
        runs += [r for r in page if r.data.tags.get(SUPERSEDED_TAG) != "true"]  # replaced by a newer run
        token = page.token
        if not token:
            return runs


def metric_histories(client: MlflowClient, run_ids: list[str], key: str) -> dict[str, list[tuple[int, float]]]:
    """{run_id: [(step, value), ...] sorted by step} of `key` for each run (empty when it logged none)."""

    def one(run_id):
        return sorted(((m.step, m.value) for m in client.get_metric_history(run_id, key)), key=lambda sv: sv[0])

    with ThreadPoolExecutor(FETCH_THREADS) as pool:
        return dict(zip(run_ids, pool.map(one, run_ids)))


def _from_history(hist: list[tuple[int, float]]) -> tuple[float, int, int]:
    """(best, best epoch, epochs) of a val_macro_f1 history, [(step, value)] in step order: the definition."""
    if not hist:
        return float("nan"), 0, 0
    values = [v for _, v in hist]
    best_i = values.index(OBJECTIVE.best(values))
    return values[best_i], hist[best_i][0], len(values)


def _from_latest(run) -> tuple[float, int, int] | None:
    """(best, best epoch, epochs) from what search_runs returns: the running best (BEST_KEY), the step of
    the latest val_macro_f1 (epochs are steps 1..n) and the recorder's best_epoch tag. None when these do
    not settle it: a run logged before BEST_KEY existed, or whose last epoch reaches the best while its tag
    says otherwise (a tie, or a tag not yet written behind the checkpoint upload)."""
    latest = {m.key: m for m in run.data.to_proto().metrics}  # the public RunData keeps only values, no steps
    val, best = latest.get(OBJECTIVE_KEY), latest.get(BEST_KEY)
    if val is None:
        return float("nan"), 0, 0
    try:
        best_epoch = int(run.data.tags["best_epoch"])
    except (KeyError, ValueError):
        return None
    if (
        best is None
        or best.step != val.step
        or not 1 <= best_epoch <= val.step
        or (val.value == best.value and best_epoch != val.step)
    ):
        return None
    return best.value, best_epoch, val.step


def trial_rows(client: MlflowClient, experiment_id: str, parent_run_id: str) -> list[TrialRow]:
    """Every child run of the study (ASHA-stopped ones included), best objective first (OBJECTIVE.mode).
    `history` is None: with_histories fetches it for the rows that need it."""
    runs = child_runs(client, experiment_id, parent_run_id)
    summary = {r.info.run_id: _from_latest(r) for r in runs}
    unsettled = [k for k, v in summary.items() if v is None]
    for run_id, hist in metric_histories(client, unsettled, OBJECTIVE_KEY).items():
        summary[run_id] = _from_history(hist)
    rows = []
    for r in runs:
        best, best_epoch, epochs = summary[r.info.run_id]
        rows.append(
            TrialRow(
                run_id=r.info.run_id,
                name=r.data.tags.get(MLFLOW_RUN_NAME, r.info.run_id),
                status=r.info.status,
                family=_what(r, "family"),
                arch=_what(r, "arch"),
                params=dict(r.data.params),
                best=best,
                best_epoch=best_epoch,
                epochs=epochs,
                stopped_early=r.data.tags.get("stopped_early") == "true",
                wall_s=(r.info.end_time - r.info.start_time) / 1000 if r.info.end_time else float("nan"),
                phase=r.data.tags.get(PHASE_TAG, "search"),
                source=r.data.tags.get(SOURCE_TAG, ""),
                latency_ms=r.data.metrics.get("latency_ms", math.nan),
                throughput_img_s=r.data.metrics.get("throughput_img_s", math.nan),
                feasible=r.data.tags.get(FEASIBLE_TAG) != "false",
                pareto=r.data.tags.get(PARETO_TAG) == "true",
            )
        )
    # a trial over the study's latency budget ranks after every one within it, whatever its score: never the winner
    return sorted(rows, key=lambda row: (not row.feasible, OBJECTIVE.sort_key(row.best)))


def _what(run, name: str) -> str:
    """The trial's family or arch: a param (`cnn.arch` in a --family all study); a tag in older studies' runs."""
    return next((v for k, v in run.data.params.items() if k.rsplit(".", 1)[-1] == name), run.data.tags.get(name, "?"))


def with_histories(client: MlflowClient, rows: list[TrialRow]) -> list[TrialRow]:
    """The rows, each with `history` (val_macro_f1 per epoch) fetched: one request per row, so pass only the
    rows that are drawn."""
    hists = metric_histories(client, [r.run_id for r in rows], OBJECTIVE_KEY)
    return [dataclasses.replace(r, history=[v for _, v in hists[r.run_id]]) for r in rows]


def best_per_family(rows: list[TrialRow]) -> dict[str, TrialRow]:
    """Each family's best trial that reported a result, families ranked by it (`rows` are best first)."""
    best: dict[str, TrialRow] = {}
    for r in rows:
        if r.epochs:
            best.setdefault(r.family, r)
    return best


def study_parser(doc: str, prog: str) -> argparse.ArgumentParser:
    """The arguments every analysis command shares: which study, in which tracking store."""
    p = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", required=True, help="MLflow experiment of the study (tune.py --experiment)")
    p.add_argument("--mlflow-uri", default="sqlite:///mlflow.db", help="tracking URI (default: %(default)s)")
    return p


def open_study(p: argparse.ArgumentParser, a: argparse.Namespace):
    """(client, experiment, parent run, trial rows) of the latest study; exit 2 with one line when the store
    cannot be reached or holds no study."""
    try:
        check_reachable(a.mlflow_uri, must_exist=True)  # before MlflowClient, which creates a missing SQLite file
        client = MlflowClient(a.mlflow_uri)
        exp, study = latest_study(client, a.experiment)
    except (ConnectionError, LookupError) as e:
        p.exit(2, f"{p.prog}: error: {e}\n")
    return client, exp, study, trial_rows(client, exp.experiment_id, study.info.run_id)
