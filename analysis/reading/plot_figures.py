"""The study's figures (PNG, Agg): learning curves, fANOVA importance, parallel coordinates.

Importance and parallel coordinates are drawn by Optuna from the in-memory study analysis.reading.optuna_study
builds; when it cannot carry them (too few trials, one value, nothing searched varies) the PNG says why.
"""

from __future__ import annotations

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

from analysis.reading.runs import TrialRow  # noqa: E402
from trainables.metrics import OBJECTIVE_KEY  # noqa: E402

LOSS = "val_loss"
DPI = 110
STOPPED_COLOR, BEST_COLOR = "#8c8c8c", "#d62728"


# ---------------------------------------------------------------- what the study can carry


def too_few(study: optuna.Study) -> str | None:
    """Why fANOVA / parallel coordinates cannot be drawn for this study, or None when they can."""
    trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(trials) < 2:
        return f"{len(trials)} finished trial{'s' * (len(trials) != 1)} with a {OBJECTIVE_KEY}: at least 2 are needed"
    if len({t.value for t in trials}) < 2:
        return f"all {len(trials)} finished trials have the same {OBJECTIVE_KEY} ({trials[0].value:.4f})"
    if not trials[0].distributions:
        return f"no searched hyper-parameter varies across the {len(trials)} finished trials"
    return None


def param_importances(study: optuna.Study, seed: int = 0) -> dict[str, float]:
    """fANOVA importance of each param for the objective (sums to 1), most important first."""
    return optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed)
    )


# ---------------------------------------------------------------- shared pieces


def _save(fig, path: Path, note: str = "") -> Path:
    """PNG at DPI; `note` goes into its Description text chunk (Pillow: Image.open(path).info)."""
    fig.savefig(path, dpi=DPI, metadata={"Title": f"artsweep study: {path.stem}", "Description": note})
    plt.close(fig)
    return path


def _message_png(path: Path, title: str, why: str) -> Path:
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.axis("off")
    ax.set_title(title, fontsize=13, loc="left")
    ax.text(
        0.5,
        0.5,
        "\n".join(textwrap.wrap(f"Not drawn: {why}.", 70)),
        ha="center",
        va="center",
        fontsize=12,
        transform=ax.transAxes,
        bbox={"boxstyle": "round", "fc": "#fff3cd", "ec": "#c9a227"},
    )
    fig.tight_layout()
    return _save(fig, path, f"not drawn: {why}")


def _skipped_note(skipped: dict[str, str]) -> str:
    groups: dict[str, list[str]] = {}
    for name, why in skipped.items():
        groups.setdefault(why, []).append(name)
    text = "; ".join(f"{why}: {', '.join(names)}" for why, names in sorted(groups.items()))
    return "\n".join(textwrap.wrap(f"left out ({text})", 150)) if text else ""


# ---------------------------------------------------------------- learning curves


def _draw_curve(ax, r: TrialRow, xs, ys, style) -> None:
    """One trial's curve: the best thick red (star at `style['star_at']`), ASHA-stopped dashed grey ending
    in an 'x', the rest in the colour of their best value (dotted when not FINISHED)."""
    if style["is_best"]:
        ax.plot(xs, ys, color=BEST_COLOR, lw=2.8, zorder=5, marker="o", ms=4)
        if style["star_at"] is not None:
            ax.plot(
                xs[style["star_at"]], ys[style["star_at"]], marker="*", ms=17, color=BEST_COLOR, mec="black", zorder=6
            )
        return
    if r.stopped_early:
        ax.plot(xs, ys, color=STOPPED_COLOR, lw=1.3, ls="--", alpha=0.85, zorder=2)
        ax.plot(xs[-1], ys[-1], marker="x", ms=9, mew=2, color="black", zorder=4)
    else:
        ls = "-" if r.status == "FINISHED" else ":"
        ax.plot(xs, ys, color=style["color"], lw=1.6, ls=ls, alpha=0.9, zorder=3, marker="o", ms=3)


