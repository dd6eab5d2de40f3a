"""Where a study's wall time goes: training steps vs validation vs Ray/MLflow overhead, per trial.

python benchmarks/study_overhead.py --experiment artsweep-scratch [--mlflow-uri sqlite:///mlflow.db]

Reads the latest study from MLflow. Per trial: `life` = child run start (trial driver up) to end
(Tune ended the trial); `train`, `val` and `setup` (data + model in the worker) are what the workers
measured; `overhead` = life - train - val - setup: worker-group start-up and teardown, the per-epoch
report round-trip, MLflow logging and checkpointing.
"""
import argparse

from mlflow.tracking import MlflowClient

from analysis.runs import latest_study, trial_rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", required=True)
    p.add_argument("--mlflow-uri", default="sqlite:///mlflow.db")
    a = p.parse_args()
    client = MlflowClient(a.mlflow_uri)
    exp, study = latest_study(client, a.experiment)
    totals = dict(life=0.0, train=0.0, val=0.0, setup=0.0)
    print(f"{'trial':<22}{'epochs':>7}{'life s':>9}{'train s':>9}{'val s':>8}{'setup s':>9}{'overhead s':>12}")
    for r in trial_rows(client, exp.experiment_id, study.info.run_id):
        info = client.get_run(r.run_id).info
        life = ((info.end_time or info.start_time) - info.start_time) / 1000
        train = sum(m.value for m in client.get_metric_history(r.run_id, "time_train_s"))
        val = sum(m.value for m in client.get_metric_history(r.run_id, "time_val_s"))
        setup = max((m.value for m in client.get_metric_history(r.run_id, "time_setup_s")), default=0.0)
        for k, v in dict(life=life, train=train, val=val, setup=setup).items():
            totals[k] += v
        print(f"{r.name:<22}{r.epochs:>7}{life:>9.1f}{train:>9.1f}{val:>8.1f}{setup:>9.1f}{life - train - val - setup:>12.1f}")
    wall = ((study.info.end_time or 0) - study.info.start_time) / 1000
    over = totals["life"] - totals["train"] - totals["val"] - totals["setup"]
    print(f"\nstudy wall {wall:.0f} s (parent run); summed trial lives {totals['life']:.0f} s")
    for k in ("train", "val", "setup"):
        print(f"  {k:<9}{totals[k]:7.1f} s  {100 * totals[k] / totals['life']:5.1f} % of trial time")
    print(f"  {'overhead':<9}{over:7.1f} s  {100 * over / totals['life']:5.1f} % of trial time "
          "(worker start-up/teardown, reports, MLflow, checkpoints)")


if __name__ == "__main__":
    main()
