"""One real study end to end: local Ray cluster, Optuna + ASHA, 2 trials at a time, a real `mlflow server`.

The dashboard is off, so Ray's own PlacementGroupCleaner cannot free the workers of a trial ASHA
stopped: without artsweep's ReleaseTrainWorkers the third trial waits for resources forever and this
test hits its timeout (ray-project/ray#54305).
"""

import pytest

from analysis.reading.confirm import best_run, searched
from analysis.reading.runs import trial_rows, with_histories
from tests.conftest import STUDY_PINS
from trainables.tracking.mlflow_runs import latest_study

pytestmark = pytest.mark.e2e


def _ray_output(out: str) -> str:
    """The study's log of Ray's output (Tune's tables, the workers' logs): the file its console names."""
    return open(
        next(x.split("Ray's output: ")[1].split(" (")[0] for x in out.splitlines() if "Ray's output: " in x)
    ).read()


def test_study_completes_every_run_with_the_trials_output_in_rays_log(study):
    """The shared study's trials train in process (one worker each): their own output is in Ray's log (the
    study's log file; the console has artsweep's lines only) under the trainable's name, no Train worker group
    was started, and every run of the study ended FINISHED with no error recorded."""
    ray_log = _ray_output(study.out)
    assert "(run_trial pid=" in ray_log  # the trials' own output is in this file
    assert "RayTrainWorker" not in ray_log and "TrainController" not in ray_log
    exp, parent = latest_study(study.client, "e2e")
    runs = study.client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(runs) == 6 + 4 + 1  # the search, the confirmation runs and the final fit
    assert [
        (r.info.run_name, r.info.status, r.data.tags.get("error"))
        for r in runs
        if r.info.status != "FINISHED" or "error" in r.data.tags
    ] == []


def test_mlflow_holds_parent_and_every_trial_none_running(study):
    client = study.client
    exp, parent = latest_study(client, "e2e")
    assert parent.info.status == "FINISHED"
    rows = with_histories(client, searched(trial_rows(client, exp.experiment_id, parent.info.run_id)))
    assert len(rows) == 6  # the search's (confirmation and final fit: tests/test_phases_e2e.py)
    assert all(r.status == "FINISHED" for r in rows), [(r.name, r.status) for r in rows]
    assert all(r.epochs >= 1 and len(r.history) == r.epochs for r in rows)  # per-epoch history
    stopped = [r for r in rows if r.stopped_early]
    assert stopped, "ASHA stopped no trial"
    for r in stopped:
        run = client.get_run(r.run_id)
        assert int(run.data.tags["epochs_reached"]) < 4
    for r in rows:
        run = client.get_run(r.run_id)
        assert "trial_id" in run.data.tags
        assert {
            "family",
            "arch",
            "lr",
            "batch_size",
            "aug_strength",
            "sampler_power",
            "weight_decay",
            "label_smoothing",
        } <= set(run.data.params)
        for key in ("val_macro_f1", "val_accuracy", "val_top5", "val_weighted_f1", "val_loss", "train_loss"):
            assert len(client.get_metric_history(r.run_id, key)) == r.epochs, key
        assert [a.path for a in client.list_artifacts(r.run_id, "checkpoint")] == ["checkpoint/model.pt"]


