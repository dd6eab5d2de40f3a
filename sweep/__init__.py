"""The study: flags -> RunSettings (settings), resources (resources, cluster), Ray Tune with Optuna + ASHA
(study), the Tune callbacks (callbacks) and the closing summary (summary). tune.py is only its command."""
