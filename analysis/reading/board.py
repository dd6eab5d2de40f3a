"""The leaderboard's tables: one row per trial (ASHA-stopped ones included), best val_macro_f1 first, as a
DataFrame, terminal text fitted to 120 characters, Markdown and CSV; the confirmation table; the study's state.

Columns: rank, trial (MLflow run name), family, arch, val_macro_f1 (best over the epochs; - never reported),
best_epoch, epochs (reported), epoch (best_epoch/epochs), stopped_early (ASHA), status (MLflow's), state
(status, or ASHA when stopped early), wall_s (trial start to end), run_id, and every searched param.
The default view: rank, trial, family, arch, val_macro_f1, epoch, state and the key params
(search_spaces.space.KEY_PARAMS), the last ones left out (and named) when they do not fit.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pandas as pd

from analysis.reading.confirm import Confirmed, confirmed, finals
from analysis.reading.runs import TrialRow, best_per_family
from search_spaces.space import KEY_PARAMS
from trainables.metrics import OBJECTIVE_KEY
from trainables.tracking.mlflow_runs import live_driver

BASE = (
    "rank",
    "trial",
    "family",
    "arch",
    OBJECTIVE_KEY,
    "best_epoch",
    "epochs",
    "stopped_early",
    "status",
    "phase",
    "wall_s",
    "latency_ms",  # its network's batch-1 latency, measured before the trials (sweep.costs); - not measured
    "throughput_img_s",  # its network's images/s at the serving batch
    "feasible",  # over: its network is over the study's latency budget (never the winner)
    "pareto",  # front: on the Pareto front of a Pareto search
)
DERIVED = ("epoch", "state")  # best_epoch/epochs; status, or ASHA when stopped early (recipe: its recipe)
WIDE = (*BASE, *KEY_PARAMS, "run_id")
# the default view, most wanted first: columns are left out from the end until the table fits WIDTH
COMPACT = (
    "rank",
    "trial",
    "family",
    "arch",
    OBJECTIVE_KEY,
    "epoch",
    "state",
    "latency_ms",
    *KEY_PARAMS,
)
WIDTH = 120  # characters of a terminal line
MAX_CELL = 20  # characters of a family or arch in the default view (longer: cut with "…")
LEFT = {
    "trial",
    "family",
    "arch",
    "status",
    "phase",
    "state",
    "run_id",
    "values",
    "search",
}  # text columns, left-aligned
GAP = " "  # between columns
CONFIRM_COLUMNS = (
    "rank",
    "search_rank",
    "change",
    "trial",
    "family",
    "arch",
    "mean",
    "ci95",
    "sd",
    "seeds",
    "values",
    "search_best",
)  # analysis.reading.confirm: per confirmed configuration


def table(rows: list[TrialRow], all_params: bool = False, params=KEY_PARAMS) -> pd.DataFrame:
    """Rows in the order given (trial_rows: best first). `rank` is 1-based; NaN best = never reported.
    Params: every logged one (all_params) or `params` by their plain names (TrialRow.param)."""
    records = []
    for i, r in enumerate(rows, 1):
        ps = r.params if all_params else {k: r.param(k) for k in params}
        records.append(
            {
                "rank": i,
                "trial": r.name,
                "family": r.family,
                "arch": r.arch,
                OBJECTIVE_KEY: r.best,
                "best_epoch": r.best_epoch,
                "epochs": r.epochs,
                "stopped_early": r.stopped_early,
                "status": r.status,
                "phase": r.phase,
                "wall_s": r.wall_s,
                "latency_ms": r.latency_ms,
                "throughput_img_s": r.throughput_img_s,
                "feasible": r.feasible,
                "pareto": r.pareto,
                **{k: v for k, v in ps.items() if k not in ("family", "arch")},
                "run_id": r.run_id,
            }
        )
    return pd.DataFrame.from_records(records, columns=None if records else [*BASE, *params, "run_id"])


def _param(v) -> str:
    """A param as text: ints as they are, other numbers to 3 significant digits, anything else unchanged."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return str(int(f)) if f.is_integer() and "e" not in str(v).lower() else f"{f:.3g}"


