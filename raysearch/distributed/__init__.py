"""Thin Ray glue: Train workers run `raysearch.loop.run`; Tune + Optuna drive trials."""
