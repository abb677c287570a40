"""Thin Ray glue: Train workers run `raysearch.loop.run`; Tune + Optuna drive trials."""
from .auth import use_cluster_token

# Ray reads RAY_AUTH_MODE when it is imported, so this runs before any module here imports ray.
use_cluster_token()
