"""The study as pictures: learning curves, fANOVA hyper-parameter importance, parallel coordinates (PNG, Agg).

python -m analysis.study_plots --experiment artsweep-scratch [--mlflow-uri sqlite:///mlflow.db] [--out DIR]

Writes learning_curves.png, param_importance.png and parallel_coordinates.png into DIR (default
study-plots/<experiment>), logs them under plots/ of the study's MLflow parent run (--no-log: don't) and
prints their paths. The trials come from MLflow (analysis.runs), never from Ray's result folders.

Importance and parallel coordinates are drawn by Optuna from an in-memory study rebuilt from the finished
trials: each trial's value is its best val_macro_f1 (ASHA-stopped trials included, at the best value they
reached before being stopped), each param's distribution inferred from the values the study tried. Only
params every trial has (a `--family all` study mixes families with their own knobs) and that vary are used.
"""
from __future__ import annotations

import math
import textwrap
import warnings
from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from analysis.runs import TrialRow, open_study, study_parser  # noqa: E402
from trainables.metrics import OBJECTIVE  # noqa: E402

ARTIFACT_DIR = "plots"
LEARNING_CURVES, IMPORTANCE, PARALLEL = "learning_curves.png", "param_importance.png", "parallel_coordinates.png"
LOSS = "val_loss"
DPI = 110
LOG_RATIO = 20.0          # a positive numeric param spanning more than this factor gets a log axis ...
LOG_SKEW = 0.25           # ... when its median also sits in the low quarter of its range (log-searched values
                          # cluster at the bottom; uniform ones in [0, 1] also span > 20x once one lands near 0)
STOPPED_COLOR, BEST_COLOR = "#8c8c8c", "#d62728"


# ---------------------------------------------------------------- data -> in-memory Optuna study

def _number(s: str) -> float | None:
    try:
        v = float(s)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _is_int(s: str) -> bool:
    try:
        int(s)
        return True
    except (TypeError, ValueError):
        return False


