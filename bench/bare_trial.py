"""Ray's own fixed cost per trial: a Tune function trial fitting a TorchTrainer whose loop reports once, and a Tune
function trial that reports once itself.

A module of its own, pickled by value for Ray's workers (bench/trial_overhead.py registers it).
"""
import ray.train
from ray import tune
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback


def bare_loop(config):
    # not "done": Tune reads that key as "trial finished" and stops the trial before Train releases its workers
    ray.train.report({"reported": 1})


def bare_trial(config, storage):
    TorchTrainer(bare_loop, scaling_config=ScalingConfig(num_workers=1),
                 run_config=RunConfig(name=f"bare_{tune.get_context().get_trial_id()}", storage_path=storage,
                                      callbacks=[TuneReportCallback()])).fit()


def bare_function_trial(config):
    tune.report({"reported": 1})
