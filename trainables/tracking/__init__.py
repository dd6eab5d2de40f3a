"""The study's MLflow record: parent and child runs (mlflow_runs), writes that survive an outage (outbox), the trial's
per-epoch recorder (recorder), what the UI shows (mlflow_ui), system metrics (sysmetrics), artifact names, which
failures are retried (retry) and the credentials, which stay out of URIs and records (credentials)."""