def infer_distributions(params: list[Mapping[str, str]]) -> tuple[dict, dict[str, str]]:
    """({name: optuna distribution}, {left-out name: why}) from the MLflow params (strings) of the trials.

    Numbers -> FloatDistribution(min, max), log when all positive, max/min > 20 and the median is in the
    bottom quarter of [min, max] (log-searched values are skewed that way); integers (batch_size,
    freeze_epochs) -> IntDistribution the same way; anything else -> CategoricalDistribution. Params missing
    from some trial, or with one value across all trials, are left out."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    dists, skipped = {}, {}
    names = sorted(set().union(*params)) if params else []
    for name in names:
        values = [p.get(name) for p in params]
        if any(v is None for v in values):
            skipped[name] = "not in every trial"
            continue
        if len(set(values)) < 2:
            skipped[name] = "constant"
            continue
        nums = [_number(v) for v in values]
        if all(n is not None for n in nums):
            lo, hi = min(nums), max(nums)
            if lo == hi:                               # "1" and "1.0"
                skipped[name] = "constant"
                continue
            log = lo > 0 and hi / lo > LOG_RATIO and float(np.median(nums)) < lo + LOG_SKEW * (hi - lo)
            if all(_is_int(v) for v in values):
                dists[name] = IntDistribution(int(lo), int(hi), log=log)
            else:
                dists[name] = FloatDistribution(lo, hi, log=log)
        else:
            dists[name] = CategoricalDistribution(sorted(set(values)))
    return dists, skipped


def _value(dist, s: str):
    from optuna.distributions import FloatDistribution, IntDistribution
    if isinstance(dist, IntDistribution):
        return int(s)
    if isinstance(dist, FloatDistribution):
        return float(s)
    return s


def scored_rows(rows: list[TrialRow]) -> list[TrialRow]:
    """Trials that count for importance: FINISHED child runs (ASHA-stopped included) with a reported value.
    Leaves out FAILED and RUNNING runs, and the KILLED leftovers of a trial restarted by --resume."""
    return [r for r in rows if r.status == "FINISHED" and r.best == r.best]


def build_study(rows: list[TrialRow]) -> tuple[optuna.Study, dict[str, str]]:
    """(in-memory maximize study with one COMPLETE trial per scored row, {left-out param: why})."""
    rows = scored_rows(rows)
    dists, skipped = infer_distributions([r.params for r in rows])
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)   # no "A new study created in memory" line
    try:
        study = optuna.create_study(direction="maximize", study_name="artsweep-study-plots")
    finally:
        optuna.logging.set_verbosity(verbosity)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([OBJECTIVE])
    for r in rows:
        study.add_trial(optuna.trial.create_trial(
            params={k: _value(d, r.params[k]) for k, d in dists.items()}, distributions=dict(dists),
            value=float(r.best), user_attrs={"run_id": r.run_id, "name": r.name, "family": r.family,
                                             "stopped_early": r.stopped_early}))
    return study, skipped


def too_few(study: optuna.Study) -> str | None:
    """Why fANOVA / parallel coordinates cannot be drawn for this study, or None when they can."""
    trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(trials) < 2:
        return f"{len(trials)} finished trial{'s' * (len(trials) != 1)} with a {OBJECTIVE}: at least 2 are needed"
    if len({t.value for t in trials}) < 2:
        return f"all {len(trials)} finished trials have the same {OBJECTIVE} ({trials[0].value:.4f})"
    if not trials[0].distributions:
        return f"no hyper-parameter varies across the {len(trials)} finished trials"
    return None


def param_importances(study: optuna.Study, seed: int = 0) -> dict[str, float]:
    """fANOVA importance of each param for the objective (sums to 1), most important first."""
    return optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed))


# ---------------------------------------------------------------- figures

def _save(fig, path: Path, note: str = "") -> Path:
    """PNG at DPI; `note` goes into its Description text chunk (Pillow: Image.open(path).info)."""
    fig.savefig(path, dpi=DPI, metadata={"Title": f"artsweep study: {path.stem}", "Description": note})
    plt.close(fig)
    return path


def _message_png(path: Path, title: str, why: str) -> Path:
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.axis("off")
    ax.set_title(title, fontsize=13, loc="left")
    ax.text(0.5, 0.5, "\n".join(textwrap.wrap(f"Not drawn: {why}.", 70)), ha="center", va="center",
            fontsize=12, transform=ax.transAxes, bbox={"boxstyle": "round", "fc": "#fff3cd", "ec": "#c9a227"})
    fig.tight_layout()
    return _save(fig, path, f"not drawn: {why}")


def _skipped_note(skipped: dict[str, str]) -> str:
    groups: dict[str, list[str]] = {}
    for name, why in skipped.items():
        groups.setdefault(why, []).append(name)
    text = "; ".join(f"{why}: {', '.join(names)}" for why, names in sorted(groups.items()))
    return "\n".join(textwrap.wrap(f"left out ({text})", 150)) if text else ""


def learning_curves_png(rows: list[TrialRow], path: Path, max_epochs: int | None = None,
                        val_loss: Mapping[str, list] | None = None) -> Path:
    """val_macro_f1 per epoch of every trial (and val_loss beside it when given): trials that ran the
    budget in a colour of their best value, ASHA-stopped ones dashed grey ending in an 'x', the best trial
    thick red with a star at its best epoch."""
    curves = [r for r in rows if r.history]
    if not curves:
        return _message_png(path, "learning curves", f"no trial has reported {OBJECTIVE} yet")
    losses = {k: v for k, v in (val_loss or {}).items() if v}
    with_loss = any(r.run_id in losses for r in curves)
    fig, axes = plt.subplots(1, 2 if with_loss else 1, figsize=(14 if with_loss else 8.5, 6), squeeze=False,
                             layout="constrained")
    ax_f1, ax_loss = axes[0][0], axes[0][1] if with_loss else None
    best = next((r for r in rows if r.best == r.best), None)        # rows come best first
    finite = [r.best for r in curves if r.best == r.best and not r.stopped_early]
    norm = plt.Normalize(min(finite, default=0), max(finite, default=1) if len(set(finite)) > 1 else
                         min(finite, default=0) + 1e-9)
    cmap = plt.get_cmap("viridis")
    n_epochs = max(max_epochs or 0, *(len(r.history) for r in curves),
                   *(int(s) for v in losses.values() for s, _ in v))

    def draw(ax, r: TrialRow, xs, ys, star_at: int | None):
        if r is best:
            ax.plot(xs, ys, color=BEST_COLOR, lw=2.8, zorder=5, marker="o", ms=4)
            if star_at is not None:
                ax.plot(xs[star_at], ys[star_at], marker="*", ms=17, color=BEST_COLOR, mec="black", zorder=6)
        elif r.stopped_early:
            ax.plot(xs, ys, color=STOPPED_COLOR, lw=1.3, ls="--", alpha=0.85, zorder=2)
        else:
            ls = "-" if r.status == "FINISHED" else ":"
            ax.plot(xs, ys, color=cmap(norm(r.best)), lw=1.6, ls=ls, alpha=0.9, zorder=3, marker="o", ms=3)
        if r.stopped_early and r is not best:
            ax.plot(xs[-1], ys[-1], marker="x", ms=9, mew=2, color="black", zorder=4)

    for r in sorted(curves, key=lambda r: r is best):                  # best drawn last, on top
        xs = list(range(1, len(r.history) + 1))
        draw(ax_f1, r, xs, r.history, r.history.index(r.best) if r is best else None)
        if with_loss and r.run_id in losses:
            pts = sorted(losses[r.run_id])
            draw(ax_loss, r, [s for s, _ in pts], [v for _, v in pts], None)

    n_stopped = sum(r.stopped_early for r in curves)
    handles = [Line2D([], [], color=BEST_COLOR, lw=2.8, marker="*", ms=12, mec="black",
                      label=f"best: {best.name} ({best.best:.4f}, epoch {best.best_epoch})" if best else "best")]
    if len(curves) - n_stopped - (best is not None and not best.stopped_early) > 0:
        handles.append(Line2D([], [], color=cmap(0.6), lw=1.6, marker="o", ms=3,
                              label="ran its budget (colour = best value)"))
    if n_stopped:
        handles.append(Line2D([], [], color=STOPPED_COLOR, ls="--", marker="x", mec="black", mew=2, ms=8,
                              label=f"stopped by ASHA ({n_stopped})"))
    if any(r.status != "FINISHED" for r in curves):
        handles.append(Line2D([], [], color=cmap(0.6), ls=":", label="failed / killed / running"))
    for ax, metric in ((ax_f1, OBJECTIVE), (ax_loss, LOSS)):
        if ax is None:
            continue
        ax.set(xlabel="epoch", ylabel=metric, xlim=(0.7, n_epochs + 0.3))
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if max_epochs:
            ax.axvline(max_epochs, color="black", lw=0.8, ls=":", alpha=0.6)
    ax_f1.set_title(f"{OBJECTIVE} per epoch, {len(curves)} trials" + (f" (budget {max_epochs} epochs)"
                                                                         if max_epochs else ""))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles) if with_loss else 2, fontsize=9,
               frameon=False)
    if ax_loss is not None:
        ax_loss.set_title(f"{LOSS} per epoch")
    if len(finite) > 1:
        sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
        fig.colorbar(sm, ax=list(axes[0]), pad=0.01, fraction=0.03).set_label(f"best {OBJECTIVE}")
    return _save(fig, path)


def importance_png(study: optuna.Study, skipped: dict[str, str], path: Path) -> Path:
    """Optuna's fANOVA importance bar chart (plot_param_importances), a plain barh if that fails."""
    why = too_few(study)
    if why:
        return _message_png(path, "hyper-parameter importance (fANOVA)", why)
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    n, n_params = len(study.trials), len(study.trials[0].distributions)
    title = f"hyper-parameter importance for {OBJECTIVE} (fANOVA, {n} trials)"
    if n < 2 * n_params:      # 8 trials over 7 params: noise params outrank a param that drives the objective
        title += f"\nfew trials for {n_params} params: a rough ranking"
    with matplotlib.rc_context(), warnings.catch_warnings():   # optuna sets the ggplot style globally
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        before = set(plt.get_fignums())
        try:
            ax = optuna.visualization.matplotlib.plot_param_importances(study, evaluator=evaluator,
                                                                        target_name=OBJECTIVE)
            fig = ax.figure
            ax.set_title(title, loc="left")
            legend = ax.get_legend()
            if legend:
                legend.remove()
        except Exception as e:                                   # e.g. a future optuna changing the plot
            warnings.warn(f"optuna's importance plot failed ({type(e).__name__}: {e}); drawing a plain one")
            for num in set(plt.get_fignums()) - before:          # optuna's half-drawn figure, not the caller's
                plt.close(num)
            imp = param_importances(study)
            fig, ax = plt.subplots()
            names = list(imp)[::-1]
            ax.barh(names, [imp[k] for k in names], color="#4c72b0")
            for i, k in enumerate(names):
                ax.text(imp[k], i, f" {imp[k]:.2f}", va="center")
            ax.set(xlabel="importance (share of variance explained)", title=title)
        n_params = len(ax.get_yticks())
        fig.set_size_inches(9, max(3.5, 0.42 * n_params + 2.2))
        note = _skipped_note(skipped)
        if note:
            fig.text(0.01, 0.01, note, fontsize=7, color="#555555", va="bottom")
        fig.tight_layout(rect=(0, 0.06 if note else 0, 1, 1))
        return _save(fig, path)


