"""The driver's Tune callbacks: progress lines with the front so far, the trial histories and errors Tune would lose,
and the last good copy of Tune's saved state. Tune pickles them with the experiment state, so they keep only plain
data (no function, no open file)."""
import json
import sys
import time
from pathlib import Path

import pandas as pd
from ray import tune

from analysis.pareto import pareto_front  # progress lines use the analysis's own non-dominated sorting
from search_spaces import SearchSpace

from ..errors import TrialConfigError
from ..experiment import Folder, trial_error_file, trial_history_file
from ..reporting import EXPORT_DIR, RESUMED_FROM, shown
from .saved_state import keep_good_state, newest_state


class FrontProgress(tune.Callback):
    """One line per finished trial with the Pareto front so far (objectives of the space)."""

    def __init__(self, space: SearchSpace, total: int, quiet: bool = False):
        # no function is stored: Tune pickles callbacks with the experiment state
        self.space, self.total, self.quiet = space, total, quiet

    def print(self, line: str):
        if not self.quiet:
            print(line, flush=True)

    def finished(self, trials, just_finished=None) -> dict:
        """Objectives of every finished trial, counted from Tune's trials (a resumed search counts those finished
        before it, which no callback of the new driver saw complete)."""
        done = {}
        for t in trials:
            result = t.last_result or {}
            if (t.status == "TERMINATED" or t is just_finished) and all(m in result for m in self.space.metrics):
                done[t.trial_id] = tuple(result[m] for m in self.space.metrics)
        return done

    def on_trial_result(self, iteration, trials, trial, result, **info):
        """A line per evaluation, so that a long trial shows it is alive; one when a trial's worker restarted."""
        if "step" not in result:
            return
        if EXPORT_DIR in result:
            self.print(f"[raysearch] trial {trial.trial_id} exported its model: {result['export_dir']} "
                       f"(agrees with the masked model on {result.get('export_dev_agreement', float('nan')):.1%} of dev)")
            return
        if result.get(RESUMED_FROM) is not None:
            self.print(f"[raysearch] trial {trial.trial_id} restarted: it continues from its step-{result[RESUMED_FROM]} checkpoint")
        values = ", ".join(f"{m} {shown(m, result[m])}" for m in self.space.metrics if isinstance(result.get(m), (int, float)))
        running = sum(t.status == "RUNNING" for t in trials)
        self.print(f"[raysearch] trial {trial.trial_id} step {result['step']} ({result.get('phase', '')}): {values}; "
                   f"{len(self.finished(trials))}/{self.total} done, {running} running")

    def on_trial_complete(self, iteration, trials, trial, **info):
        done = pd.DataFrame.from_dict(self.finished(trials, trial), orient="index", columns=self.space.metrics)
        front = pareto_front(done, list(zip(self.space.metrics, self.space.modes)))
        points = ", ".join("(" + ", ".join(shown(m, v) for m, v in zip(self.space.metrics, row)) + ")" for row in front.itertuples(index=False))
        self.print(f"[raysearch] {len(done)}/{self.total} trials done; front ({', '.join(self.space.metrics)}): {points}")

    def on_trial_recover(self, iteration, trials, trial, **info):
        if TrialConfigError.found_in(error_text(trial)):
            return  # it fails the same way again, and on_trial_error says why
        self.print(f"[raysearch] trial {trial.trial_id} failed; it is retried from its last checkpoint")

    def on_trial_error(self, iteration, trials, trial, **info):
        invalid = TrialConfigError.found_in(error_text(trial))
        if invalid:
            self.print(f"[raysearch] trial {trial.trial_id} failed: {invalid} (a resume would fail the same way)")
            return
        self.print(f"[raysearch] trial {trial.trial_id} failed (its error: {trial_error_file(trial.trial_id)} in the experiment); "
                   "`raysearch resume` retries it from its last checkpoint")


class TrialRecorder(tune.Callback):
    """Keeps in the experiment folder what Tune would lose: every evaluation of every trial
    (`trial_history/<id>.jsonl`) and the error of a trial that failed for good (`trial_errors/<id>.txt`).

    Tune's own `result.json` of a trial starts empty again when a search is resumed after its driver died: Tune
    restores it only for trials with a Tune-level checkpoint, and a raysearch trial's checkpoints are Ray Train's.
    Its error file stays in the driver's temporary folder. The analysis and `raysearch status` read these instead."""

    def __init__(self, experiment: str):
        self.experiment = experiment  # only the path: Tune pickles callbacks with the experiment state

    def on_trial_start(self, iteration, trials, trial, **info):
        # a trial started again (a resume) has no error of its own until it fails again
        Folder(self.experiment).remove(trial_error_file(trial.trial_id))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "step" not in result:
            return
        line = json.dumps({k: v for k, v in result.items() if isinstance(v, (int, float, str, bool)) or v is None})
        Folder(self.experiment).append_text(trial_history_file(trial.trial_id), line + "\n")

    def on_trial_error(self, iteration, trials, trial, **info):
        text = error_text(trial)
        Folder(self.experiment).write_text(trial_error_file(trial.trial_id), text or f"{info.get('error') or 'unknown error'}\n")


class SavedStateKeeper(tune.Callback):
    """Keeps the last whole copy of Tune's saved state (raysearch.distributed.saved_state): looked at every `every_s`
    seconds of the driver's loop (default: 1 s on a local disk, 10 s on remote storage) and when the search ends, and
    copied when Tune has saved a new state since."""

    def __init__(self, experiment: str, every_s: float | None = None):
        self.experiment, self._last, self._kept = experiment, 0.0, None
        self.every_s = every_s if every_s is not None else (10.0 if "://" in experiment else 1.0)

    def on_step_end(self, iteration, trials, **info):
        if time.monotonic() - self._last >= self.every_s:
            self._keep()

    def on_experiment_end(self, trials, **info):
        self._keep()

    def _keep(self):
        self._last = time.monotonic()
        try:
            folder = Folder(self.experiment)
            saved = [folder.modified(name) for name in newest_state(folder)]
            if saved == getattr(self, "_kept", None):  # getattr: a keeper pickled by an older raysearch
                return
            if keep_good_state(self.experiment):
                self._kept = saved
        except OSError as e:  # a full disk: the previous good copy stays; the search goes on as Tune decides
            print(f"[raysearch] could not keep a copy of Tune's state ({str(e).splitlines()[0][:120]})", file=sys.stderr, flush=True)


def error_text(trial) -> str:
    """A failed trial's error as Tune wrote it (in the driver's temporary folder)."""
    return Path(trial.error_file).read_text() if trial.error_file and Path(trial.error_file).is_file() else ""
