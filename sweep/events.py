"""The study's trial events, in words: one console line per event (started with its key params, each epoch's
objective, stopped by ASHA at rung r or by the budget, finished, failed with the one-line reason) and the live
progress line (trials done / running / pending, the best so far, elapsed and ETA); the same words describe each
trial's MLflow run when it ends (sweep.callbacks.CloseTrialRuns).
"""

from __future__ import annotations

import time
from typing import Optional

from ray import tune

from search_spaces.space import KEY_PARAMS
from sweep import budget, console
from sweep.scheduler import epochs_done
from trainables.metrics import BEST_KEY, OBJECTIVE, OBJECTIVE_KEY, REPLAYED_KEY
from trainables.trial import rerun

# shown when a trial starts (their study names end with these: `cnn.lr` in a --family all study);
# every other searched value is in the trial's MLflow run and the leaderboard
STARTED_PARAMS = ("family", "arch", *KEY_PARAMS)
REFRESH_S = 1.0  # the progress line's clock ticks at most this often


def duration(seconds: float) -> str:
    """45s, 3m05s, 2h03m."""
    s = int(max(0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def key_params(config: dict) -> str:
    values, again = rerun.split(config)
    out = [f"seed={again.seed}", f"epochs={again.epochs}"] if again else []
    for key, value in values.items():
        if key.rsplit(".", 1)[-1] in STARTED_PARAMS:
            out.append(f"{key}={short(value)}")
    return " ".join(out)


def short(value) -> str:
    """A searched value as people read it: 3 significant digits, small ones in e-notation (params logged to
    MLflow come back as strings: a float's text is shortened too)."""
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in ".e") else value
        except ValueError:
            return value
    if isinstance(value, float):
        return f"{value:.2e}" if abs(value) < 1e-2 and value else f"{value:.3g}"
    return str(value)


def rungs(max_t: int, grace: int, reduction_factor: float) -> list[int]:
    """ASHA's milestones (epochs) below max_t, lowest first: where it keeps the top 1/reduction_factor."""
    out, t = [], grace
    while t < max_t:
        out.append(int(t))
        t *= reduction_factor
    return out


class TrialEvents(tune.Callback):
    """One line per trial event (started, each epoch, stopped by ASHA or the budget, finished, failed) and the
    study's progress line: trials done / running / pending, the best so far, elapsed time and ETA. Saved with
    Tune's state (a resumed study gets it back): only its settings are kept, the counts start again."""

    def __init__(self, num_samples: int, max_epochs: int, milestones: list[int], epoch_lines: bool = True):
        """`epoch_lines`: a line per epoch (the search); off for re-runs, whose runs go the whole way."""
        self.num_samples, self.max_epochs, self.milestones = num_samples, max_epochs, list(milestones)
        self.epoch_lines = epoch_lines
        self.setup()

    def __getstate__(self):
        return {
            "num_samples": self.num_samples,
            "max_epochs": self.max_epochs,
            "milestones": self.milestones,
            "epoch_lines": self.epoch_lines,
        }

    def __setstate__(self, state):
        self.__init__(**state)

    def setup(self, **info):
        self.t0 = time.monotonic()
        self.done = self.running = 0
        self.done_at = 0.0  # elapsed seconds when the latest trial ended
        self.best, self.best_trial = float("nan"), ""
        self._ticked = 0.0
        if info:  # Tune's setup, as the study starts
            console.CONSOLE.start_progress(self.num_samples or None)
            self._tick(force=True)

    def elapsed(self) -> float:
        """Since the study started (its earlier runs included, when resumed): the budget's clock."""
        b = budget.active()
        return b.elapsed_s() if b is not None else time.monotonic() - self.t0

    def _line(self, trial, text: str) -> None:
        console.CONSOLE.line(f"[{duration(self.elapsed()):>6}] {label(trial)} {text}")
        self._tick(force=True)

    def on_trial_start(self, iteration, trials, trial, **info):
        self.running += 1
        self._line(trial, f"started: {key_params(trial.config)}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get(REPLAYED_KEY) or OBJECTIVE_KEY not in result:
            return
        value, best = result[OBJECTIVE_KEY], result.get(BEST_KEY, result[OBJECTIVE_KEY])
        if OBJECTIVE.better(best, self.best):
            self.best, self.best_trial = best, label(trial)
        if not self.epoch_lines:
            self._tick()
            return
        self._line(
            trial, f"epoch {epochs_done(result)}/{self.max_epochs}: {OBJECTIVE_KEY} {value:.4f} (trial best {best:.4f})"
        )

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._ended()
        self._line(trial, ending(trial, self.max_epochs, self.milestones))

    def on_trial_error(self, iteration, trials, trial, **info):
        self._ended()
        self._line(
            trial,
            ending(trial, self.max_epochs, self.milestones, error=error_text(trial))
            + " (the whole error: tag `error` of its MLflow run)",
        )

    def on_step_begin(self, iteration, trials, **info):
        self._tick()

    def on_experiment_end(self, trials, **info):
        console.CONSOLE.stop_progress()

    def _ended(self) -> None:
        self.done += 1
        self.done_at = self.elapsed()
        self.running = max(0, self.running - 1)

    def status(self) -> str:
        """The progress line's text."""
        elapsed = self.elapsed()
        total = self.num_samples
        parts = [f"trials {self.done}/{total or '?'} done", f"{self.running} running"]
        if total:
            parts.append(f"{max(0, total - self.done - self.running)} pending")
        if self.best_trial:
            parts.append(f"best {OBJECTIVE_KEY} {self.best:.4f} ({self.best_trial})")
        parts.append(f"elapsed {duration(elapsed)}")
        eta = self.eta(elapsed)
        parts.append(f"ETA {duration(eta)}" if eta is not None else "ETA ?")
        return " | ".join(parts)

    def eta(self, elapsed: float) -> Optional[float]:
        """Seconds left: all trials at the pace of those done so far (counting down between trial ends), capped by
        what the time budget leaves."""
        left = []
        if self.num_samples and self.done:
            left.append(max(0.0, self.done_at / self.done * self.num_samples - elapsed))
        b = budget.active()
        if b is not None and b.wall_s is not None:
            left.append(max(0.0, b.wall_s - b.elapsed_s()))
        return min(left) if left else None

    def _tick(self, force: bool = False) -> None:
        if console.CONSOLE.bar is None:
            return
        now = time.monotonic()
        if force or now - self._ticked >= REFRESH_S:
            self._ticked = now
            console.CONSOLE.progress(self.status())


def label(trial) -> str:
    """The trial as its MLflow run is named: Tune's name, or a re-run's own (confirm-<source>-seed<n>)."""
    again = rerun.split(trial.config)[1]
    return again.name if again else str(trial)


def ending(trial, max_epochs: int, milestones: list[int], error: Optional[str] = None) -> str:
    """How a trial ended, in a few words (its console line and its MLflow run's description)."""
    last = trial.last_result or {}
    epochs, best = epochs_done(last), last.get(BEST_KEY, float("nan"))
    score = f"best {OBJECTIVE_KEY} {best:.4f}" if best == best else "no validation (trained on train + val)"
    if error is not None:
        return f"failed after {epochs} epoch(s): {reason(error)}"
    if last.get(REPLAYED_KEY):
        return f"finished before the study was resumed: {score}"
    if epochs >= max_epochs:
        return f"finished: {score} over {epochs} epochs"
    if budget.active() is not None and trial.trial_id in budget.active().cut:
        return f"stopped by the budget after epoch {epochs}: {score}"
    if epochs in milestones:
        return (
            f"stopped by ASHA at rung {milestones.index(epochs) + 1} (epoch {epochs}): {score}, below the rung's "
            "top share"
        )
    return f"stopped after epoch {epochs}: {score}"


def error_text(trial, lines: int = 25) -> str:
    """The trial's real error: the exception and the last lines of its traceback (Tune keeps the text on the
    head, in the trial's folder; the run's tag must not be a path the user cannot open)."""
    try:
        err = trial.get_error()
    except Exception:  # noqa: BLE001 - an unreadable error file must not hide the failure itself
        err = None
    text = str(err or "").strip()
    if not text:
        return f"trial failed; Tune's error file: {getattr(trial, 'error_file', None)}"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail)[-4000:]


def reason(error: str) -> str:
    """The one line that says what went wrong: the last line of a traceback that names an exception."""
    lines = [x.strip() for x in error.splitlines() if x.strip()]
    named = [x for x in lines if ("Error" in x.split(":")[0] or "Exception" in x.split(":")[0]) and ":" in x]
    text = (named or lines or ["unknown error"])[-1]
    return text if len(text) <= 200 else text[:197] + "..."
