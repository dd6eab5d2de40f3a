"""Where a trial's files sit in its MLflow child run (shared by the recorder, checkpoint and analysis; no imports)."""

FILENAME = "model.pt"
ARTIFACT = f"checkpoint/{FILENAME}"  # each trial's best checkpoint
