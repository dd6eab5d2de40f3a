"""analysis.reading.runs and analysis.leaderboard on a SQLite store holding a study written as tune.py writes one.

The reference is the definition: each trial's best, best epoch and epochs from its full val_macro_f1 history
(get_metric_history), trials ranked by OBJECTIVE.sort_key in search_runs' order. benchmarks/leaderboard.py
writes its 1,000-trial study with log_study and checks it against history_ranking too.
"""

import math
import random

import pandas as pd
import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from analysis import leaderboard
from analysis.publishing.artifacts import LEADERBOARD
from analysis.reading import plot_figures, runs
from analysis.reading.board import WIDTH
from trainables.metrics import BEST_KEY, OBJECTIVE, OBJECTIVE_KEY
from trainables.tracking.mlflow_runs import STUDY_TAG, SUPERSEDED_TAG

pytestmark = pytest.mark.unit

EXPERIMENT = "lb-test"
OTHER_METRICS = (
    "val_loss",
    "train_loss",
    "val_accuracy",
    "val_top5",
    "val_weighted_f1",
    "lr",
    "time_train_s",
    "time_val_s",
)  # per epoch beside val_macro_f1, as trials log them
LONG_ARCH = "vit_base_patch16_clip_224.openai_ft_in12k_in1k"  # longer than a default view's cell


def synthetic_trials(n: int, seed: int = 0, max_epochs: int = 6, decimals: int | None = 2) -> list[dict]:
    """Trials as a study ends them: half ran the budget, the others were stopped by ASHA after 1, 2 or 4
    epochs; values rounded to `decimals` tie across and within trials (None: no ties)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        epochs = max_epochs if rng.random() < 0.5 else rng.choice([e for e in (1, 2, 4) if e < max_epochs] or [1])
        top = rng.uniform(0.2, 0.9)
        hist = [min(1.0, top * (1 - 0.5**e) + rng.uniform(-0.05, 0.05)) for e in range(1, epochs + 1)]
        out.append(
            {
                "name": f"run_trial_{rng.getrandbits(20):05x}_{i:05d}",
                "family": ("scratch", "cnn")[i % 2],
                "arch": ("simple_cnn", "deep_cnn", "resnet18")[i % 3],
                "status": "FINISHED",
                "ended": True,
                "stopped_early": epochs < max_epochs,
                "history": [round(v, decimals) for v in hist] if decimals is not None else hist,
                "params": {
                    "lr": repr(10 ** rng.uniform(-5, -2)),
                    "batch_size": str(rng.choice([32, 64, 128])),
                    "aug_strength": repr(rng.uniform(0, 1)),
                    "sampler_power": repr(rng.uniform(0, 1)),
                    "weight_decay": repr(10 ** rng.uniform(-6, -2)),
                    "dropout": repr(rng.uniform(0, 0.5)),
                    "label_smoothing": repr(rng.uniform(0, 0.2)),
                    "mixup_prob": repr(rng.uniform(0, 0.5)),
                    "loss_weight_power": repr(rng.uniform(0, 1)),
                    "width": str(rng.choice([0.25, 0.5, 1.0])),
                },
            }
        )
    return out


def recorded_best_epoch(history: list[float]) -> int | None:
    """The recorder's best_epoch tag: the last epoch that improved the running best (OBJECTIVE.better)."""
    best, tag = math.nan, None
    for epoch, v in enumerate(history, 1):
        if OBJECTIVE.better(v, best):
            best, tag = v, epoch
    return tag


def log_trial(client: MlflowClient, experiment_id: str, parent_run_id: str, t: dict, start_ms: int) -> str:
    """One trial's child run as the driver, recorder and CloseTrialRuns write it: tags, params, per epoch
    val_macro_f1, the running best BEST_KEY and the other metrics a trial logs; best_epoch / epochs_reached /
    stopped_early tags. Keys of `t` beyond synthetic_trials': best_key=False (a run from before BEST_KEY),
    best_epoch (a stale tag), superseded, old_shape (family and arch as tags, not params)."""
    what = {"family": t["family"], "arch": t["arch"]}
    run = client.create_run(
        experiment_id,
        start_time=start_ms,
        tags={
            MLFLOW_PARENT_RUN_ID: parent_run_id,
            MLFLOW_RUN_NAME: t["name"],
            "trial_id": t["name"][-11:],
            "node_id": "f" * 56,
            "decode_cache": "e37140413e476fbb47d8",
            "mlflow.note.content": "a trial",
            **(what if t.get("old_shape") else {}),
            **({SUPERSEDED_TAG: "true"} if t.get("superseded") else {}),
        },
    )
    params = {**({} if t.get("old_shape") else what), **t["params"]}
    metrics, best = [Metric("time_setup_s", 3.0, start_ms, 1), Metric("time_import_s", 4.0, start_ms, 1)], math.nan
    for epoch, v in enumerate(t["history"], 1):
        best = v if OBJECTIVE.better(v, best) else best
        ts = start_ms + 1000 * epoch
        metrics += [Metric(OBJECTIVE_KEY, v, ts, epoch)] + [Metric(k, 2 - v, ts, epoch) for k in OTHER_METRICS]
        metrics += [Metric(BEST_KEY, best, ts, epoch)] if t.get("best_key", True) else []
    best_epoch = t.get("best_epoch", recorded_best_epoch(t["history"]))
    tags = ([RunTag("best_epoch", str(best_epoch))] if best_epoch else []) + (
        [RunTag("stopped_early", str(t["stopped_early"]).lower()), RunTag("epochs_reached", str(len(t["history"])))]
        if t["ended"]
        else []
    )
    client.log_batch(run.info.run_id, metrics=metrics, params=[Param(k, v) for k, v in params.items()], tags=tags)
    if t["status"] != "RUNNING":
        client.set_terminated(run.info.run_id, t["status"], end_time=start_ms + 1000 * (len(t["history"]) + 1))
    return run.info.run_id


