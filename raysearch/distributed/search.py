"""Ray Tune + Optuna: a multi-objective search whose trials are Ray Train runs.

Ray 2.60 runs Train V2, where a Tune *function* trial builds and fits a TorchTrainer (a trainer
passed to the Tuner fails). The trial function asks for no CPU of its own, so that N workers per
trial and the cluster's CPUs alone decide how many trials run at once (no deadlock on 2 CPUs).
"""
import contextlib
import json
import math
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import optuna
import pandas as pd
import ray
from ray import tune
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.search.optuna import OptunaSearch

from analysis.pareto import pareto_front  # progress lines use the analysis's own non-dominated sorting
from search_spaces import SearchSpace, space_from_dict
from search_spaces.space import SEED_KEY

from ..errors import UserInputError
from ..redact import check_storage_for_resume, redact_url
from ..experiment import (Folder, absolute, experiment_path, finished_twin, holds_experiment, read_evaluations, read_meta,
                          trial_config_file, trial_error_file, trial_history_file, tune_has_saved, write_meta)
from .distinct import DistinctOptunaSearch
from .quiet import RAY_LOGGING_LEVEL
from .saved_state import keep_good_state, repair_saved_state
from .staged import StagedSearch
from .worker import train_loop_per_worker

# Optuna's TPE, NSGA-II and random sampler; Ray Tune's BasicVariantGenerator for the full grid of categorical
# choices (e.g. the baselines space: every preset x sparsity, on each seed)
SAMPLERS = ("tpe", "nsga2", "random", "grid")


@dataclass
class SearchSettings:
    num_samples: int = 8
    workers_per_trial: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    sampler: str = "tpe"
    seed: int = 0
    max_failures: int = 2  # worker restarts per trial, each from the trial's last checkpoint
    keep_checkpoints: int = 1  # per running trial: what a restart needs
    keep_finished_checkpoints: bool = False  # a finished trial keeps its exported model; its checkpoints go unless asked
    optuna_storage: str | None = None
    # train a configuration the search has trained before, instead of asking the sampler for another (Optuna) or
    # replaying its results (a grid, or a proposal still trained after distinct.MAX_REDRAWS draws)
    rerun_duplicates: bool = False
    repeats: int | None = None  # seeds per configuration; default: the space's `repeats`
    baselines: bool = True  # no_transfer, multitask, sequential first, on the same seeds
    confirm_top: int = 3  # configurations per level re-trained on fresh seeds after the search
    confirm_seeds: int = 3  # fresh seeds of the confirmation stage (0: none)

    def __post_init__(self):
        if self.num_samples < 1:
            raise UserInputError("--num-samples", f"must be >= 1, got {self.num_samples}", "give a positive trial count")
        if self.workers_per_trial < 1:
            raise UserInputError("--workers-per-trial", f"must be >= 1, got {self.workers_per_trial}", "give a positive worker count")
        if self.cpus_per_worker < 0:
            raise UserInputError("--cpus-per-worker", f"must be >= 0, got {self.cpus_per_worker:g}", "give a non-negative number, e.g. 1")
        g = self.gpus_per_worker
        if g < 0 or (g > 1 and g != int(g)):
            raise UserInputError("--gpus-per-worker", f"{g:g} is neither a fraction in (0, 1] nor a whole number of GPUs",
                                 "give e.g. 0.25 (four workers share a GPU), 1, or 2")
        if self.max_failures < 0:
            raise UserInputError("--max-failures", f"must be >= 0, got {self.max_failures}", "give 0 (no restart) or more")
        for name, flag, least in (("repeats", "--repeats", 1), ("confirm_top", "--confirm-top", 1), ("confirm_seeds", "--confirm-seeds", 0)):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < least):
                raise UserInputError(flag, f"must be a whole number >= {least}, got {value!r}", f"give {least} or more")
        if self.sampler not in SAMPLERS:
            raise UserInputError("--sampler", f"unknown sampler {self.sampler!r}", f"choose one of {', '.join(SAMPLERS)}")


# ------------------------------------------------------------------ the trial


