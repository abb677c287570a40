"""`raysearch status`: the trial table of an experiment, read from its folder (no Ray needed)."""
import pandas as pd

COLUMNS = ("trial_id", "status", "step", "target_dev", "exact_sparsity", "remaining_params")


def trial_table(path: str) -> pd.DataFrame:
    from analysis.frames import trial_frame

    return trial_frame([path])


def format_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "no trials yet"
    shown = frame[[c for c in COLUMNS if c in frame]].copy()
    for column, fmt in (("target_dev", "{:.4f}"), ("exact_sparsity", "{:.3f}"), ("remaining_params", "{:,.0f}"), ("step", "{:.0f}")):
        shown[column] = shown[column].map(lambda v, f=fmt: "-" if v is None or pd.isna(v) else f.format(v))
    return shown.to_string(index=False)
