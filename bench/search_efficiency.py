"""Search efficiency: Optuna's multi-objective TPE vs Ray Tune's random search (BasicVariantGenerator) on the
embedded default space, at equal trial budgets, over several search seeds.

For each seed and sampler one search of N trials runs on a local Ray (2 trials at a time on 2 CPUs); the
hypervolume of the first 8, 16, ... trials (in launch order) is read from the experiment folder with the
analysis package (reference point: quality 0 and the dense model's parameters; units quality x sparsity).

    python bench/search_efficiency.py [--trials 32] [--random-trials 32] [--seeds 0 1 2] [--set max_steps=150 ...]
    python bench/search_efficiency.py --summarize /tmp/raysearch_bench/efficiency-NNN   # tabulate finished searches
"""
import argparse
import time
from pathlib import Path

from raysearch.distributed.auth import use_cluster_token

use_cluster_token()  # before ray is imported: Ray reads its auth mode then
import pandas as pd
import ray

from analysis import hypervolume_history, trial_frame
from raysearch.distributed.search import SearchSettings, init_ray, launch
from search_spaces import load_space

SAMPLERS = ("tpe", "random")


def hypervolumes(path: str, sampler: str, seed: int, budgets) -> list[dict]:
    """Hypervolume after each budget of trials (in launch order) of one finished search."""
    trials = trial_frame([path])
    # the budget is trials spent: finished ones and errored ones (which add nothing); a stopped search's
    # unfinished trials are not counted
    trials = trials[trials["complete"] | (trials["status"] == "ERROR")]
    history = hypervolume_history(trials)
    return [{"sampler": sampler, "seed": seed, "trials": b, "hypervolume": float(history[history["trials"] == b]["hypervolume"].iloc[0])}
            for b in budgets if b <= len(trials)]


def run_searches(args, storage: str) -> pd.DataFrame:
    space = load_space(args.space).with_base(args.set)
    rows = []
    init_ray(None)
    try:
        for seed in args.seeds:
            for sampler in SAMPLERS:
                name = f"{sampler}-seed{seed}"
                started = time.perf_counter()
                n = args.random_trials if sampler == "random" and args.random_trials else args.trials
                launch(space, SearchSettings(num_samples=n, sampler=sampler, seed=seed), storage, name, quiet=True)
                rows += hypervolumes(f"{storage}/{name}", sampler, seed, args.budgets)
                print(f"{name}: {n} trials in {time.perf_counter() - started:.0f} s, hypervolume {rows[-1]['hypervolume']:.4f}", flush=True)
    finally:
        ray.shutdown()
    return pd.DataFrame(rows)


def summarize(folder: str, budgets) -> pd.DataFrame:
    """The same table from the searches an earlier run left in FOLDER (e.g. one that was stopped)."""
    rows = []
    for path in sorted(Path(folder).glob("*-seed*")):
        sampler, seed = path.name.rsplit("-seed", 1)
        rows += hypervolumes(str(path), sampler, int(seed), budgets)
    return pd.DataFrame(rows)


def table(results: pd.DataFrame) -> str:
    summary = results.groupby(["sampler", "trials"])["hypervolume"].agg(["mean", "std", "count"]).reset_index()
    lines = ["| sampler | trials | hypervolume mean | std | seeds |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r.sampler} | {r.trials} | {r.mean:.4f} | {r.std:.4f} | {r.count} |" for r in summary.itertuples()]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="demo")
    parser.add_argument("--trials", type=int, default=32, help="trials per search")
    parser.add_argument("--random-trials", type=int, help="trials per random search (default: --trials)")
    parser.add_argument("--budgets", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override the space's base config")
    parser.add_argument("--storage", default="/tmp/raysearch_bench")
    parser.add_argument("--summarize", metavar="DIR", help="only tabulate the searches an earlier run left in DIR")
    args = parser.parse_args()
    if args.summarize:
        storage, results = args.summarize, summarize(args.summarize, args.budgets)
    else:
        storage = f"{args.storage}/efficiency-{int(time.time())}"
        results = run_searches(args, storage)
    results.to_csv(f"{storage}/hypervolumes.csv", index=False)
    print(f"\n{args.space} space{' with ' + ', '.join(args.set) if args.set else ''}; local Ray, 2 CPUs; experiments in {storage}")
    print(table(results))
    mean = results.groupby(["sampler", "trials"])["hypervolume"].mean()
    if ("tpe", 16) in mean and ("random", 32) in mean:
        verdict = "met" if mean[("tpe", 16)] >= mean[("random", 32)] else "NOT met"
        print(f"target TPE@16 >= random@32: {mean[('tpe', 16)]:.4f} vs {mean[('random', 32)]:.4f} -> {verdict}")


if __name__ == "__main__":
    main()
