"""Trials in the trackers users already look at (`launch --callback`): MLflow through Ray Tune's own logger callback,
W&B through a callback of the same shape that logs from the driver.

Each logs a trial's sampled config, its metrics at every evaluation, and where its exported model went (MLflow: the
run's tag `raysearch.export_dir`; W&B: `export_dir` in the run's summary). Where they write comes from their own
environment variables (MLFLOW_TRACKING_URI; WANDB_MODE=offline, WANDB_DIR, WANDB_PROJECT, WANDB_API_KEY), never from a
file of raysearch's: Tune pickles these callbacks with the experiment state, so they hold no secret.

Ray's WandbLoggerCallback (Ray 2.60, wandb 0.31, offline) logged every trial but, in one of two test searches, did
not return at the end: it waited (up to its 30-minute upload timeout) on a logging actor whose run had ended. Logging
from the driver needs no actor per trial.
"""
import importlib.util
import numbers
import os

from ray.air.integrations.mlflow import MLflowLoggerCallback  # imports mlflow only when a search uses it
from ray.tune.logger import LoggerCallback

from ..errors import UserInputError
from .settings import TRACKERS
from ..reporting import EXPORT_DIR

EXPORT_TAG = "raysearch.export_dir"


def check_installed(names) -> None:
    """A tracker whose package is missing: one line naming the pip install (before Ray starts)."""
    for name in names:
        if importlib.util.find_spec(TRACKERS[name]) is None:
            raise UserInputError("--callback", f"{name} is not installed", f"pip install 'raysearch[{name}]'")


def tracker_callbacks(names, experiment: str) -> list:
    """The Tune callbacks for `names`, each grouping the trials under the experiment's name."""
    check_installed(names)
    callbacks = []
    if "mlflow" in names:
        callbacks.append(MLflowTracker(experiment_name=experiment))
    if "wandb" in names:
        callbacks.append(WandbTracker(experiment))
    return callbacks


class MLflowTracker(MLflowLoggerCallback):
    """Ray's MLflow callback, and the exported model's folder as a tag (MLflow metrics are numbers only)."""

    def log_trial_result(self, iteration, trial, result):
        super().log_trial_result(iteration, trial, result)
        if isinstance(result.get(EXPORT_DIR), str):
            import mlflow

            mlflow.MlflowClient().set_tag(self._trial_runs[trial], EXPORT_TAG, result[EXPORT_DIR])


class WandbTracker(LoggerCallback):
    """A W&B run per trial (group: the experiment), logged from the driver: config, every evaluation, the export."""

    def __init__(self, experiment: str):
        self.experiment, self._runs = experiment, {}

    def __getstate__(self):  # pickled with Tune's experiment state: the open runs stay behind
        return {"experiment": self.experiment, "_runs": {}}

    def log_trial_start(self, trial):
        import wandb

        if trial.trial_id not in self._runs:
            self._runs[trial.trial_id] = wandb.init(project=os.environ.get("WANDB_PROJECT", "raysearch"), group=self.experiment,
                                                    name=trial.trial_id, config=dict(trial.config), reinit="create_new")

    def log_trial_result(self, iteration, trial, result):
        self.log_trial_start(trial)
        run = self._runs[trial.trial_id]
        run.log({k: v for k, v in result.items() if isinstance(v, numbers.Number) and not isinstance(v, bool)})
        if isinstance(result.get(EXPORT_DIR), str):
            run.summary[EXPORT_DIR] = result[EXPORT_DIR]

    def log_trial_end(self, trial, failed: bool = False):
        run = self._runs.pop(trial.trial_id, None)
        if run is not None:
            run.finish(exit_code=1 if failed else 0)
