"""Trial tables of an experiment, read from its folder without a running cluster."""
import pandas as pd

COLUMNS = ("trial_id", "status", "step", "target_dev", "exact_sparsity", "remaining_params")


def trial_table(path: str) -> pd.DataFrame:
    from ray.tune import ExperimentAnalysis

    from .search import absolute, read_meta

    path = absolute(path)
    read_meta(path)  # a clear error for a folder that is not a raysearch experiment
    analysis = ExperimentAnalysis(path)
    rows = []
    for trial in analysis.trials:
        result = trial.last_result or {}
        row = {"trial_id": trial.trial_id, "status": trial.status}
        row.update({k: result.get(k) for k in COLUMNS[2:]})
        row.update({f"config/{k}": v for k, v in trial.config.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def format_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "no trials yet"
    shown = frame[[c for c in COLUMNS if c in frame]].copy()
    for column, fmt in (("target_dev", "{:.4f}"), ("exact_sparsity", "{:.3f}"), ("remaining_params", "{:,.0f}"), ("step", "{:.0f}")):
        shown[column] = shown[column].map(lambda v, f=fmt: "-" if v is None or pd.isna(v) else f.format(v))
    return shown.to_string(index=False)