def _curve_legend(curves: list[TrialRow], best: TrialRow | None, cmap) -> list[Line2D]:
    n_stopped = sum(r.stopped_early for r in curves)
    handles = [
        Line2D(
            [],
            [],
            color=BEST_COLOR,
            lw=2.8,
            marker="*",
            ms=12,
            mec="black",
            label=f"best: {best.name} ({best.best:.4f}, epoch {best.best_epoch})" if best else "best",
        )
    ]
    if len(curves) - n_stopped - (best is not None and not best.stopped_early) > 0:
        handles.append(
            Line2D([], [], color=cmap(0.6), lw=1.6, marker="o", ms=3, label="ran its budget (colour = best value)")
        )
    if n_stopped:
        handles.append(
            Line2D(
                [],
                [],
                color=STOPPED_COLOR,
                ls="--",
                marker="x",
                mec="black",
                mew=2,
                ms=8,
                label=f"stopped by ASHA ({n_stopped})",
            )
        )
    if any(r.status != "FINISHED" for r in curves):
        handles.append(Line2D([], [], color=cmap(0.6), ls=":", label="failed / killed / running"))
    return handles


def learning_curves_png(
    rows: list[TrialRow], path: Path, max_epochs: int | None = None, val_loss: Mapping[str, list] | None = None
) -> Path:
    """val_macro_f1 per epoch of every trial (and val_loss beside it when given): trials that ran the
    budget in a colour of their best value, ASHA-stopped ones dashed grey ending in an 'x', the best trial
    thick red with a star at its best epoch. `rows` come best first (analysis.reading.runs.trial_rows)."""
    if any(r.history is None for r in rows):
        raise ValueError("rows without their history: pass them through analysis.reading.runs.with_histories")
    curves = [r for r in rows if r.history]
    if not curves:
        return _message_png(path, "learning curves", f"no trial has reported {OBJECTIVE_KEY} yet")
    losses = {k: v for k, v in (val_loss or {}).items() if v}
    with_loss = any(r.run_id in losses for r in curves)
    fig, axes = plt.subplots(
        1, 2 if with_loss else 1, figsize=(14 if with_loss else 8.5, 6), squeeze=False, layout="constrained"
    )
    ax_f1, ax_loss = axes[0][0], axes[0][1] if with_loss else None
    best = next((r for r in rows if r.best == r.best), None)
    finite = [r.best for r in curves if r.best == r.best and not r.stopped_early]
    lo = min(finite, default=0)
    norm = plt.Normalize(lo, max(finite) if len(set(finite)) > 1 else lo + 1e-9)
    cmap = plt.get_cmap("viridis")
    n_epochs = max(max_epochs or 0, *(len(r.history) for r in curves), *(int(s) for v in losses.values() for s, _ in v))
    for r in sorted(curves, key=lambda r: r is best):  # best drawn last, on top
        style = {
            "is_best": r is best,
            "color": cmap(norm(r.best)) if r.best == r.best else STOPPED_COLOR,
            "star_at": r.history.index(r.best) if r is best else None,
        }
        _draw_curve(ax_f1, r, list(range(1, len(r.history) + 1)), r.history, style)
        if with_loss and r.run_id in losses:
            pts = sorted(losses[r.run_id])
            _draw_curve(ax_loss, r, [s for s, _ in pts], [v for _, v in pts], {**style, "star_at": None})
    for ax, metric in ((ax_f1, OBJECTIVE_KEY), (ax_loss, LOSS)):
        if ax is None:
            continue
        ax.set(xlabel="epoch", ylabel=metric, xlim=(0.7, n_epochs + 0.3))
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if max_epochs:
            ax.axvline(max_epochs, color="black", lw=0.8, ls=":", alpha=0.6)
    ax_f1.set_title(
        f"{OBJECTIVE_KEY} per epoch, {len(curves)} trials" + (f" (budget {max_epochs} epochs)" if max_epochs else "")
    )
    if ax_loss is not None:
        ax_loss.set_title(f"{LOSS} per epoch")
    handles = _curve_legend(curves, best, cmap)
    fig.legend(
        handles=handles, loc="outside lower center", ncol=len(handles) if with_loss else 2, fontsize=9, frameon=False
    )
    if len(finite) > 1:
        sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
        fig.colorbar(sm, ax=list(axes[0]), pad=0.01, fraction=0.03).set_label(f"best {OBJECTIVE_KEY}")
    return _save(fig, path)


# ---------------------------------------------------------------- Optuna's plots


