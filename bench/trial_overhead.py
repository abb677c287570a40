"""Framework overhead per trial, beyond Ray's own fixed cost.

Searches of N trials each on a local Ray (2 CPUs, 1-worker trials, 2 at a time), run side by side:
  * bare TorchTrainer: a Tune function trial that fits a TorchTrainer whose loop reports once (Ray's fixed cost
    of a Ray Train trial, the issue's reference);
  * bare function trial: a Tune function trial that reports once, 1 CPU, actors reused (Tune's own fixed cost,
    what a raysearch 1-worker trial now runs on);
  * raysearch: `raysearch launch`'s trial path (space -> validated config -> the trial in Tune's process, our
    callbacks, failure and checkpoint handling, export) with a loop that does next to nothing: a tiny model,
    1 step, one evaluation and checkpoint.
The differences of the per-trial times are what raysearch adds. Then trials per hour of the `demo` space.

    python bench/trial_overhead.py [--trials 4] [--demo-trials 4]
"""
import argparse
import time

from raysearch.distributed.auth import use_cluster_token

use_cluster_token()  # before ray is imported: Ray reads its auth mode then
import ray
from ray import cloudpickle, tune

import bare_trial as bare_trial_module
from bare_trial import bare_function_trial, bare_trial
from raysearch.distributed.search import launch
from raysearch.distributed.settings import SearchSettings
from search_spaces import load_space



def time_bare(trial, resources: dict, trials: int, storage: str, name: str) -> float:
    trainable = tune.with_resources(trial, resources)
    started = time.perf_counter()
    results = tune.Tuner(trainable, param_space={"i": tune.grid_search(list(range(trials)))},
               tune_config=tune.TuneConfig(max_concurrent_trials=2, reuse_actors=True),
               run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0)).fit()
    if any(r.error for r in results):
        raise RuntimeError(f"{name} trials failed: {[str(r.error)[:200] for r in results if r.error]}")
    return time.perf_counter() - started


def time_raysearch(space_name: str, overrides: list[str], trials: int, storage: str, name: str) -> float:
    space = load_space(space_name).with_base(overrides)
    started = time.perf_counter()
    # exactly `trials` trainings: one seed per configuration, no baselines, no confirmation stage
    launch(space, SearchSettings(num_samples=trials, repeats=1, baselines=False, confirm_seeds=0), storage, name, quiet=True)
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--demo-trials", type=int, default=4)
    parser.add_argument("--storage", default="/tmp/raysearch_bench")
    args = parser.parse_args()
    storage = f"{args.storage}/{int(time.time())}"
    # the no-op loop: the small synthetic target as both tasks, one step, one evaluation and checkpoint
    noop = ["transfer.task.source=synthetic:target", "max_steps=1", "eval_every=1", "pruning.warmup_steps=0",
            "pruning.finetune_steps=0", "target_train_size=32", "eval_max_examples=32"]
    # bench/ is not installed: ship the bare trial's code by value instead of by module name
    cloudpickle.register_pickle_by_value(bare_trial_module)
    ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        bare = time_bare(tune.with_parameters(bare_trial, storage=storage), {"cpu": 0, "memory": 1024 * 1024},
                         args.trials, storage, "bare")
        plain = time_bare(bare_function_trial, {"cpu": 1}, args.trials, storage, "bare_function")
        ours = time_raysearch("demo", noop, args.trials, storage, "noop")
        demo = time_raysearch("demo", [], args.demo_trials, storage, "demo")
    finally:
        ray.shutdown()
    per_bare, per_plain, per_ours = bare / args.trials, plain / args.trials, ours / args.trials
    print(f"local Ray, 2 CPUs, 1-worker trials, 2 at a time; {args.trials} trials per search")
    print("| search | wall (s) | per trial (s) |")
    print("| --- | --- | --- |")
    print(f"| bare TorchTrainer trials | {bare:.1f} | {per_bare:.2f} |")
    print(f"| bare Tune function trials | {plain:.1f} | {per_plain:.2f} |")
    print(f"| raysearch trials, no-op loop | {ours:.1f} | {per_ours:.2f} |")
    print(f"framework overhead per trial: {per_ours - per_bare:+.2f} s over a bare TorchTrainer trial (target <= 1.5 s), "
          f"{per_ours - per_plain:+.2f} s over a bare function trial; all run 2 trials at a time")
    print(f"demo space: {args.demo_trials} trials in {demo:.1f} s = {3600 * args.demo_trials / demo:.0f} trials/hour on 2 CPUs")


if __name__ == "__main__":
    main()