def log_study(client: MlflowClient, experiment_id: str, trials: list[dict], start_ms: int = 1_700_000_000_000) -> str:
    """The parent run of a study (tagged as tune.py tags it) and a child run per trial; the parent's id."""
    parent = client.create_run(experiment_id, start_time=start_ms, tags={STUDY_TAG: "1", MLFLOW_RUN_NAME: "study-x"})
    for i, t in enumerate(trials):
        log_trial(client, experiment_id, parent.info.run_id, t, start_ms + 60_000 * (i + 1))
    return parent.info.run_id


def history_ranking(client: MlflowClient, experiment_id: str, parent_run_id: str, only=None) -> list[tuple]:
    """[(run_id, best, best_epoch, epochs)] best first, from every trial's full history (one request each):
    the definition trial_rows must agree with. `only`: these run ids (a subset keeps its relative order)."""
    found = client.search_runs(
        [experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'", max_results=50_000
    )
    out = []
    for r in found:
        if r.data.tags.get(SUPERSEDED_TAG) == "true" or (only is not None and r.info.run_id not in only):
            continue
        hist = sorted(client.get_metric_history(r.info.run_id, OBJECTIVE_KEY), key=lambda m: m.step)
        values = [m.value for m in hist]
        i = values.index(OBJECTIVE.best(values)) if values else -1
        out.append((r.info.run_id, values[i] if values else math.nan, hist[i].step if values else 0, len(values)))
    return sorted(out, key=lambda x: OBJECTIVE.sort_key(x[1]))


# ---------------------------------------------------------------- the study


def special_trials() -> list[dict]:
    """What a real study also holds: see each one's comment."""
    base = synthetic_trials(8, seed=7)
    base[0].update(name="never_reported", history=[], status="FAILED", stopped_early=False)
    base[1].update(name="still_running", history=[0.5, 0.61], status="RUNNING", ended=False)
    base[2].update(name="superseded_dup", history=[0.99], superseded=True)  # would rank first
    base[3].update(name="before_best_key", history=[0.3, 0.72, 0.7], best_key=False, old_shape=True)
    base[4].update(name="tag_behind", history=[0.4, 0.5, 0.8], best_epoch=2, status="RUNNING", ended=False)
    base[5].update(name="tied_last", history=[0.66, 0.6, 0.66], stopped_early=False)  # best_epoch: the first
    base[6].update(
        name="long_arch_all_study",
        family="transformers",
        arch=LONG_ARCH,
        params={  # `--family all`
            f"transformers.{k}": v for k, v in {**base[6]["params"], "arch": LONG_ARCH}.items()
        },
    )
    base[7].update(name="tie_with_tied_last", history=[0.66])
    return base


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lb")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment(EXPERIMENT, artifact_location=(tmp / "artifacts").as_uri())
    trials = synthetic_trials(22) + special_trials()
    parent = log_study(client, exp, trials)
    return {
        "client": client,
        "uri": uri,
        "exp": exp,
        "parent": parent,
        "trials": {t["name"]: t for t in trials},
        "tmp": tmp,
    }


@pytest.fixture(scope="module")
def rows(study):
    return runs.trial_rows(study["client"], study["exp"], study["parent"])


def test_one_search_ranks_as_the_histories_do(study, rows):
    expected = history_ranking(study["client"], study["exp"], study["parent"])
    got = [(r.run_id, r.best, r.best_epoch, r.epochs) for r in rows]
    assert [g[0] for g in got] == [e[0] for e in expected]
    for g, e in zip(got, expected):
        assert g[2:] == e[2:] and (g[1] == e[1] or math.isnan(g[1]) and math.isnan(e[1])), (g, e)
    by_name = {r.name: r for r in rows}
    assert len(rows) == len(study["trials"]) - 1 and "superseded_dup" not in by_name
    assert rows[-1].name == "never_reported" and rows[-1].epochs == 0 and math.isnan(rows[-1].best)
    assert (by_name["tied_last"].best_epoch, by_name["tag_behind"].best_epoch) == (1, 3)
    assert by_name["before_best_key"].best == 0.72 and by_name["still_running"].status == "RUNNING"
    assert (by_name["before_best_key"].arch, by_name["long_arch_all_study"].arch) == (
        study["trials"]["before_best_key"]["arch"],
        LONG_ARCH,
    )  # a tag in older runs; `<family>.arch` in `all`
    assert all(r.history is None for r in rows)


def test_pages_of_search_runs_are_joined_in_order(study, rows, monkeypatch):
    monkeypatch.setattr(runs, "PAGE", 4)
    assert list(map(repr, runs.trial_rows(study["client"], study["exp"], study["parent"]))) == list(map(repr, rows))


def test_histories_are_fetched_for_the_rows_asked_only(study, rows):
    drawn = runs.with_histories(study["client"], rows[:3] + rows[-1:])
    assert [r.history for r in drawn] == [study["trials"][r.name]["history"] for r in drawn]
    assert rows[0].history is None  # the ranked rows stay as they were
    with pytest.raises(ValueError, match="with_histories"):
        plot_figures.learning_curves_png(rows, study["tmp"] / "curves.png")


def run_board(study, capsys, *args) -> list[str]:
    assert leaderboard.main(["--experiment", EXPERIMENT, "--mlflow-uri", study["uri"], "--no-log", *args]) == 0
    return capsys.readouterr().out.splitlines()


def at(lines: list[str], first_column: str) -> int:
    """Index of the first table header starting with `first_column`."""
    return next(i for i, line in enumerate(lines) if line.split()[:1] == [first_column])


def test_default_board_fits_120_columns_with_every_trial(study, rows, capsys):
    lines = run_board(study, capsys)
    assert max(map(len, lines)) <= WIDTH
    head = at(lines, "rank")
    assert lines[head].split()[:7] == ["rank", "trial", "family", "arch", OBJECTIVE_KEY, "epoch", "state"]
    board = lines[head + 1 : head + 1 + len(rows)]
    assert [line.split()[1] for line in board] == [r.name for r in rows]  # best first, ties in order
    never = board[-1].split()
    assert never[1] == "never_reported" and never[4:7] == ["-", "-", "FAILED"]
    tied = [line.split() for line in board if line.split()[1] in ("tied_last", "tie_with_tied_last")]
    assert [t[4] for t in tied] == ["0.6600", "0.6600"]
    assert any("ASHA" in line.split() for line in board) and "best per family:" in lines
    assert any(LONG_ARCH[:10] in line and LONG_ARCH not in line for line in board)  # cut, not widened


def test_wide_and_chosen_columns(study, rows, capsys):
    wide = run_board(study, capsys, "--wide")
    assert max(map(len, wide)) > WIDTH
    assert {"best_epoch", "stopped_early", "weight_decay", "run_id"} <= set(wide[at(wide, "rank")].split())
    picked = run_board(study, capsys, "--columns", "trial,dropout,lr")
    head = at(picked, "trial")
    assert picked[head].split() == ["trial", "dropout", "lr"]
    first = picked[head + 1].split()
    assert first[0] == rows[0].name and float(first[1]) == pytest.approx(float(rows[0].param("dropout")), rel=1e-2)
    qualified = next(line.split() for line in picked if line.startswith("long_arch_all_study"))
    assert len(qualified) == 3  # `transformers.lr` answers for lr
    with pytest.raises(SystemExit) as e:
        leaderboard.main(["--experiment", EXPERIMENT, "--mlflow-uri", study["uri"], "--columns", "nope"])
    assert e.value.code == 2 and "nope" in capsys.readouterr().err


def test_full_table_files_and_the_parent_runs_artifacts(study, rows, capsys, tmp_path):
    csv, md = tmp_path / "board.csv", tmp_path / "board.md"
    run_board(study, capsys, "--csv", str(csv), "--markdown", str(md))
    table = pd.read_csv(csv)
    assert list(table["run_id"]) == [r.run_id for r in rows]
    assert {"dropout", "transformers.dropout", "best_epoch", OBJECTIVE_KEY} <= set(table.columns)
    text = md.read_text()
    header = [c.strip() for c in text.splitlines()[2].split("|")]
    assert text.startswith("## Trials (best first)") and {"dropout", "transformers.dropout", "run_id"} <= set(header)
    assert all(r.name in text for r in rows)
    assert leaderboard.main(["--experiment", EXPERIMENT, "--mlflow-uri", study["uri"]]) == 0
    logged = {f.path for f in study["client"].list_artifacts(study["parent"], LEADERBOARD)}
    assert logged == {"leaderboard/leaderboard.csv", "leaderboard/leaderboard.md"}
