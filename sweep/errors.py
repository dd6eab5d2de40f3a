"""The error every input check raises (sweep.preflight, sweep.settings, sweep.costs, ...): tune.py prints its message as
one line and exits 2. Imports nothing, so tune.py can name it before loading torch, Ray or MLflow."""


class UsageError(ValueError):
    """The flags ask for something that cannot work; the message says what to change."""