def test_every_trial_run_records_its_nodes_use_and_its_speed(study):
    """MLflow's system-metrics monitors sample the trial's node; images/s is measured per epoch; the model's
    parameters and GFLOPs per image are tagged."""
    client = study.client
    exp, parent = latest_study(client, "e2e")
    for r in trial_rows(client, exp.experiment_id, parent.info.run_id):
        if r.phase == "final":  # no validation: its epochs are in epochs_reached
            r.epochs = int(client.get_run(r.run_id).data.tags["epochs_reached"])
        cpu = client.get_metric_history(r.run_id, "system/cpu_utilization_percentage")
        memory = client.get_metric_history(r.run_id, "system/system_memory_usage_megabytes")
        speed = client.get_metric_history(r.run_id, "train_images_per_s")
        assert len(cpu) == len(memory) == len(speed) == r.epochs
        assert all(0 <= m.value <= 100 for m in cpu) and any(m.value > 0 for m in cpu)
        assert all(m.value > 0 for m in memory + speed)
    # and what its model costs per image, whatever the device: the same for the same architecture and size
    costs = {}
    for r in trial_rows(client, exp.experiment_id, parent.info.run_id):
        tags, params = client.get_run(r.run_id).data.tags, client.get_run(r.run_id).data.params
        cost = (int(tags["model_params"]), float(tags["model_gflops"]))
        assert cost[0] > 1000 and cost[1] > 0
        assert costs.setdefault((params["arch"], params.get("width", "")), cost) == cost


def test_the_experiment_opens_as_model_training_with_a_description(study):
    """MLflow's UI shows a model-training experiment (not its GenAI view) that says what the study was."""
    exp, _ = latest_study(study.client, "e2e")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert "family `scratch`" in exp.tags["mlflow.note.content"] and "val_macro_f1" in exp.tags["mlflow.note.content"]


def _trials(study):
    exp, parent = latest_study(study.client, "e2e")
    return exp, parent, trial_rows(study.client, exp.experiment_id, parent.info.run_id)


def test_the_console_is_short_and_shows_every_trial_event(study):
    """tune.py in a pipe: artsweep's lines only (<= 80 for 6 trials, 4 confirmation runs and a final fit), one per
    trial event (re-runs: started and ended); Ray's output is in the log it names."""
    lines = study.out.splitlines()
    assert len(lines) <= 80, "\n".join(lines)
    _, _, rows = _trials(study)
    for r in rows:
        mine = [x for x in lines if f"] {r.name} " in x]
        assert sum(" started: " in x for x in mine) == 1, mine
        epochs = r.epochs if r.phase in ("recipe", "search") else 0  # re-runs go the whole way: no epoch lines
        assert [x.split(" epoch ")[1].split(":")[0] for x in mine if " epoch " in x and "/4:" in x] == [
            f"{e}/4" for e in range(1, epochs + 1)
        ], mine
        end = (
            "finished: no validation"
            if r.phase == "final"
            else "finished: best"
            if r.epochs == 4
            else "stopped by ASHA at rung 1 (epoch 1)"
        )
        assert sum(end in x for x in mine) == 1, (end, mine)
        assert r.phase == "final" or f"{r.best:.4f}" in mine[-1]
    text = _ray_output(study.out)
    assert "Trial status" in text and "(run_trial pid=" in text  # Tune's tables and the trials' logs
    for noise in (
        "Trial status",
        "(run_trial pid=",
        "core_worker",
        "TrainingReport",
        "Token authentication",
        "View run",
    ):
        assert noise not in study.out, noise
    assert "random init" in study.out and "pretrained" not in study.out  # --smoke trains from random init


def test_the_summary_lists_the_winners_own_knobs(study):
    _, _, rows = _trials(study)
    config = next(x for x in study.out.splitlines() if x.startswith("  config: "))
    shown = {kv.split("=")[0] for kv in config.removeprefix("  config: ").split()}
    assert shown == set(best_run(rows).params) - {"family", "arch", "seed"}


