"""What a study's record says: trials, confirmation, scores, tables, figures and evaluations.

Reads MLflow and computes; writes nothing to MLflow (a figure or an evaluation goes to a local folder), so
any of it can run against a study that others are reading too.
"""
