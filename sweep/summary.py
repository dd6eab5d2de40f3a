"""The lines a finished (or stopped) study prints: counts, the winner, the families ranked, what to run next."""

from __future__ import annotations

import textwrap
from shlex import quote

from mlflow.tracking import MlflowClient

from analysis import winner
from analysis.confirm import best_run, confirmed, finals, searched
from analysis.leaderboard import confirmation_text
from analysis.registry import quiet_mlflow
from analysis.runs import TrialRow, best_per_family, trial_rows
from sweep.budget import COST, CPU, GPU, WALL
from sweep.console import say
from sweep.events import short
from trainables.config import RunSettings
from trainables.data.dataset import DataError
from trainables.metrics import OBJECTIVE_KEY
from trainables.tracking.mlflow_runs import retrying
from trainables.tracking.mlflow_ui import runs_page
from trainables.trial.rerun import SEED_PARAM


def print_summary(s: RunSettings, wall_s: float) -> int:
    """Prints the summary from MLflow (what the leaderboard shows); 1 when no trial reported a result."""
    try:
        rows = retrying(
            lambda: trial_rows(MlflowClient(s.mlflow_uri), s.mlflow_experiment_id, s.parent_run_id),
            "reading the study's trials",
            timeout_s=60,
        )
    except Exception as e:  # noqa: BLE001 - the study is done; only its summary cannot be shown
        print(
            f"\nartsweep: study done in {wall_s:.0f} s; no summary: MLflow does not answer ({type(e).__name__}). "
            f"Later: python -m analysis.leaderboard --experiment {quote(s.experiment)} --mlflow-uri {quote(s.mlflow_uri)}"
        )
        return 0
    search, conf, final = searched(rows), confirmed(rows), finals(rows)
    done = [r for r in search if r.epochs]
    stopped = sum(r.stopped_early for r in search)
    reruns = f", {sum(len(c.runs) for c in conf)} confirmation runs" if conf else ""
    print(
        f"\nartsweep: {len(search)} trials{reruns}{', 1 final fit' if final else ''} in {wall_s:.0f} s ({stopped} "
        f"stopped early, {sum(r.status == 'FAILED' for r in rows)} failed); {spend_line(s)}"
    )
    if not done:
        print("artsweep: no trial reported a result; see the errors above")
        return 1
    best = best_run(rows)
    print(
        f"best trial {done[0].name}: family={done[0].family} arch={done[0].arch} "
        f"{OBJECTIVE_KEY}={done[0].best:.4f} (epoch {done[0].best_epoch} of {done[0].epochs})"
    )
    if conf:
        print(
            f"confirmation ({s.confirm_seeds} new seeds each, {s.max_epochs} epochs, no early stopping), by mean "
            f"{OBJECTIVE_KEY} ± 95 % interval; search: rank in the search (places gained):"
        )
        print(textwrap.indent(confirmation_text(conf), "  "))
    if conf and conf[0].values:
        c = conf[0]
        print(
            f"winner: {c.source.name}'s configuration, mean {c.mean:.4f} over {len(c.values)} seeds (search rank "
            f"{c.search_rank}); its best seed's run {best.name} ({OBJECTIVE_KEY} {best.best:.4f}) is the model"
        )
    crowned = crown(s, best)
    knobs = {k.rsplit(".", 1)[-1]: v for k, v in best.params.items()}  # the winner's family's own names
    print(
        "  config: "
        + " ".join(f"{k}={short(v)}" for k, v in sorted(knobs.items()) if k not in ("family", "arch", SEED_PARAM))
    )
    if crowned:
        print(f"  {crowned}")
    for r in final:
        print(champion(s, r))
    families = best_per_family(search)
    if len(families) > 1:
        print("families ranked by their best trial:")
        for i, (fam, r) in enumerate(families.items(), 1):
            print(f"  {i}. {fam:<13} {OBJECTIVE_KEY}={r.best:.4f}  ({r.arch}, {r.name})")
    print(f"browse the study:  {browse(s)}")
    print(
        f"pick the winner:   python -m analysis.leaderboard | study_plots | evaluate | registry "
        f"--experiment {quote(s.experiment)} --mlflow-uri {quote(s.mlflow_uri)}"
    )
    return 0


