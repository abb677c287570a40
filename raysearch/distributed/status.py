"""`raysearch status`: the trial table of an experiment, read from its folder (no Ray needed)."""
import time

import pandas as pd

from ..experiment import model_in_experiment
from ..reporting import EXPORT_DIR, shown

COLUMNS = ("trial_id", "stage", "seed", "status", "step", "target_dev", "exact_sparsity", "remaining_params", "model")


def trial_table(path: str) -> pd.DataFrame:
    from analysis.frames import trial_frame

    return trial_frame([path])


def requested_trials(meta: dict) -> int:
    """How many trials a search was launched for: what launch planned (a staged search's baselines, repeats and
    confirmation at most; a grid's combinations on each seed), or, for an older experiment, --num-samples."""
    if meta.get("planned_trials"):
        return int(meta["planned_trials"])
    settings = meta.get("settings") or {}
    if settings.get("sampler") == "grid":
        from search_spaces import space_from_dict

        return space_from_dict(meta["space"]).grid_size()
    return int(settings.get("num_samples", 0))


def format_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "no trials yet"
    if EXPORT_DIR in frame:  # the exported model of a finished trial, relative to the experiment
        frame = frame.assign(model=frame[EXPORT_DIR].map(lambda d: model_in_experiment(d) or "-"))
    table = frame[[c for c in COLUMNS if c in frame]].copy()
    for column in ("target_dev", "exact_sparsity", "remaining_params", "step"):
        if column in table:
            table[column] = table[column].map(lambda v, c=column: shown(c, None if v is None or pd.isna(v) else v))
    lines = [table.to_string(index=False)]
    if "error" in frame:
        lines += [f"trial {row.trial_id} failed: {row.error}" for row in frame.itertuples() if isinstance(row.error, str)]
    return "\n".join(lines)


def last_activity(path: str) -> float | None:
    """Seconds since the experiment last wrote a trial result or Tune state (None: nothing written yet)."""
    from ..experiment import Folder

    folder = Folder(path)
    names = [n for n in folder.list() if n.startswith("experiment_state-")]
    names += [f"{n}/result.json" for n in folder.list() if n.startswith("run_trial_")]
    times = [t for t in (folder.modified(n) for n in names) if t is not None]
    return time.time() - max(times) if times else None


def activity_line(frame: pd.DataFrame, path: str) -> str | None:
    """For trials shown as RUNNING: when the experiment last wrote anything, since Tune's status of a search
    whose driver died stays RUNNING until it is resumed."""
    if frame.empty or not (frame["status"] == "RUNNING").any():
        return None
    age = last_activity(path)
    if age is None:
        return None
    return (f"last activity {age / 60:.0f} min ago (newest result or Tune state); if that is longer than a trial takes "
            f"between evaluations, the search is not running: `raysearch resume {path}` continues it")
