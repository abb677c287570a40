"""Trial and history frames from experiment folders, read without Ray.

An experiment folder (written by `raysearch launch`) holds, per Tune trial, `run_trial_<id>_<n>_.../`
with `params.json` (the values sampled from the space) and Tune's `result.json` (one JSON line per
evaluation); raysearch's `trial_configs/<id>.json` (the validated config the trial ran with, which the
config columns below come from) and `trial_history/<id>.jsonl` (every evaluation, kept across resumes).
An experiment from before raysearch stored them has configs rebuilt from its space and history read
from `result.json` alone.

    trials = trial_frame(["runs/search/rte-hww"])    # one row per trial
    history = history_frame(["runs/search/rte-hww"])  # one row per evaluation of each trial
"""
import json
import re
from pathlib import Path

import pandas as pd

from raysearch.errors import UserInputError
from raysearch.config import config_from_dict
from raysearch.experiment import Folder, read_evaluations, read_meta, trial_config_file, trial_error_file, trial_history_file
from raysearch.config import GROUPS, UNCOUPLED
from raysearch.reporting import BEST, EXPORT, EXPORT_DIR, METRICS
from raysearch.run_folder import CONFIG_FILE, METRICS_FILE, MODEL_DIR, final_metrics, run_config
from search_spaces import space_from_dict
from search_spaces.space import STAGE_KEY

# Tune names a trial's folder {trainable}_{trial id}_{index}_...; ids are 8 hex digits from a searcher
# (Optuna) or 5 hex digits, "_" and a 5-digit counter from Tune's own random and grid search
TRIAL_DIR = re.compile(r"^run_trial_(?P<trial_id>[0-9a-f]{5}_\d{5}|[0-9a-f]+)_(?P<index>\d+)_")


def config_columns(config) -> dict:
    """The flattened config of one trial: the factors the analysis asks about, plus what identifies the run."""
    t, p = config.transfer, config.pruning
    coupled = t.coupled
    row = {
        "preset": t.preset or "searched",
        "coupling": t.coupling if coupled else UNCOUPLED,
        **{f"group_{g}": coupled and g in t.groups for g in GROUPS},
        "n_groups": len(t.groups) if coupled else 0,
        "transfer_start_step": t.transfer_start_step if coupled else None,
        "transfer_start_fraction": t.transfer_start_step / config.max_steps if coupled else None,
        "transfer_weight": t.transfer_weight if coupled else None,
        "coupling_strength": t.strength,
        "target_weight": t.target_weight,
        "target_sparsity": p.target_sparsity,
        "seed": config.seed,
        "configuration": config.configuration_id(),  # shared by a configuration's seeds (its repeats)
        "max_steps": config.max_steps,
        "learning_rate": config.learning_rate,
        "target_train_size": config.target_train_size,
        "model": "tiny" if config.model.tiny else config.model.name_or_path,
        "target_task": Path(config.target.source).name or config.target.source,
        "transfer_task": (Path(t.task.source).name or t.task.source) if t.task and coupled else None,
    }
    return row


def on_off(value):
    """A group column's value as the report says it (True/np.True_/1 -> "on"; missing stays missing)."""
    return "on" if value in (True, 1) else "off" if value in (False, 0) else value


def coupled_groups(row) -> list[str]:
    """The parameter groups a trial coupled (row: a trial-frame row as a Series or dict)."""
    return [g for g in GROUPS if on_off(row.get(f"group_{g}")) == "on"]


