"""The study's phases after the search: confirmation over new seeds, then the final fit.

    phase    trials                                  epochs each                selects by
    search   --num-samples (recipes first), ASHA     <= --max-epochs            best val_macro_f1, one seed
    confirm  --confirm K configs x --confirm-seeds S  --max-epochs, all of them  mean val_macro_f1 over S seeds
    final    1 (--final-fit)                         the confirm runs' median   nothing: trains on train + val
                                                     peak epoch
Each later phase is its own Tune experiment in the study's run folder (<run>/confirm, <run>/final) of
trainables.trial.rerun trials, so Ctrl-C saves it and --resume continues it, as it does the search.
"""

from __future__ import annotations

import functools
import json
import signal
import statistics

from mlflow.tracking import MlflowClient
from ray import tune

from analysis.reading.confirm import confirmed, searched
from analysis.reading.runs import TrialRow, trial_rows
from sweep import budget
from sweep.callbacks import CloseTrialRuns, ReleaseTrainWorkers
from sweep.console import say
from sweep.events import TrialEvents
from sweep.scheduler import epochs_done
from trainables.config import RunSettings
from trainables.metrics import RUN_ID_KEY
from trainables.tracking.retry import retrying
from trainables.trial.driver import in_process
from trainables.trial.rerun import RERUN_KEY, Rerun

CONFIRM, FINAL = "confirm", "final"


def fit(tuner: tune.Tuner):
    """(tuner.fit()'s results, whether Ctrl-C stopped it). Tune reports the trials a Ctrl-C stopped as terminated
    (its saved state has them RUNNING, which --resume restarts), so the interrupt is read from its signal handler:
    Tune puts back the handler it found only when it catches a SIGINT."""
    before = signal.getsignal(signal.SIGINT)
    mine = functools.partial(signal.default_int_handler)  # a second Ctrl-C still raises KeyboardInterrupt
    signal.signal(signal.SIGINT, mine)
    try:
        results = tuner.fit()
    finally:
        after = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, before)
    return results, after is mine


def configs(results) -> dict[str, dict]:
    """{MLflow run id: Tune config} of the search's trials that reported (a ResultGrid)."""
    return {r.metrics[RUN_ID_KEY]: r.config for r in results if r.metrics and r.metrics.get(RUN_ID_KEY)}


def confirm_points(
    rows: list[TrialRow], known: dict[str, dict], k: int, seeds: int, base_seed: int, epochs: int
) -> list[dict]:
    """The confirmation trials' Tune configs: the K best distinct configurations of the search (`rows` best
    first), each with `seeds` new seeds (base_seed + 1, + 2, ...: never the search's, each used once)."""
    chosen, seen = [], set()
    for row in rows:
        config = known.get(row.run_id)
        key = json.dumps(config, sort_keys=True, default=str)
        if config is None or not row.epochs or not row.feasible or key in seen:
            continue
        seen.add(key)
        chosen.append((row, config))
        if len(chosen) == k:
            break
    return [
        Rerun(CONFIRM, base_seed + 1 + i * seeds + j, epochs, row.run_id, row.name, config).to_dict()
        for i, (row, config) in enumerate(chosen)
        for j in range(seeds)
    ]


def final_epochs(rows: list[TrialRow]) -> tuple[TrialRow, int]:
    """(the configuration's source trial, epochs) of the final fit: the winning confirmed configuration and the
    median epoch its runs peaked at, or without confirmation the search winner and its own peak epoch."""
    conf = confirmed(rows)
    if conf and conf[0].runs:
        return conf[0].source, max(1, round(statistics.median(r.best_epoch for r in conf[0].runs)))
    best = searched(rows)[0]
    return best, max(1, best.best_epoch)


