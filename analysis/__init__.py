"""Reads a study back from MLflow (never from Ray's result folders) to rank, report and register.

The commands (`python -m analysis.<name>`) sit here, over two layers: analysis.reading only reads MLflow and
computes; analysis.publishing writes to it. analysis.serving is the served model, which imports neither.
"""
