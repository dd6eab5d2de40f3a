"""Credentials for the tracking server stay out of artsweep: MLflow's client reads them itself, for every request,
from MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD or ~/.mlflow/credentials, and nothing here logs the
environment or a request's headers. A tracking URI is copied into the study's settings (study/settings.json),
printed summaries and error texts, so one that holds a password is refused; a server that refuses the
credentials (401) or a write (403) stops the study before Ray starts, with one line that names the user only.
Ray's local workers inherit the driver's environment; nothing is passed through runtime_env, which the
dashboard shows."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from mlflow.utils.credentials import read_mlflow_creds

from trainables.tracking.retry import http_status

CREDENTIAL_VARS = "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLflow's ~/.mlflow/credentials)"


class CredentialsError(ConnectionError):
    """The tracking store cannot be used with these credentials (or this URI): one line saying what to do, with
    no password in it. A ConnectionError, so that every command that checks the store prints it as one line."""


def check_uri(uri: str | None) -> None:
    """Refuse `uri`, or MLFLOW_TRACKING_URI (which MLflow and every process started here read), when it holds
    credentials that belong in the environment: a password in any URI, a user name in an http(s) one (requests
    would send it instead of MLflow's credentials)."""
    for name, value in (("--mlflow-uri", uri), ("MLFLOW_TRACKING_URI", os.environ.get("MLFLOW_TRACKING_URI"))):
        problem = _credentials_in(value or "")
        if problem:
            raise CredentialsError(f"{name} {problem}")


def _credentials_in(uri: str) -> str | None:
    parts = urlsplit(uri)
    if "@" not in parts.netloc or (parts.password is None and parts.scheme not in ("http", "https")):
        return None  # e.g. postgresql://study@db/mlflow: the database driver finds the password (PGPASSWORD)
    bare = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    if parts.scheme in ("http", "https"):
        fix = f"use {bare} and put the user and password in {CREDENTIAL_VARS}, which MLflow's client reads"
    else:
        fix = "give the password the database driver's own way (PostgreSQL: PGPASSWORD or ~/.pgpass)"
    return (
        f"holds credentials ({parts.username or ''}{':***' if parts.password is not None else ''}@...): they would "
        f"be copied into the study's settings, printed lines and error texts; {fix}"
    )


def refusal(uri: str, error: BaseException, experiment: str = "") -> CredentialsError | None:
    """The one line for a server that refused these credentials (401) or this user a write to `experiment`
    (403), else None."""
    status = http_status(error)
    if status not in (401, 403):
        return None
    user = read_mlflow_creds().username
    if status == 401:
        who = f"the credentials of user {user!r}" if user else "a request without credentials"
        return CredentialsError(f"MLflow at {uri} refused {who} (401): set {CREDENTIAL_VARS} to a user of that server")
    what = f"writes to experiment {experiment!r}" if experiment else "this call"
    return CredentialsError(
        f"MLflow at {uri} refused user {user!r} {what} (403): ask its admin for EDIT (or MANAGE) on the "
        "experiment, or use another --experiment or user"
    )