def cells(df: pd.DataFrame) -> pd.DataFrame:
    """The table as text, with the derived columns (epoch, state) added."""
    out = df.astype(object)
    out[OBJECTIVE_KEY] = df[OBJECTIVE_KEY].map(lambda v: "-" if v != v else f"{v:.4f}")
    out["wall_s"] = df["wall_s"].map(lambda v: "-" if v != v else f"{v:.0f}")
    out["stopped_early"] = df["stopped_early"].map({True: "ASHA", False: ""})
    out["latency_ms"] = df["latency_ms"].map(lambda v: "-" if v != v else f"{v:.3g}")
    out["throughput_img_s"] = df["throughput_img_s"].map(lambda v: "-" if v != v else f"{v:.0f}")
    out["feasible"] = df["feasible"].map({True: "", False: "over"})
    out["pareto"] = df["pareto"].map({True: "front", False: ""})
    out["epoch"] = [f"{b}/{e}" if e else "-" for b, e in zip(df["best_epoch"], df["epochs"])]
    out["state"] = [
        ("recipe " if ph == "recipe" else "") + ("ASHA" if s else st)
        for s, st, ph in zip(df["stopped_early"], df["status"], df["phase"])
    ]
    for col in ("rank", "best_epoch", "epochs", "trial", "family", "arch", "status", "phase", "run_id"):
        out[col] = df[col].map(str)
    for col in set(df.columns) - set(BASE) - {"run_id"}:
        out[col] = df[col].map(_param)
    return out


def _widths(df: pd.DataFrame, columns) -> dict[str, int]:
    return {c: max([len(c), *map(len, df[c])]) for c in columns}


def text(df: pd.DataFrame, columns) -> str:
    """Fixed-width lines of `columns` of cells(): text left-aligned, numbers right-aligned."""
    widths = _widths(df, columns)
    just = {c: str.ljust if c in LEFT else str.rjust for c in columns}
    lines = [GAP.join(just[c](c, widths[c]) for c in columns)]
    lines += [GAP.join(just[c](v, widths[c]) for c, v in zip(columns, vals)) for vals in zip(*(df[c] for c in columns))]
    return "\n".join(line.rstrip() for line in lines)


def fit(df: pd.DataFrame, columns=COMPACT, width: int = WIDTH) -> tuple[list[str], pd.DataFrame]:
    """(the first of `columns` whose table fits `width`, cells with long names cut): at least rank to
    val_macro_f1; trial names are never cut (the study's other commands take them)."""
    df = df.copy()
    for col in ("family", "arch"):
        df[col] = df[col].map(lambda s: s if len(s) <= MAX_CELL else s[: MAX_CELL - 1] + "…")
    cols = list(columns)
    while len(cols) > 5 and sum(_widths(df, cols).values()) + len(GAP) * (len(cols) - 1) > width:
        cols.pop()
    return cols, df


def confirmation(conf: list[Confirmed]) -> pd.DataFrame:
    """The confirmed configurations, best mean first: mean ± the 95 % interval's half width over seeds, the seeds'
    standard deviation and values, and the rank the configuration had in the search (change: places gained)."""
    return pd.DataFrame.from_records(
        [
            {
                "rank": c.rank,
                "search_rank": c.search_rank,
                "change": c.change,
                "trial": c.source.name,
                "family": c.source.family,
                "arch": c.source.arch,
                "mean": c.mean,
                "ci95": c.half_width,
                "sd": c.sd,
                "seeds": len(c.values),
                "values": " ".join(f"{v:.3f}" for v in c.values),
                "search_best": c.source.best,
            }
            for c in conf
        ],
        columns=CONFIRM_COLUMNS,
    )


def confirmation_text(conf: list[Confirmed]) -> str:
    """The confirmation table as terminal lines (the leaderboard's and tune.py's summary)."""
    df = confirmation(conf)
    out = df.astype(object)
    out["mean ± 95%"] = [f"{m:.4f} ± {h:.4f}" if h == h else f"{m:.4f}" for m, h in zip(df["mean"], df["ci95"])]
    out["search"] = [f"{s} ({'+' if c > 0 else ''}{c if c else '='})" for s, c in zip(df["search_rank"], df["change"])]
    out[f"search {OBJECTIVE_KEY}"] = df["search_best"].map(lambda v: f"{v:.4f}")
    out["sd"] = df["sd"].map(lambda v: "-" if v != v else f"{v:.4f}")
    for col in ("rank", "seeds", "family", "arch", "trial", "values"):
        out[col] = df[col].map(str)
    return text(
        out,
        ["rank", "search", "trial", "family", "arch", "mean ± 95%", "sd", "seeds", "values", f"search {OBJECTIVE_KEY}"],
    )