def parallel_png(study: optuna.Study, skipped: dict[str, str], path: Path) -> Path:
    """Optuna's parallel coordinate plot, one line per trial coloured by its val_macro_f1."""
    why = too_few(study)
    if why:
        return _message_png(path, "parallel coordinates", why)
    n_params = len(study.trials[0].distributions)
    with matplotlib.rc_context(), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = optuna.visualization.matplotlib.plot_parallel_coordinate(study, target_name=OBJECTIVE)
        fig = ax.figure
        fig.set_size_inches(max(10.0, 1.25 * n_params + 4), 6.2)
        for lc in ax.collections:          # optuna's "Blues" fades the worst trials to white: start it at 30 %
            lc.set_cmap(ListedColormap(plt.get_cmap("Blues")(np.linspace(0.3, 1.0, 256))))
            lc.set_linewidth(1.8)
        ax.set_title(f"parallel coordinates: {len(study.trials)} trials, colour = {OBJECTIVE} "
                     "(darker = better)", y=1.03)
        for label in ax.get_xticklabels():
            label.set(rotation=30, ha="right", fontsize=9)
        for other in fig.axes:
            other.tick_params(axis="y", labelsize=8)
        note = _skipped_note(skipped)
        if note:
            fig.text(0.01, 0.01, note, fontsize=7, color="#555555", va="bottom")
        bottom = 0.2 if note else 0.16
        ax.set_position([0.08, bottom, 0.8, 0.88 - bottom])      # moves optuna's twin axes too
        for lc in ax.collections:
            if lc.colorbar is not None:
                lc.colorbar.ax.set_box_aspect(None)
                lc.colorbar.ax.set_position([0.93, bottom, 0.012, 0.88 - bottom])
        return _save(fig, path)