def trial_keeping(s: RunSettings) -> dict:
    """The tune.RunConfig arguments for what Tune keeps of a trial and when it retries one. A trial that trains in
    process (trainables.trial.driver.in_process) reports its resume checkpoint to Tune, which keeps the latest and
    restarts a trial whose process was lost from it, --max-retries times; a distributed trial's worker group is
    Train's to restart, and its Tune actor, on the head, fails only with the study."""
    return dict(
        failure_config=tune.FailureConfig(max_failures=s.max_retries if in_process(s) else 0),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
    )


def run_phase(s: RunSettings, space, plan, trainable, phase: str, points: list[dict], epochs: int) -> bool:
    """Train `points` (Rerun dicts: a later phase), or continue the phase a stopped study left (its saved Tune state).
    True when every trial of it ended (FINISHED or FAILED), False when it was stopped (Ctrl-C)."""
    path = f"{s.run_path}/{phase}"
    if tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, restart_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={RERUN_KEY: tune.grid_search(points)},
            tune_config=tune.TuneConfig(
                num_samples=1, max_concurrent_trials=plan.max_concurrent, reuse_actors=in_process(s)
            ),  # one trial per point, in order
            run_config=tune.RunConfig(
                name=phase,
                storage_path=s.run_path,
                stop=budget.BudgetStopper(),
                callbacks=[
                    ReleaseTrainWorkers(distributed=not in_process(s)),
                    CloseTrialRuns(s.replace(max_epochs=epochs), space),
                    TrialEvents(len(points), epochs, [], epoch_lines=False),
                ],
                verbose=1,
                **trial_keeping(s),
            ),
        )
    results, interrupted = fit(tuner)
    # Ctrl-C: Tune saves the phase with its unfinished trials RUNNING (--resume restarts them), but the results it
    # returns call them terminated: a re-run ended when it failed, trained every epoch or the budget cut it
    cut = budget.active().cut if budget.active() else set()
    open_ = [
        r
        for r in results
        if r.error is None and epochs_done(r.metrics or {}) < epochs and (r.metrics or {}).get("trial_id") not in cut
    ]
    return not interrupted and not open_ and len(results) >= len(points)


def after_search(s: RunSettings, space, plan, trainable, results) -> str:
    """The confirm and final phases the study asked for, after a search that ended: FINISHED, or KILLED when
    one was stopped (--resume continues it)."""
    client = MlflowClient(s.mlflow_uri)
    known = configs(results)

    def read() -> list[TrialRow]:  # waits out a tracking server that is restarting, as a trial's start does
        return retrying(lambda: trial_rows(client, s.mlflow_experiment_id, s.parent_run_id), "reading the trials")

    rows = read()
    b = budget.active()
    if (s.confirm or s.final_fit) and b is not None and b.limited and b.exhausted():
        say("the budget is spent: no confirmation or final fit (the search's best trial is the winner)")
        return "FINISHED"
    if s.confirm:
        points = confirm_points(searched(rows), known, s.confirm, s.confirm_seeds, s.seed, s.max_epochs)
        say(
            f"confirm: the {len(points) // s.confirm_seeds} best distinct configurations again, {s.confirm_seeds} "
            f"new seeds each, {s.max_epochs} epochs, no early stopping ({len(points)} runs)"
        )
        if not run_phase(s, space, plan, trainable, CONFIRM, points, s.max_epochs):
            return "KILLED"
        rows = read()
    search = searched(rows)
    if s.final_fit and search and search[0].epochs:
        source, epochs = final_epochs(rows)
        if source.run_id not in known:  # its Tune record is gone (a study folder moved without it)
            say(f"warning: no final fit: the Tune config of {source.name} is not in the study's saved state")
            return "FINISHED"
        say(f"final fit: {source.name}'s configuration on train + val for {epochs} epochs")
        point = Rerun(FINAL, s.seed, epochs, source.run_id, source.name, known[source.run_id]).to_dict()
        if not run_phase(s, space, plan, trainable, FINAL, [point], epochs):
            return "KILLED"
    return "FINISHED"