class Experiment:
    """One experiment folder: its metadata and, per trial, sampled params, results and Tune status."""

    def __init__(self, path: str):
        self.path = str(path)
        self.meta = read_meta(self.path)
        self.name = self.meta.get("name") or Path(self.path).name
        self.space = space_from_dict(self.meta["space"])
        self.folder = Folder(self.path)

    def trial_dirs(self) -> list[tuple[str, str, int]]:
        """(folder name, trial id, trial index) in creation order."""
        found = []
        for name in self.folder.list():
            match = TRIAL_DIR.match(name)
            if match:
                found.append((name, match["trial_id"], int(match["index"])))
        return sorted(found, key=lambda t: t[2])

    def _newest_state(self) -> str | None:
        states = [n for n in self.folder.list() if n.startswith("experiment_state-") and n.endswith(".json")]
        return states[-1] if states else None

    def statuses(self) -> dict[str, str]:
        """Tune's status per trial id, from the newest experiment state (empty before the first save)."""
        newest = self._newest_state()
        if newest is None:
            return {}
        try:
            state = json.loads(self.folder.read_text(newest))
            saved = {d["trial_id"]: d["status"] for d in (json.loads(entry[0]) for entry in state["trial_data"])}
        except (ValueError, KeyError, TypeError, IndexError):
            return {}  # a state being rewritten as we read it: status is then judged from the results alone
        # Tune leaves a trial whose process died on its last attempt RUNNING in its saved state (Ray 2.60); the error
        # kept for a trial that failed for good (removed when it starts again) says otherwise
        return {t: "ERROR" if s in ("RUNNING", "PENDING") and self.folder.exists(trial_error_file(t)) else s for t, s in saved.items()}

    def abandoned(self, statuses: dict[str, str]) -> set[str]:
        """Trial folders that Tune's newest state does not know and that nothing has written to since it was saved:
        a driver killed between starting a trial and saving its state leaves one (the trial's actor may still create
        it), and the resumed search runs another trial in its place. They are not part of the experiment. A trial
        started since the last save is not in the state either, but its folder is newer than the state. The end of a
        resumed search rewrites every folder it holds, so one it replaced (same params, nothing reported) is
        abandoned however new its files are."""
        newest = self._newest_state()
        saved_at = self.folder.modified(newest) if newest else None
        if not statuses or saved_at is None:
            return set()
        dirs = self.trial_dirs()
        known = [self.params(d) for d, trial_id, _ in dirs if trial_id in statuses]
        return {trial_dir for trial_dir, trial_id, _ in dirs if trial_id not in statuses and (
            self._last_write(trial_dir) < saved_at or (not self.results(trial_dir, trial_id) and self.params(trial_dir) in known))}

    def _last_write(self, trial_dir: str) -> float:
        times = [self.folder.modified(trial_dir)] + [self.folder.modified(f"{trial_dir}/{n}") for n in self.folder.list(trial_dir)]
        return max(t for t in times if t is not None)

    def trials(self, statuses: dict[str, str] | None = None) -> list[tuple[str, str, int]]:
        """The experiment's trials: its trial folders less abandoned ones, in creation order."""
        abandoned = self.abandoned(self.statuses() if statuses is None else statuses)
        return [t for t in self.trial_dirs() if t[0] not in abandoned]

    def results(self, trial_dir: str, trial_id: str) -> list[dict]:
        """Evaluations of one trial, one per step: a step re-run after a restart keeps its latest report. Read from
        raysearch's history of the trial, which a resume keeps whole, and Tune's `result.json` (the only record in
        experiments from before raysearch kept one; a resumed driver starts it again empty)."""
        return read_evaluations(self.folder, [trial_history_file(trial_id), f"{trial_dir}/result.json"])

    def error(self, trial_id: str) -> str | None:
        """The last line of a trial's error (its kind and message), kept when the trial failed for good."""
        name = trial_error_file(trial_id)
        if not self.folder.exists(name):
            return None
        lines = [line.strip() for line in self.folder.read_text(name).splitlines() if line.strip()]
        return lines[-1] if lines else "unknown error"

    def params(self, trial_dir: str) -> dict:
        return json.loads(self.folder.read_text(f"{trial_dir}/params.json")) if self.folder.exists(f"{trial_dir}/params.json") else {}

    def config(self, trial_dir: str, trial_id: str):
        """The TrainConfig the trial ran with (None before it started, or when its configuration was invalid)."""
        stored = trial_config_file(trial_id)
        if self.folder.exists(stored):
            return config_from_dict(json.loads(self.folder.read_text(stored)))
        params = self.params(trial_dir)
        try:
            return self.space.trial_config(params) if params else None
        except UserInputError:  # the trial failed on it (its error says so); it has no config columns
            return None


def _experiments(paths) -> list[Experiment]:
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise UserInputError("experiments", "none given", "pass one or more experiment folders")
    return [Experiment(str(p)) for p in paths]


def trial_frame(paths) -> pd.DataFrame:
    """One row per trial of every experiment: config columns, final and best metrics, status."""
    rows = []
    for exp in _experiments(paths):
        statuses = exp.statuses()
        for trial_dir, trial_id, index in exp.trials(statuses):
            params = exp.params(trial_dir)
            config = exp.config(trial_dir, trial_id)
            results = exp.results(trial_dir, trial_id)
            final = results[-1] if results else {}
            row = {"experiment": exp.name, "trial_id": trial_id, "trial_index": index}
            row.update(config_columns(config) if config is not None else {})
            row["stage"] = params.get(STAGE_KEY, "search")  # baseline | search | confirm (raysearch.distributed.staged)
            row.update({f"param/{k}": v for k, v in params.items() if not k.startswith("__")})
            row.update({m: final.get(m) for m in METRICS})
            row.update({m: final.get(m) for m in BEST})
            row.update({m: final.get(m) for m in EXPORT})
            row["duplicate_of"] = final.get("duplicate_of")  # a configuration the search had trained: its results again
            row["complete"] = bool(final) and final.get("step") == row.get("max_steps")
            row["status"] = statuses.get(trial_id, "TERMINATED" if row["complete"] else "UNKNOWN")
            row["error"] = exp.error(trial_id) if row["status"] == "ERROR" else None
            row["experiment_path"] = exp.path
            rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=["experiment", "trial_id", "trial_index", "status", "complete", *METRICS])
    return with_configuration_spread(frame)