def _plain_importance(study: optuna.Study, title: str):
    """A barh of param_importances: the fallback when Optuna's own plot fails."""
    imp = param_importances(study)
    fig, ax = plt.subplots()
    names = list(imp)[::-1]
    ax.barh(names, [imp[k] for k in names], color="#4c72b0")
    for i, k in enumerate(names):
        ax.text(imp[k], i, f" {imp[k]:.2f}", va="center")
    ax.set(xlabel="importance (share of variance explained)", title=title)
    return fig, ax


def importance_png(study: optuna.Study, skipped: dict[str, str], path: Path) -> Path:
    """Optuna's fANOVA importance bar chart (plot_param_importances), a plain barh if that fails."""
    why = too_few(study)
    if why:
        return _message_png(path, "hyper-parameter importance (fANOVA)", why)
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    n, n_params = len(study.trials), len(study.trials[0].distributions)
    title = f"hyper-parameter importance for {OBJECTIVE_KEY} (fANOVA, {n} trials)"
    if n < 2 * n_params:  # 8 trials over 7 params: noise params outrank a param that drives the objective
        title += f"\nfew trials for {n_params} params: a rough ranking"
    with matplotlib.rc_context(), warnings.catch_warnings():  # optuna sets the ggplot style globally
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        before = set(plt.get_fignums())
        try:
            ax = optuna.visualization.matplotlib.plot_param_importances(
                study, evaluator=evaluator, target_name=OBJECTIVE_KEY
            )
            fig = ax.figure
            ax.set_title(title, loc="left")
            legend = ax.get_legend()
            if legend:
                legend.remove()
        except Exception as e:  # e.g. a future optuna changing the plot
            warnings.warn(
                f"optuna's importance plot failed ({type(e).__name__}: {e}); drawing a plain one", stacklevel=2
            )
            for num in set(plt.get_fignums()) - before:  # optuna's half-drawn figure, not the caller's
                plt.close(num)
            fig, ax = _plain_importance(study, title)
        fig.set_size_inches(9, max(3.5, 0.42 * len(ax.get_yticks()) + 2.2))
        note = _skipped_note(skipped)
        if note:
            fig.text(0.01, 0.01, note, fontsize=7, color="#555555", va="bottom")
        fig.tight_layout(rect=(0, 0.06 if note else 0, 1, 1))
        return _save(fig, path)


def parallel_png(study: optuna.Study, skipped: dict[str, str], path: Path) -> Path:
    """Optuna's parallel coordinate plot, one line per trial coloured by its objective value; each axis on
    the scale of its logged distribution (log for a log-searched param)."""
    why = too_few(study)
    if why:
        return _message_png(path, "parallel coordinates", why)
    n_params = len(study.trials[0].distributions)
    shades = np.linspace(0.3, 1.0, 256)  # optuna's "Blues" fades the worst trials to white: start it at 30 %
    if study.direction == optuna.study.StudyDirection.MINIMIZE:
        shades = shades[::-1]  # as optuna's "Blues_r": darker = better either way
    with matplotlib.rc_context(), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = optuna.visualization.matplotlib.plot_parallel_coordinate(study, target_name=OBJECTIVE_KEY)
        fig = ax.figure
        fig.set_size_inches(max(10.0, 1.25 * n_params + 4), 6.2)
        for lc in ax.collections:
            lc.set_cmap(ListedColormap(plt.get_cmap("Blues")(shades)))
            lc.set_linewidth(1.8)
        ax.set_title(
            f"parallel coordinates: {len(study.trials)} trials, colour = {OBJECTIVE_KEY} (darker = better)", y=1.03
        )
        for label in ax.get_xticklabels():
            label.set(rotation=30, ha="right", fontsize=9)
        for other in fig.axes:
            other.tick_params(axis="y", labelsize=8)
        note = _skipped_note(skipped)
        if note:
            fig.text(0.01, 0.01, note, fontsize=7, color="#555555", va="bottom")
        bottom = 0.2 if note else 0.16
        ax.set_position([0.08, bottom, 0.8, 0.88 - bottom])  # moves optuna's twin axes too
        for lc in ax.collections:
            if lc.colorbar is not None:
                lc.colorbar.ax.set_box_aspect(None)
                lc.colorbar.ax.set_position([0.93, bottom, 0.012, 0.88 - bottom])
        return _save(fig, path)
