"""Reads a study back from MLflow (never from Ray's result folders) to rank, report and register."""
