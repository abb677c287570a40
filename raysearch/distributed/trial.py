"""One Tune trial: a function trial that trains the trial's validated config, in its own process (1 worker) or by
fitting a TorchTrainer (N workers, data parallel).

Ray imports this module in every trial's own process, so it imports only what a trial needs (no analysis, no
Optuna): what the driver alone needs lives in `search.py` and `callbacks.py`.
"""
import json

from ray import tune
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig, WorkerGroupError
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from search_spaces import space_from_dict
from search_spaces.space import SEED_KEY

from ..errors import TrialConfigError, UserInputError
from ..experiment import Folder, finished_twin, read_evaluations, trial_config_file, trial_history_file
from .settings import SearchSettings
from .worker import train_in_trial, train_loop_per_worker


def run_trial(tune_config: dict, space: dict, settings: dict, train_storage: str, experiment: str):
    """One Tune trial: resolve and validate its config, store it in the experiment (the analysis reads it there),
    then train it under a stable per-trial name: in this process (1 worker) or on a TorchTrainer's workers."""
    try:
        config = space_from_dict(space).trial_config(tune_config, seed=tune_config.get(SEED_KEY))
    except UserInputError as e:  # a combination the space's own checks cannot see (each value alone is valid)
        raise TrialConfigError(e.where, e.problem, e.fix) from None
    s = SearchSettings(**settings)
    trial_id = tune.get_context().get_trial_id()
    folder = Folder(experiment)
    folder.write_text(trial_config_file(trial_id), json.dumps(config.to_dict(), indent=1))
    twin = None if s.rerun_duplicates else finished_twin(folder, trial_id, config.to_dict())
    if twin is not None:  # trained already: training is deterministic on a CPU, so its results are this trial's
        for evaluation in read_evaluations(folder, [trial_history_file(twin)]):
            tune.report({**evaluation, "duplicate_of": twin})
        return
    loop_config = {"config": config, "experiment": experiment, "trial_id": trial_id}
    run = f"trial_{trial_id}"  # stable: a restarted trial finds its own checkpoints
    if s.workers_per_trial == 1:  # no Train controller and worker processes: Tune restarts the trial on a failure
        try:
            train_in_trial(loop_config, Folder(f"{train_storage}/{run}"), s.keep_checkpoints)
        except UserInputError as e:  # the loop's own checks (the data its config names)
            raise TrialConfigError(e.where, e.problem, e.fix) from None
    else:
        fit_torch_trainer(loop_config, s, train_storage, run)
    if not s.keep_finished_checkpoints:  # finished: its exported model and results stay, its checkpoints go
        Folder(train_storage).delete(run)


def fit_torch_trainer(loop_config: dict, s: SearchSettings, train_storage: str, run: str):
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=scaling_config(s),
        run_config=RunConfig(
            name=run,
            storage_path=train_storage,
            callbacks=[TuneReportCallback()],
            failure_config=FailureConfig(max_failures=s.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=s.keep_checkpoints),
        ),
    )
    try:
        trainer.fit()
    except WorkerGroupError as e:  # a worker's own checks (the data its config names): after Train's restarts, say so
        found = next((u for u in map(user_input_error, e.worker_failures.values()) if u is not None), None)
        if found is None:
            raise
        raise TrialConfigError(found.where, found.problem, found.fix) from None


def scaling_config(s: SearchSettings) -> ScalingConfig:
    """What one trial asks Ray for: its workers, each with its CPUs and (a fraction of) a GPU, which Ray packs."""
    resources = {"CPU": s.cpus_per_worker, **({"GPU": s.gpus_per_worker} if s.gpus_per_worker else {})}
    return ScalingConfig(num_workers=s.workers_per_trial, use_gpu=s.gpus_per_worker > 0, resources_per_worker=resources)


def trial_resources(s: SearchSettings) -> dict:
    """What a trial's own process asks Tune for. A 1-worker trial trains in it: the worker's CPUs and GPU (fraction).
    A multi-worker trial's process only waits on its Train workers: no CPU, so that the workers alone decide how many
    trials fit (no deadlock on 2 CPUs)."""
    if s.workers_per_trial == 1:
        return {"cpu": s.cpus_per_worker, **({"gpu": s.gpus_per_worker} if s.gpus_per_worker else {})}
    return {"cpu": 0, "memory": 1024 * 1024}


def trainable(meta: dict, experiment: str):
    fn = tune.with_parameters(run_trial, space=meta["space"], settings=meta["settings"], train_storage=meta["train_storage"],
                              experiment=experiment)
    return tune.with_resources(fn, trial_resources(SearchSettings(**meta["settings"])))


def user_input_error(failure: BaseException) -> UserInputError | None:
    """The UserInputError a worker raised, as Ray hands it back (itself, or as the cause of a task error)."""
    for candidate in (failure, getattr(failure, "cause", None), failure.__cause__):
        if isinstance(candidate, UserInputError):
            return candidate
    return None