def run_trial(tune_config: dict, space: dict, settings: dict, train_storage: str, experiment: str):
    """One Tune trial: resolve and validate its config, store it in the experiment (the analysis reads it there),
    then fit a TorchTrainer under a stable per-trial name. The workers get the validated config itself."""
    config = space_from_dict(space).trial_config(tune_config, seed=tune_config.get(SEED_KEY))
    s = SearchSettings(**settings)
    trial_id = tune.get_context().get_trial_id()
    folder = Folder(experiment)
    folder.write_text(trial_config_file(trial_id), json.dumps(config.to_dict(), indent=1))
    twin = None if s.rerun_duplicates else finished_twin(folder, trial_id, config.to_dict())
    if twin is not None:  # trained already: training is deterministic on a CPU, so its results are this trial's
        for evaluation in read_evaluations(folder, [trial_history_file(twin)]):
            tune.report({**evaluation, "duplicate_of": twin})
        return
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": config, "experiment": experiment, "trial_id": trial_id},
        scaling_config=scaling_config(s),
        run_config=RunConfig(
            name=f"trial_{trial_id}",  # stable: a restarted trial finds its own checkpoints
            storage_path=train_storage,
            callbacks=[TuneReportCallback()],
            failure_config=FailureConfig(max_failures=s.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=s.keep_checkpoints),
        ),
    )
    trainer.fit()
    if not s.keep_finished_checkpoints:  # finished: its exported model and results stay, its checkpoints go
        Folder(train_storage).delete(f"trial_{trial_id}")


def scaling_config(s: SearchSettings) -> ScalingConfig:
    """What one trial asks Ray for: its workers, each with its CPUs and (a fraction of) a GPU, which Ray packs."""
    resources = {"CPU": s.cpus_per_worker, **({"GPU": s.gpus_per_worker} if s.gpus_per_worker else {})}
    return ScalingConfig(num_workers=s.workers_per_trial, use_gpu=s.gpus_per_worker > 0, resources_per_worker=resources)


def _trainable(meta: dict, experiment: str):
    fn = tune.with_parameters(run_trial, space=meta["space"], settings=meta["settings"], train_storage=meta["train_storage"],
                              experiment=experiment)
    return tune.with_resources(fn, {"cpu": 0, "memory": 1024 * 1024})


def _search(space: SearchSpace, settings: SearchSettings, name: str) -> tuple:
    """(search algorithm, Tune param_space, trials at most): a staged search (baselines, Optuna's configurations on
    `repeats` seeds, confirmation; raysearch.distributed.staged), or Tune's grid of every combination on each seed."""
    repeats = settings.repeats or space.repeats
    seeds = list(range(space.base_seed, space.base_seed + repeats))
    if settings.sampler == "grid":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        # max_concurrent here too: Tune does not apply TuneConfig.max_concurrent_trials to a generator passed in,
        # and every 0-CPU trial would start at once (measured: 32 trials started, 3 killed by Ray's OOM monitor)
        generator = BasicVariantGenerator(random_state=settings.seed, max_concurrent=max_concurrent_trials(settings))
        return generator, {**space.tune_param_space(grid=True), SEED_KEY: tune.grid_search(seeds)}, space.grid_size() // space.repeats * repeats
    sampler = optuna_sampler(settings.sampler, settings.seed, settings.num_samples)
    options = dict(space=space.define_by_run(), metric=space.metrics, mode=space.modes, sampler=sampler,
                   study_name=name, storage=open_optuna_storage(settings.optuna_storage))
    inner = OptunaSearch(**options) if settings.rerun_duplicates else DistinctOptunaSearch(**options, space_dict=space.to_dict())
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


# ------------------------------------------------------------------ progress


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
        if "export_dir" in result:
            self.print(f"[raysearch] trial {trial.trial_id} exported its model: {result['export_dir']} "
                       f"(agrees with the masked model on {result.get('export_dev_agreement', float('nan')):.1%} of dev)")
            return
        if result.get("resumed_from_step") is not None:
            self.print(f"[raysearch] trial {trial.trial_id} restarted: it continues from its step-{result['resumed_from_step']} checkpoint")
        shown = ", ".join(f"{m} {result[m]:.4g}" for m in self.space.metrics if isinstance(result.get(m), (int, float)))
        running = sum(t.status == "RUNNING" for t in trials)
        self.print(f"[raysearch] trial {trial.trial_id} step {result['step']} ({result.get('phase', '')}): {shown}; "
                   f"{len(self.finished(trials))}/{self.total} done, {running} running")

    def on_trial_complete(self, iteration, trials, trial, **info):
        done = pd.DataFrame.from_dict(self.finished(trials, trial), orient="index", columns=self.space.metrics)
        front = pareto_front(done, list(zip(self.space.metrics, self.space.modes)))
        shown = ", ".join("(" + ", ".join(f"{v:.4g}" for v in row) + ")" for row in front.itertuples(index=False))
        self.print(f"[raysearch] {len(done)}/{self.total} trials done; front ({', '.join(self.space.metrics)}): {shown}")

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.print(f"[raysearch] trial {trial.trial_id} failed beyond its worker restarts; it is retried once from its last checkpoint")

    def on_trial_error(self, iteration, trials, trial, **info):
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

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "step" not in result:
            return
        line = json.dumps({k: v for k, v in result.items() if isinstance(v, (int, float, str, bool)) or v is None})
        Folder(self.experiment).append_text(trial_history_file(trial.trial_id), line + "\n")

    def on_trial_error(self, iteration, trials, trial, **info):
        text = Path(trial.error_file).read_text() if trial.error_file and Path(trial.error_file).is_file() else ""
        Folder(self.experiment).write_text(trial_error_file(trial.trial_id), text or f"{info.get('error') or 'unknown error'}\n")