def test_mlflow_names_never_collide_and_the_winner_is_marked(study):
    """Checked through MlflowClient on the real `mlflow server`: what a user sees in the UI."""
    client = study.client
    exp, parent, rows = _trials(study)
    runs = client.search_runs([exp.experiment_id])
    for run in runs:
        params, metrics, tags = set(run.data.params), set(run.data.metrics), set(run.data.tags)
        assert not params & metrics and not params & tags, (run.info.run_name, params & (metrics | tags))
        assert "epoch" not in metrics
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]  # not the first study's
    winners = [r for r in children if r.data.tags.get("winner") == "true"]
    assert [w.info.run_id for w in winners] == [best_run(rows).run_id]
    won = winners[0]
    assert {"test_macro_f1", "test_accuracy", "test_loss"} <= set(won.data.metrics)
    assert not any(
        k.startswith("test_")
        for r in children
        if r is not won and r.data.tags["phase"] != "final"
        for k in r.data.metrics
    )  # the test split scores the winner and the final fit only
    parent = client.get_run(parent.info.run_id)
    assert parent.data.tags["winner_run_id"] == won.info.run_id
    assert f"(#/experiments/{exp.experiment_id}/runs/{won.info.run_id})" in parent.data.tags["mlflow.note.content"]
    for r in children:  # each trial says what it trained and how it ended
        note = r.data.tags["mlflow.note.content"]
        assert f"**{r.data.params['family']} / {r.data.params['arch']}**" in note or "Winner" in note
        assert "finished" in note or "stopped by ASHA" in note or "Winner" in note, note


def test_each_trial_run_reads_the_studys_split_as_a_dataset_input(study):
    client = study.client
    exp, parent, _ = _trials(study)
    split = {(d.dataset.name, d.dataset.digest) for d in client.get_run(parent.info.run_id).inputs.dataset_inputs}
    assert len(split) == 1
    for r in client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"):
        assert {(d.dataset.name, d.dataset.digest) for d in r.inputs.dataset_inputs} == split


def test_the_winners_checkpoint_is_a_logged_model_of_its_run(study, tmp_path):
    from trainables import checkpoint
    from trainables.tracking.artifacts import ARTIFACT

    client = study.client
    exp, _, rows = _trials(study)
    won = best_run(rows)
    models = [m for m in client.search_logged_models([exp.experiment_id]) if m.source_run_id == won.run_id]
    assert len(models) == 1 and {m.key for m in models[0].metrics} >= {"test_macro_f1", "test_accuracy"}
    clf = checkpoint.load(client.download_artifacts(won.run_id, ARTIFACT, str(tmp_path)))
    assert clf.epoch == won.best_epoch  # model.pt stays a plain loadable checkpoint beside it


def test_the_first_trials_are_the_familys_published_recipes(study, capsys):
    """scratch's recipes (seed 000's DeepCNN, then SimpleCNN) run before TPE proposes anything, tagged phase=recipe:
    their values, but for the knobs the study fixed with --set (also params of every trial)."""
    from analysis import leaderboard
    from search_spaces import FAMILIES

    exp, parent, _ = _trials(study)
    children = study.client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    runs = sorted(
        (r for r in children if r.data.tags["phase"] in ("recipe", "search")), key=lambda r: r.info.start_time
    )
    recipes = FAMILIES["scratch"].recipes
    first = runs[: len(recipes) + 1]  # 2 trials start at once: TPE's first may create its run a moment sooner
    got = [r for r in first if r.data.tags["phase"] == "recipe"]
    assert len(got) == len(recipes) == sum(r.data.tags["phase"] == "recipe" for r in runs)
    for run, recipe in zip(got, recipes):
        assert {k: run.data.params[k] for k in recipe} == {k: str(v) for k, v in {**recipe, **STUDY_PINS}.items()}
    later = sorted(r.data.tags["phase"] for r in children if r.data.tags["phase"] not in ("recipe", "search"))
    assert later == ["confirm"] * 4 + ["final"]  # then the confirmation runs and the final fit (test_phases_e2e)
    assert leaderboard.main(["--experiment", "e2e", "--mlflow-uri", study.uri, "--no-log"]) == 0
    ranking = capsys.readouterr().out.split("best per family:")[0]  # a recipe that won shows there again
    assert sum(f"{r.info.run_name} " in line and "recipe" in line for r in got for line in ranking.splitlines()) == len(
        recipes
    )