def browse(s: RunSettings) -> str:
    """How to open the study's runs in the MLflow UI."""
    page = runs_page(s.mlflow_experiment_id)
    if s.mlflow_uri.startswith(("http://", "https://")):
        return f"{s.mlflow_uri.rstrip('/')}/{page}"
    return f"mlflow ui --backend-store-uri {quote(s.mlflow_uri)}, then open http://127.0.0.1:5000/{page}"


def crown(s: RunSettings, best: TrialRow) -> str:
    """Mark the winner in MLflow (analysis.winner): its test metrics (scored here, on this machine's copy of the
    data) and its checkpoint as a logged model. Returns the summary's line about it; a failure is a warning:
    the study's record stands without it."""
    client = MlflowClient(s.mlflow_uri)
    try:
        test, n = winner.test_scores(client, best, s.parent_run_id)
    except DataError as e:  # the images are on the workers' nodes only: the winner still gets its tag and model
        say(
            f"warning: no test metrics for the winner here ({e}); python -m analysis.evaluate scores it where the "
            "data is"
        )
        test, n = {}, 0
    except Exception as e:  # noqa: BLE001 - the tracking server went away after the study: its record stands
        say(
            f"warning: could not score the winner ({type(e).__name__}: {str(e)[:200]}); "
            f"python -m analysis.evaluate --experiment {quote(s.experiment)} scores and marks it"
        )
        return ""
    try:
        with quiet_mlflow():
            model_id = winner.crown(client, s.mlflow_experiment_id, s.parent_run_id, best, test, s.dataset)
    except Exception as e:  # noqa: BLE001 - the study is done; only its winner's marks are missing
        say(
            f"warning: could not mark the winner in MLflow ({type(e).__name__}: {str(e)[:200]}); "
            f"python -m analysis.evaluate --experiment {quote(s.experiment)} marks it"
        )
        return ""
    scores = ", ".join(f"{k} {v:.4f}" for k, v in test.items() if k in winner.HEADLINE)
    return (
        f"{'test split (' + str(n) + ' images, never used for selection): ' + scores + '; ' if test else ''}"
        f"tagged {winner.WINNER_TAG}=true in MLflow with its checkpoint as logged model {model_id}"
    )


def champion(s: RunSettings, final: TrialRow) -> str:
    """Score the final fit on the test split and register it as the champion (analysis.champion); the line
    saying so, or a warning: the study's record stands without it."""
    from analysis.champion import CHAMPION, PREVIOUS, crown_final

    try:
        with quiet_mlflow():
            mv, test, previous = crown_final(
                MlflowClient(s.mlflow_uri), s.parent_run_id, final, s.experiment, show_progress=False
            )
    except Exception as e:  # noqa: BLE001 - no data here, or the server went away: say how to do it later
        return (
            f"warning: could not score and register the final fit {final.name} ({type(e).__name__}: "
            f"{str(e)[:200]}); python -m analysis.registry --experiment {quote(s.experiment)} --trial "
            f"{final.run_id} --alias {CHAMPION} registers it"
        )
    ci = f"[{test['test_macro_f1_ci_low']:.4f}, {test['test_macro_f1_ci_high']:.4f}]"
    return (
        f"final fit {final.name}: {mv.tags.get('epochs')} epochs on train + val; test_macro_f1 {test['test_macro_f1']:.4f} "
        f"{ci}, test_accuracy {test['test_accuracy']:.4f}; registered models:/{mv.name}/{mv.version} as "
        f"@{CHAMPION}" + (f" (version {previous} is now @{PREVIOUS})" if previous else "")
    )


def spend_line(s: RunSettings) -> str:
    """What the study's trials reserved (its parent run's spend metrics), against its budget."""
    try:
        m = MlflowClient(s.mlflow_uri).get_run(s.parent_run_id).data.metrics
    except Exception:  # noqa: BLE001 - the record is behind; the rest of the summary stands
        return "spend not recorded"
    kind, used = ("GPU", m.get(GPU, 0.0)) if s.use_gpu else ("CPU", m.get(CPU, 0.0))
    text = f"trials reserved {used / 3600:.3f} {kind}-hours"
    if s.gpu_hours:
        text += f" of a {s.gpu_hours:g} budget"
    if COST in m:
        text += f", cost {m[COST]:.2f} at {s.price_per_gpu_hour:g} per GPU-hour"
    if s.time_budget_s:
        text += f"; wall {m.get(WALL, 0.0):.0f} s of a {s.time_budget_s:.0f} s budget"
    return text