def family_best(rows: list[TrialRow], **kw) -> pd.DataFrame:
    """Each family's best trial, families ranked by it (table's columns)."""
    return table(list(best_per_family(rows).values()), **kw)


def render(rows: list[TrialRow], columns=None, wide: bool = False) -> str:
    """The terminal text: the leaderboard and each family's best trial, in the default view (fitted to WIDTH,
    with a legend), every key column (wide) or the given columns."""
    params = [c for c in columns or () if c not in (*BASE, *DERIVED, "run_id")] or KEY_PARAMS
    board, fam = cells(table(rows, params=params)), cells(family_best(rows, params=params))
    notes = []
    if columns or wide:
        cols = list(columns or WIDE)
    else:
        (cols, board), (_, fam) = fit(board), fit(fam)
        notes.append(
            f"epoch: best epoch/epochs reported; state ASHA: stopped early by ASHA; recipe: the family's "
            f"published recipe, tried first; {OBJECTIVE_KEY} -: never reported"
        )
        if len(cols) < len(COMPACT):
            notes.append(f"left out to fit {WIDTH} characters: {', '.join(COMPACT[len(cols) :])}")
        notes.append("--wide: every key column; --columns a,b,...: any columns and params; --csv PATH: every param")
    fam_cols = [c for c in cols if c != "rank"] or cols
    out = text(board, cols) + "\n" + "".join(textwrap.fill(n, WIDTH) + "\n" for n in notes)
    return out + "\nbest per family:\n" + (text(fam, fam_cols) if len(fam) else "(no trial reported a result)")


def render_phases(rows: list[TrialRow]) -> str:
    """The confirmation table and the final fit, when the study had them ("" when not)."""
    out, conf = "", confirmed(rows)
    if conf:
        out += (
            f"\nconfirmation: the search's best configurations again over new seeds, ranked by mean "
            f"{OBJECTIVE_KEY} ± the 95 % interval's half width (search: rank in the search, places gained):\n"
            + confirmation_text(conf)
            + "\n"
        )
    for r in finals(rows):
        out += (
            f"\nfinal fit {r.name}: {r.family} / {r.arch} trained on train + val ({r.status}); its test "
            "metrics are on its run\n"
        )
    return out


def markdown(rows: list[TrialRow]) -> str:
    """Every column and every param, as Markdown tables (trials, then each family's best)."""
    board, fam = (
        cells(t).drop(columns=list(DERIVED)) for t in (table(rows, all_params=True), family_best(rows, all_params=True))
    )
    conf = confirmed(rows)
    return (
        "## Trials (best first)\n\n"
        + board.to_markdown(index=False)
        + "\n\n## Best per family\n\n"
        + fam.drop(columns=["rank"]).to_markdown(index=False)
        + "\n"
        + (
            "\n## Confirmation (mean over seeds, 95 % interval half width)\n\n"
            + confirmation(conf).to_markdown(index=False, floatfmt=".4f")
            + "\n"
            if conf
            else ""
        )
    )


def write(rows: list[TrialRow], csv: Path | None = None, md: Path | None = None) -> None:
    """The full table (every param) as CSV (raw values) and / or Markdown."""
    if csv:
        table(rows, all_params=True).to_csv(csv, index=False)
    if md:
        Path(md).write_text(markdown(rows))


def study_state(parent) -> str:
    """ended (its status), running (its driver is alive) or crashed (RUNNING, but its driver is gone)."""
    if parent.info.status != "RUNNING":
        return parent.info.status.lower()
    live = live_driver(parent)
    return f"running: {live}" if live else "crashed: RUNNING but its driver is gone (continue it with tune.py --resume)"