def plot_study(rows: list[TrialRow], folder: Path, max_epochs: int | None = None,
               val_loss: Mapping[str, list] | None = None) -> list[Path]:
    """learning_curves.png, param_importance.png, parallel_coordinates.png in `folder` (created).

    rows: analysis.runs.trial_rows (best first). val_loss: {run_id: [(epoch, value), ...]} for the second
    learning-curve panel (fetch_histories reads it from MLflow); none -> a single panel."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    study, skipped = build_study(rows)
    return [learning_curves_png(rows, folder / LEARNING_CURVES, max_epochs, val_loss),
            importance_png(study, skipped, folder / IMPORTANCE),
            parallel_png(study, skipped, folder / PARALLEL)]


# ---------------------------------------------------------------- MLflow

def fetch_histories(client: MlflowClient, rows: list[TrialRow], metric: str = LOSS) -> dict[str, list]:
    """{run_id: [(step, value), ...] sorted by step} of `metric` for every trial that logged it."""
    out = {}
    for r in rows:
        hist = client.get_metric_history(r.run_id, metric)
        if hist:
            out[r.run_id] = sorted((m.step, m.value) for m in hist)
    return out


def log_study_plots(client: MlflowClient, parent_run_id: str, paths: list[Path]) -> None:
    for p in paths:
        client.log_artifact(parent_run_id, str(p), artifact_path=ARTIFACT_DIR)


def _max_epochs(parent) -> int | None:
    v = _number(parent.data.params.get("max_epochs", ""))
    return int(v) if v else None


def main(argv=None) -> int:
    p = study_parser(__doc__, "python -m analysis.study_plots")
    p.add_argument("--out", type=Path, help="folder for the PNGs (default: study-plots/<experiment>)")
    p.add_argument("--no-log", action="store_true", help="write the PNGs only; don't log them to the parent run")
    a = p.parse_args(argv)
    client, exp, study, rows = open_study(p, a)
    out = a.out or Path("study-plots") / a.experiment
    paths = plot_study(rows, out, _max_epochs(study), fetch_histories(client, rows))
    print(f"study {study.info.run_name} ({study.info.run_id}), experiment {a.experiment!r}: {len(rows)} trials")
    for path in paths:
        print(path)
    if not a.no_log:
        log_study_plots(client, study.info.run_id, paths)
        print(f"logged {len(paths)} plots under {ARTIFACT_DIR}/ of the parent run {study.info.run_id}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
