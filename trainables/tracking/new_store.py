"""A new SQLite tracking store starts as a copy of an empty one MLflow built once per MLflow version.

MLflow builds a new SQLite store by running every schema migration since its first release (about 3-4 s on a
2-core machine, in every study that starts a store and every `mlflow server` started on a new file). The tables are
the same each time, so the first build is kept in this machine's cache (trainables.paths.cache_root) as
`mlflow-<version>-<schema head>.db`, made by MLflow's own table creation and migrations, with no experiment in it;
a new store is a copy of it. Opening the copy, MLflow checks that its schema is the head revision (and would refuse
one that is not) and makes the Default experiment itself, with this store's artifact root, as on a fresh file.

Anything unexpected (a read-only cache, an MLflow that builds stores differently) leaves the store to MLflow: the
copy is a speed-up, never a requirement. Callers hold sweep.preflight.store_lock, as for MLflow's own build.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from trainables.paths import cache_root, sqlite_file

log = logging.getLogger("artsweep")


def seed(uri: str) -> bool:
    """Put the empty store in place of a SQLite store that does not exist yet; True when it did. Other URIs (a
    server, PostgreSQL), an existing file, or any failure: False, and MLflow builds or opens the store as usual."""
    db = sqlite_file(uri)
    if db is None or db.exists():
        return False
    try:
        empty = template()
        db.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=db.parent, prefix=f".{db.name}.")
        os.close(fd)
        try:
            shutil.copyfile(empty, tmp)
            os.link(tmp, db)  # never over a store another process made meanwhile
        finally:
            os.unlink(tmp)
        return True
    except Exception as e:  # noqa: BLE001 - a speed-up only: MLflow builds the store instead
        log.debug("artsweep: new MLflow store built by MLflow (%s: %s)", type(e).__name__, e)
        return False


def template() -> Path:
    """This machine's empty store for the installed MLflow, built on first use (MLflow's tables and migrations)."""
    import mlflow
    from mlflow.store.db import utils

    path = cache_root() / f"mlflow-{mlflow.__version__}-{utils._get_latest_schema_revision()}.db"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".db")
    os.close(fd)
    try:
        os.unlink(tmp)  # SQLite makes the file
        engine = utils.create_sqlalchemy_engine_with_retry(f"sqlite:///{tmp}")
        try:
            utils._initialize_tables(engine)  # what SqlAlchemyStore runs on a new file, without its Default experiment
        finally:
            engine.dispose()
        os.replace(tmp, path)  # whole or absent, whoever builds it at the same time
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
