"""Ray Tune + Optuna: a multi-objective search whose trials are Tune function trials.

A 1-worker trial trains in its Tune process, which Tune reuses for the next trial (warm imports); a multi-worker
trial fits a TorchTrainer from it (Ray 2.60 runs Train V2, where a trainer passed to the Tuner fails). See
raysearch.distributed.trial for the resources each asks for.
"""
import math
import sys
import time
from dataclasses import asdict

import optuna
import ray
from ray import tune

from search_spaces import SearchSpace, space_from_dict
from search_spaces.space import SEED_KEY

from ..errors import UserInputError
from ..redact import check_storage_for_resume, redact_url
from ..experiment import absolute, experiment_path, holds_experiment, read_meta, tune_has_saved, write_meta
# experiments saved before these modules were split pickled their callbacks under this module's name
from .callbacks import FrontProgress, SavedStateKeeper, TrialRecorder  # noqa: F401
from .distinct import DistinctOptunaSearch, NamedOptunaSearch
from .saved_state import repair_saved_state
from .settings import SearchSettings
from .staged import StagedSearch
from .trackers import tracker_callbacks
from .trial import trainable


def _search(space: SearchSpace, settings: SearchSettings, name: str) -> tuple:
    """(search algorithm, Tune param_space, trials at most): a staged search (baselines, Optuna's configurations on
    `repeats` seeds, confirmation; raysearch.distributed.staged), or Tune's grid of every combination on each seed."""
    repeats = settings.repeats or space.repeats
    seeds = list(range(space.base_seed, space.base_seed + repeats))
    if settings.sampler == "grid":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        # max_concurrent here too: Tune does not apply TuneConfig.max_concurrent_trials to a generator passed in
        generator = BasicVariantGenerator(random_state=settings.seed, max_concurrent=max_concurrent_trials(settings))
        return generator, {**space.tune_param_space(grid=True), SEED_KEY: tune.grid_search(seeds)}, space.grid_size() // space.repeats * repeats
    sampler = optuna_sampler(settings.sampler, settings.seed, settings.num_samples)
    options = dict(space=space.define_by_run(), metric=space.metrics, mode=space.modes, sampler=sampler,
                   study_name=name, storage=open_optuna_storage(settings.optuna_storage))
    inner = NamedOptunaSearch(**options) if settings.rerun_duplicates else DistinctOptunaSearch(**options, space_dict=space.to_dict())
    staged = StagedSearch(inner, space.to_dict(), repeats, settings.num_samples, settings.baselines, settings.confirm_top,
                          settings.confirm_seeds)
    return staged, None, staged.max_trials()


def optuna_sampler(name: str, seed: int, num_samples: int, startup_trials: int | None = None) -> optuna.samplers.BaseSampler:
    """The Optuna sampler behind `--sampler tpe` (the default) or `nsga2` (bench/search_efficiency.py measures them).
    `startup_trials`: TPE's random trials before it models anything (default `tpe_startup_trials(num_samples)`)."""
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # Optuna's default of 10 random start-up trials would spend most of a 12-32 trial search before TPE models
    # anything; constant_liar keeps trials that run at the same time from being proposed the same point
    startup = tpe_startup_trials(num_samples) if startup_trials is None else startup_trials
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True, n_startup_trials=startup)