class SavedStateKeeper(tune.Callback):
    """Keeps the last whole copy of Tune's saved state (raysearch.distributed.saved_state), looked at every
    `every_s` seconds of the driver's loop and when the search ends."""

    def __init__(self, experiment: str, every_s: float = 10.0):
        self.experiment, self.every_s, self._last = experiment, every_s, 0.0

    def on_step_end(self, iteration, trials, **info):
        if time.monotonic() - self._last >= self.every_s:
            self._keep()

    def on_experiment_end(self, trials, **info):
        self._keep()

    def _keep(self):
        self._last = time.monotonic()
        try:
            keep_good_state(self.experiment)
        except OSError as e:  # a full disk: the previous good copy stays; the search goes on as Tune decides
            print(f"[raysearch] could not keep a copy of Tune's state ({str(e).splitlines()[0][:120]})", file=sys.stderr, flush=True)


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
        _trainable(meta, path),
        param_space=param_space,
        # a grid runs each combination on each seed once; a staged search at most `total` trials
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=1 if settings.sampler == "grid" else total,
                                    max_concurrent_trials=max_concurrent_trials(settings)),
        # one retry of a whole trial, from its last checkpoint, for what Ray Train does not restart itself: a worker
        # that dies while the controller finishes the run (seen: a kill during the final export, "ControllerError"),
        # or the loss of the node that holds the trial
        run_config=tune.RunConfig(name=name, storage_path=storage_path, verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=min(1, settings.max_failures)),
                                  callbacks=[FrontProgress(space, total, quiet), TrialRecorder(path), SavedStateKeeper(path)]),
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
    tuner = tune.Tuner.restore(path, trainable=_trainable(meta, path), resume_unfinished=True, resume_errored=True)
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


def init_ray(address: str | None, verbose: bool = True):
    """Connect to a cluster, or start a local Ray bound to 127.0.0.1 without a dashboard. Not `verbose`: Ray's own
    log lines below ERROR (start-up, token-auth notices) are not shown (raysearch.distributed.quiet)."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    level = RAY_LOGGING_LEVEL[verbose]
    if address:
        check_cluster_answers(address)
        ray.init(address=address, log_to_driver=False, logging_level=level)
    else:
        # "local": a new Ray of our own, never the cluster some earlier `ray start` recorded (a stale record hangs)
        with loopback_only_ray():
            ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False, logging_level=level)


def check_cluster_answers(address: str, timeout_s: float = 3.0):
    """A cluster address that nothing answers fails in one line within seconds (Ray itself retries for a minute or
    hangs). `auto` is the cluster a `ray start` recorded on this machine."""
    from ray._private.utils import read_ray_address

    given = address
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS") or read_ray_address()
        if not address:
            raise UserInputError("--address", "auto: no cluster is recorded on this machine (no `ray start` ran here)",
                                 "start one with `ray start --head`, give its address, or leave --address out for a local Ray")
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as e:
        recorded = f" (recorded as {address})" if given == "auto" else ""
        raise UserInputError("--address", f"nothing answers at {given}{recorded}: {e.__class__.__name__}: {str(e)[:80] or 'not host:port'}",
                             "start the cluster (`ray start --head`) or give the address it printed; leave --address out for a local Ray") from None


@contextlib.contextmanager
def loopback_only_ray():
    """Ray turns a loopback node address into the machine's routable one, and binds its GCS, raylet and workers there
    (measured: on every interface), unless it runs as the single-machine Ray it is on macOS and Windows. A Ray that
    raysearch starts for itself needs no other machine, so it starts that way and listens on 127.0.0.1 only: the
    variable reaches the processes Ray starts, the constant is this process's (it has imported Ray already). Both are
    put back afterwards; the started node keeps its address."""
    from ray._private import ray_constants

    name = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    saved = os.environ.get(name), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[name], ray_constants.ENABLE_RAY_CLUSTER = "0", False
    try:
        yield
    finally:
        if saved[0] is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved[0]
        ray_constants.ENABLE_RAY_CLUSTER = saved[1]
