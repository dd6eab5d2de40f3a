"""The study's closing steps, run once its phases are over (sweep.study.Study.run), before its summary prints.

1. read its trials back from MLflow (retrying while the server restarts, at most RETRY_S);
2. tag and draw a Pareto search's front (analysis.publishing.pareto);
3. score its winner (analysis.reading.confirm.best_run) on the test split, on this machine's copy of the data;
4. crown it (analysis.publishing.winner: tag, test metrics, logged model, links);
5. score each final fit on the test split and register it as the model's champion (analysis.publishing.champion);
6. with --export onnx, export the champion (else the winner) to ONNX, gate it and register it (onnx_model).
A step that fails leaves a warning saying how to do it later; the study's record stands without it. What
happened comes back as a Closed, which sweep.summary prints: the summary itself never writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from shlex import quote

from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from analysis.publishing import onnx_model, pareto, winner
from analysis.publishing.champion import crown_final
from analysis.publishing.models import CHAMPION, model_name, quiet_mlflow
from analysis.reading.confirm import best_run, finals
from analysis.reading.evaluation import test_scores
from analysis.reading.runs import TrialRow, trial_rows
from trainables.config import RunSettings
from trainables.data.dataset import DataError
from trainables.tracking.retry import retrying

RETRY_S = 60  # how long to wait for MLflow to answer before giving up on the closing steps


@dataclass
class Crowned:
    test: dict[str, float]  # the winner's test metrics ({} when its images are not on this machine)
    images: int  # test images scored
    model_id: str | None  # its checkpoint's logged model


@dataclass
class Champion:
    final: TrialRow
    version: ModelVersion | None = None  # the registered version, now @champion (None: see warning)
    test: dict[str, float] = field(default_factory=dict)  # its test metrics, with _ci_low / _ci_high
    previous: str | None = None  # the version that was @champion before, now @previous
    warning: str = ""  # why it was not scored and registered, and how to do it later


@dataclass
class Closed:
    rows: list[TrialRow] = field(default_factory=list)  # the study's trials, best first (trial_rows)
    unreachable: str = ""  # the error's type when MLflow did not answer: nothing else was done
    best: TrialRow | None = None  # the study's winning run (None: no trial reported a result)
    crowned: Crowned | None = None  # None: not crowned (see warnings)
    warnings: list[str] = field(default_factory=list)  # about scoring and crowning the winner
    champions: list[Champion] = field(default_factory=list)  # one per final fit
    export: str = ""  # --export: what became of the winner's (or champion's) export, as the summary's line


def close(s: RunSettings) -> Closed:
    """Every closing step of study `s` (the module docstring); never raises for MLflow or the data."""
    client = MlflowClient(s.mlflow_uri)
    try:
        rows = retrying(
            lambda: trial_rows(client, s.mlflow_experiment_id, s.parent_run_id),
            "reading the study's trials",
            timeout_s=RETRY_S,
        )
    except Exception as e:  # noqa: BLE001 - the study is done; only its closing steps cannot run
        return Closed(unreachable=type(e).__name__)
    try:
        with quiet_mlflow():
            rows = pareto.publish(client, s, rows)
    except Exception as e:  # noqa: BLE001 - the front can be drawn later; the study's record stands
        warnings = [f"warning: could not tag and draw the Pareto front ({type(e).__name__}: {str(e)[:200]})"]
    else:
        warnings = []
    closed = Closed(rows=rows, best=best_run(rows), warnings=warnings)
    if closed.best is None:
        return closed
    closed.crowned = _crown(client, s, closed.best, closed.warnings)
    closed.champions = [_champion(client, s, r) for r in finals(rows)]
    if s.export:
        closed.export = _export(client, s, closed)
    return closed


def _export(client: MlflowClient, s: RunSettings, closed: Closed) -> str:
    """--export onnx: the champion (a final fit registered), else the winner, exported, gated and registered as a
    version tagged format=onnx; the summary's line says what happened and how to do it again."""
    champion = next((c for c in reversed(closed.champions) if c.version is not None), None)
    row = champion.final if champion else closed.best
    again = (
        f"python -m analysis.export --experiment {quote(s.experiment)} --mlflow-uri {quote(s.mlflow_uri)} "
        f"--run {row.run_id} --format onnx"
    )
    try:
        with quiet_mlflow():
            mv = onnx_model.export_and_register(client, row.run_id, model_name(s.experiment))
    except onnx_model.GateFailed as e:
        return f"export: {row.name} as ONNX failed its gate, not registered: {e}"
    except Exception as e:  # noqa: BLE001 - the study's record stands; say how to export later
        return f"warning: could not export {row.name} to ONNX ({type(e).__name__}: {str(e)[:200]}); later: {again}"
    return (
        f"export: {row.name} as ONNX ({mv.tags.get('exporter', '?')} exporter) passed its gate on "
        f"{mv.tags.get('gate_images', '?')} validation images (top-1 agreement {mv.tags.get('gate_top1_agreement')}, "
        f"max probability difference {mv.tags.get('gate_max_prob_diff')}); registered models:/{mv.name}/{mv.version} "
        "tagged format=onnx"
    )


def _crown(client: MlflowClient, s: RunSettings, best: TrialRow, warnings: list[str]) -> Crowned | None:
    """Score the winner on the test split and crown it; None (and a warning) when it could not be marked."""
    try:
        test, n = test_scores(client, best, s.parent_run_id)
    except DataError as e:  # the images are on the workers' nodes only: the winner still gets its tag and model
        warnings.append(
            f"warning: no test metrics for the winner here ({e}); python -m analysis.evaluate scores it where the "
            "data is"
        )
        test, n = {}, 0
    except Exception as e:  # noqa: BLE001 - the tracking server went away after the study: its record stands
        warnings.append(
            f"warning: could not score the winner ({type(e).__name__}: {str(e)[:200]}); "
            f"python -m analysis.evaluate --experiment {quote(s.experiment)} scores and marks it"
        )
        return None
    try:
        with quiet_mlflow():
            model_id = winner.crown(client, s.mlflow_experiment_id, s.parent_run_id, best, test, s.dataset)
    except Exception as e:  # noqa: BLE001 - the study is done; only its winner's marks are missing
        warnings.append(
            f"warning: could not mark the winner in MLflow ({type(e).__name__}: {str(e)[:200]}); "
            f"python -m analysis.evaluate --experiment {quote(s.experiment)} marks it"
        )
        return None
    return Crowned(test, n, model_id)


def _champion(client: MlflowClient, s: RunSettings, final: TrialRow) -> Champion:
    """Score the final fit on the test split and register it as the champion, or say why not."""
    try:
        with quiet_mlflow():
            mv, test, previous = crown_final(client, s.parent_run_id, final, s.experiment, show_progress=False)
    except Exception as e:  # noqa: BLE001 - no data here, or the server went away: say how to do it later
        return Champion(
            final,
            warning=(
                f"warning: could not score and register the final fit {final.name} ({type(e).__name__}: "
                f"{str(e)[:200]}); python -m analysis.registry --experiment {quote(s.experiment)} --trial "
                f"{final.run_id} --alias {CHAMPION} registers it"
            ),
        )
    return Champion(final, mv, test, previous)