def tpe_startup_trials(num_samples: int) -> int:
    """Random trials before TPE takes over: a quarter of the budget, at least 4 and at most Optuna's default 10."""
    return min(10, max(4, num_samples // 4))


def max_concurrent_trials(settings: SearchSettings) -> int:
    """How many trials the cluster holds at once, from its CPUs (and GPUs)."""
    resources = ray.cluster_resources()
    limits = [math.floor(resources.get("CPU", 1) / max(1e-9, settings.workers_per_trial * settings.cpus_per_worker))]
    if settings.gpus_per_worker > 0:
        limits.append(math.floor(resources.get("GPU", 0) / (settings.workers_per_trial * settings.gpus_per_worker)))
    fits = min(limits)
    if fits < 1:
        raise UserInputError("--workers-per-trial", f"one trial needs more than the cluster has ({resources})", "ask for fewer workers or resources")
    return fits


def trial_retries(settings: SearchSettings) -> int:
    """Tune's restarts of a whole trial, each from its last checkpoint. A 1-worker trial: `--max-failures`. A
    multi-worker trial: one, for what Ray Train does not restart itself (a worker that dies while the controller
    finishes the run, seen as "ControllerError"; the loss of the trial's node); Train restarts its workers."""
    return settings.max_failures if settings.workers_per_trial == 1 else min(1, settings.max_failures)


# ------------------------------------------------------------------ launch / resume


def launch(space: SearchSpace, settings: SearchSettings, storage_path: str, name: str, quiet: bool = False):
    """Run a new search to completion; returns the Tune ResultGrid."""
    path = experiment_path(storage_path, name)
    if holds_experiment(path) and tune_has_saved(path):
        raise UserInputError("--name", f"{path} already holds an experiment", "resume it with `raysearch resume`, or choose another --name")
    stored_settings = {**asdict(settings), "optuna_storage": settings.optuna_storage and redact_url(settings.optuna_storage)}
    meta = {"name": name, "storage_path": storage_path, "space": space.to_dict(), "settings": stored_settings,
            "train_storage": f"{path}/train_runs", "created": time.time()}
    searcher, param_space, total = _search(space, settings, name)
    meta["planned_trials"] = total
    tuner = tune.Tuner(
        trainable(meta, path),
        param_space=param_space,
        # a grid runs each combination on each seed once; a staged search at most `total` trials
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=1 if settings.sampler == "grid" else total,
                                    max_concurrent_trials=max_concurrent_trials(settings), reuse_actors=True),
        run_config=tune.RunConfig(name=name, storage_path=storage_path, verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=trial_retries(settings)),
                                  callbacks=[FrontProgress(space, total, quiet), TrialRecorder(path), SavedStateKeeper(path),
                                             *tracker_callbacks(settings.callbacks, name)]),
    )
    write_meta(path, meta)
    if not quiet:
        stages = "" if settings.sampler == "grid" else (
            f" (baselines {'on' if settings.baselines else 'off'}, {settings.num_samples} configurations, "
            f"{settings.repeats or space.repeats} seeds each, confirmation on {settings.confirm_seeds} fresh seeds)")
        print(f"[raysearch] experiment {path}: up to {total} trials of space {space.name!r} ({settings.sampler}){stages}, "
              f"{max_concurrent_trials(settings)} at a time")
    return tuner.fit()


def resume(path: str, optuna_storage: str | None = None):
    """Continue a stopped experiment: finished trials kept, unfinished/errored ones from their checkpoints."""
    path = absolute(path)
    meta = read_meta(path)
    space_from_dict(meta["space"])  # a damaged space fails here, before Ray restores anything
    check_storage_for_resume((meta.get("settings") or {}).get("optuna_storage"), optuna_storage)
    if optuna_storage:
        _STORAGE_URLS[redact_url(optuna_storage)] = optuna_storage  # for the searcher's storage Tune unpickles
    repaired = repair_saved_state(path)  # a state damaged by a full disk: the last good copy, or a one-line refusal
    if repaired:
        print(repaired, file=sys.stderr, flush=True)
    if not tune.Tuner.can_restore(path):
        raise UserInputError(str(path), "holds no Tune experiment state yet", "launch it again with the same --name")
    tuner = tune.Tuner.restore(path, trainable=trainable(meta, path), resume_unfinished=True, resume_errored=True)
    print(f"[raysearch] resuming {path}", flush=True)
    # the callbacks (progress lines, history) come back with the run config Tune pickled at launch
    return tuner.fit()


# full Optuna storage URLs by their redacted form: filled by launch and by resume (which is given the URL again),
# read when Tune unpickles the searcher's storage
_STORAGE_URLS: dict[str, str] = {}


class PasswordFreeRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage, pickled without its URL's password: Tune pickles the searcher, storage included, into
    the experiment folder. Unpickled in a resume, it takes the full URL the resume was given."""

    def __getstate__(self):
        return {**super().__getstate__(), "url": redact_url(self.url)}

    def __setstate__(self, state):
        super().__setstate__({**state, "url": _STORAGE_URLS.get(state["url"], state["url"])})


def open_optuna_storage(url: str | None):
    if not url:
        return None
    _STORAGE_URLS[redact_url(url)] = url
    try:
        return PasswordFreeRDBStorage(url)
    except Exception as e:
        problem = str(e).splitlines()[0][:100].replace(url, redact_url(url))
        raise UserInputError("--optuna-storage", f"cannot open {redact_url(url)!r} ({type(e).__name__}: {problem})",
                             "give an SQLAlchemy URL such as sqlite:///study.db or postgresql://user@host/db") from None
