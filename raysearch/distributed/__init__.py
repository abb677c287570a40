"""Thin Ray glue: Train workers run `raysearch.loop.run`; Tune + Optuna drive trials.

Entry points call `auth.use_cluster_token()` before anything imports ray (Ray reads its auth mode then).
"""
