"""The lines a finished (or stopped) study prints: counts, the winner, the families ranked, what to run next.

It prints what the study's closing steps did (analysis.publishing.closing: a Closed) and reads the study's spend
from MLflow; it writes nothing.
"""

from __future__ import annotations

import textwrap
from shlex import quote

from mlflow.tracking import MlflowClient

from analysis.publishing import pareto
from analysis.publishing.closing import Champion, Closed, Crowned
from analysis.publishing.models import CHAMPION, PREVIOUS
from analysis.publishing.winner import HEADLINE, WINNER_TAG
from analysis.reading import front
from analysis.reading.board import confirmation_text
from analysis.reading.confirm import confirmed, finals, searched
from analysis.reading.runs import best_per_family
from sweep.budget import COST, CPU, GPU, WALL
from sweep.console import say
from sweep.events import short
from trainables.config import RunSettings
from trainables.metrics import OBJECTIVE_KEY
from trainables.tracking.mlflow_ui import runs_page
from trainables.trial.rerun import SEED_PARAM


def print_summary(s: RunSettings, closed: Closed, wall_s: float) -> int:
    """Prints the summary from the closing steps' record (what the leaderboard shows); 1 when no trial reported a
    result."""
    if closed.unreachable:  # the study is done; only its summary cannot be shown
        print(
            f"\nartsweep: study done in {wall_s:.0f} s; no summary: MLflow does not answer ({closed.unreachable}). "
            f"Later: python -m analysis.leaderboard --experiment {quote(s.experiment)} --mlflow-uri {quote(s.mlflow_uri)}"
        )
        return 0
    rows, best = closed.rows, closed.best
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
    if best is None:  # every trial that reported is over the latency budget
        print_costs(s, rows)
        print(
            f"artsweep: no trial within the latency budget of {s.max_latency_ms:g} ms, so no winner; raise "
            "--max-latency-ms, or search the faster networks (--arch, smaller --image-size)"
        )
        return 1
    print(
        f"best trial {done[0].name}: family={done[0].family} arch={done[0].arch} "
        f"{OBJECTIVE_KEY}={done[0].best:.4f} (epoch {done[0].best_epoch} of {done[0].epochs})"
    )
    print_costs(s, rows)
    print_confirmation(s, conf, best)
    for w in closed.warnings:
        say(w)
    knobs = {k.rsplit(".", 1)[-1]: v for k, v in best.params.items()}  # the winner's family's own names
    print(
        "  config: "
        + " ".join(f"{k}={short(v)}" for k, v in sorted(knobs.items()) if k not in ("family", "arch", SEED_PARAM))
    )
    if closed.crowned:
        print(f"  {crowned_line(closed.crowned)}")
    for c in closed.champions:
        print(c.warning or champion_line(c))
    if closed.export:
        print(closed.export)
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


def print_confirmation(s: RunSettings, conf, best) -> None:
    """The confirmation table and the winner it chose (nothing without confirmation)."""
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


def print_costs(s: RunSettings, rows) -> None:
    """A Pareto search's front as a table, and how to crown a point of it; a latency budget's effect."""
    key = pareto.cost_key(s)
    if key is None:
        return
    best = next((r for r in searched(rows) if r.epochs and r.feasible), None)
    if s.max_latency_ms:
        over = [r for r in searched(rows) if not r.feasible]
        print(
            f"latency budget {s.max_latency_ms:g} ms (batch 1): {len(over)} trial(s) over it stopped at their first "
            f"rung and cannot win"
            + (f"; the best within it takes {best.latency_ms:.3g} ms ({best.arch})" if best else "")
        )
    if s.objectives:
        on = front.front(rows, key)
        print(
            f"Pareto front of {OBJECTIVE_KEY} against {key}: {len(on)} trial(s), tagged pareto=true in MLflow and "
            f"drawn in the study run's {front.FIGURE}:"
        )
        print(textwrap.indent(front.front_text(on, key), "  "))
        print(
            "  crown the point you choose: python -m analysis.registry "
            f"--experiment {quote(s.experiment)} --mlflow-uri {quote(s.mlflow_uri)} --trial RUN_ID --alias champion"
        )


def browse(s: RunSettings) -> str:
    """How to open the study's runs in the MLflow UI."""
    page = runs_page(s.mlflow_experiment_id)
    if s.mlflow_uri.startswith(("http://", "https://")):
        return f"{s.mlflow_uri.rstrip('/')}/{page}"
    return f"mlflow ui --backend-store-uri {quote(s.mlflow_uri)}, then open http://127.0.0.1:5000/{page}"


def crowned_line(c: Crowned) -> str:
    """The summary's line about the crowned winner (analysis.publishing.winner)."""
    scores = ", ".join(f"{k} {v:.4f}" for k, v in c.test.items() if k in HEADLINE)
    return (
        f"{'test split (' + str(c.images) + ' images, never used for selection): ' + scores + '; ' if c.test else ''}"
        f"tagged {WINNER_TAG}=true in MLflow with its checkpoint as logged model {c.model_id}"
    )


def champion_line(c: Champion) -> str:
    """The summary's line about a final fit registered as the champion (analysis.publishing.champion)."""
    test, mv = c.test, c.version
    ci = f"[{test['test_macro_f1_ci_low']:.4f}, {test['test_macro_f1_ci_high']:.4f}]"
    return (
        f"final fit {c.final.name}: {mv.tags.get('epochs')} epochs on train + val; test_macro_f1 "
        f"{test['test_macro_f1']:.4f} {ci}, test_accuracy {test['test_accuracy']:.4f}; registered "
        f"models:/{mv.name}/{mv.version} as @{CHAMPION}"
        + (f" (version {c.previous} is now @{PREVIOUS})" if c.previous else "")
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