def with_configuration_spread(frame: pd.DataFrame, quality: str = "target_dev") -> pd.DataFrame:
    """Each trial (one seed) with its configuration's seeds, mean and spread of QUALITY over its complete seeds."""
    if "configuration" not in frame:
        return frame
    done = frame[frame["complete"].astype(bool)].assign(_q=lambda f: pd.to_numeric(f[quality], errors="coerce"))
    done = done.drop_duplicates(["experiment", "configuration", "seed"])
    spread = done.groupby(["experiment", "configuration"])["_q"].agg(["count", "mean", "std"])
    spread.columns = ["config_seeds", f"config_{quality}_mean", f"config_{quality}_std"]
    return frame.drop(columns=[c for c in spread.columns if c in frame]).join(spread, on=["experiment", "configuration"])


def history_frame(paths) -> pd.DataFrame:
    """One row per evaluation step of every trial."""
    rows = []
    for exp in _experiments(paths):
        for trial_dir, trial_id, index in exp.trials():
            config = exp.config(trial_dir, trial_id)
            who = {"seed": config.seed, "configuration": config.configuration_id()} if config is not None else {}
            for result in exp.results(trial_dir, trial_id):
                rows.append({"experiment": exp.name, "trial_id": trial_id, "trial_index": index, **who,
                             **{m: result.get(m) for m in METRICS + BEST}})
    return pd.DataFrame(rows, columns=["experiment", "trial_id", "trial_index", "seed", "configuration", *METRICS, *BEST])


def run_frames(run_dirs, experiment: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, history) of runs that `raysearch train` wrote (config.yaml, metrics.jsonl, final_metrics.json once
    finished), with the columns of `trial_frame` and `history_frame`: one experiment of runs made without Ray (a
    grid run locally). The trial id is the run folder's name."""
    trials, history = [], []
    for index, run_dir in enumerate(map(Path, run_dirs)):
        config = run_config(run_dir) if (run_dir / CONFIG_FILE).is_file() else None
        by_step = {}
        if (run_dir / METRICS_FILE).is_file():
            for line in (run_dir / METRICS_FILE).read_text().splitlines():
                try:
                    result = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a crash
                by_step[result["step"]] = result
        final = final_metrics(run_dir)
        finished = bool(final)
        final = final or (by_step[max(by_step)] if by_step else {})
        ids = {"experiment": experiment, "trial_id": run_dir.name, "trial_index": index}
        row = {**ids, **(config_columns(config) if config is not None else {})}
        row.update({m: final.get(m) for m in METRICS + BEST})
        row.update({m: final.get(m) for m in EXPORT})
        if finished and (run_dir / MODEL_DIR).is_dir():
            row[EXPORT_DIR] = str(run_dir / MODEL_DIR)
        row["complete"] = finished and final.get("step") == row.get("max_steps")
        row["status"] = "TERMINATED" if row["complete"] else "UNKNOWN"
        row["error"] = None
        trials.append(row)
        history += [{**ids, **{m: result.get(m) for m in METRICS + BEST}} for _, result in sorted(by_step.items())]
    return pd.DataFrame(trials), pd.DataFrame(history, columns=["experiment", "trial_id", "trial_index", *METRICS, *BEST])


# ------------------------------------------------------------------ save / load

FORMATS = ("parquet", "csv")


def save_frames(frames: dict[str, pd.DataFrame], out_dir: str | Path, formats=FORMATS) -> list[Path]:
    """Write each frame as OUT/<name>.parquet and/or .csv; returns the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, frame in frames.items():
        for fmt in formats:
            if fmt not in FORMATS:
                raise UserInputError("formats", f"unknown format {fmt!r}", f"choose from {', '.join(FORMATS)}")
            path = out / f"{name}.{fmt}"
            frame.to_parquet(path, index=False) if fmt == "parquet" else frame.to_csv(path, index=False)
            written.append(path)
    return written


def load_frame(path: str | Path) -> pd.DataFrame:
    """A frame saved by `save_frames` (parquet or CSV, by suffix)."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(str(path), "no such file", "give a .parquet or .csv written by `raysearch analyze`")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path)
    raise UserInputError(str(path), f"unknown suffix {path.suffix!r}", "give a .parquet or .csv file")
