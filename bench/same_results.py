"""Does a change alter what training produces? The same demo configurations trained at two commits, side by side.

Draws N configurations of the demo space at random (Optuna's RandomSampler, --seed), checks each commit out into a
temporary git worktree, trains every configuration there with that commit's own `raysearch train` (one torch thread,
`--jobs` at a time) and prints a row per configuration: dev accuracy, exact sparsity and wall time at each commit, and
whether dev, test and remaining parameters are equal. Training on a CPU is deterministic, so a change that only
moves code (a refactor) gives equal rows, and one that changes the numerics shows where.

    python bench/same_results.py COMMIT_A COMMIT_B [--configs 7] [--seed 0] [--jobs 2]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
import yaml

from search_spaces import load_space

ROOT = Path(__file__).resolve().parents[1]


def demo_configs(n: int, seed: int) -> list[list[str]]:
    """N distinct configurations of the demo space, each as `key=value` overrides of its base."""
    space = load_space("demo")
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=seed))
    configs = []
    while len(configs) < n:
        trial = study.ask()
        space.sample(trial)
        study.tell(trial, [0.0, 0.0])
        overrides = [f"{k}={'[' + ','.join(v) + ']' if isinstance(v, list) else v}" for k, v in space.overrides(trial.params).items()]
        if overrides not in configs:
            configs.append(overrides)
    return configs


def train(checkout: Path, base: Path, overrides: list[str], out: Path) -> dict:
    argv = [sys.executable, "-m", "raysearch", "train", str(base), "--output-dir", str(out), "--threads", "1", "--quiet"]
    argv += [x for kv in overrides for x in ("--set", kv)]
    started = time.perf_counter()
    # the checkout's own package first on the path: each commit trains with its own code
    result = subprocess.run(argv, cwd=checkout, env={**os.environ, "PYTHONPATH": str(checkout)}, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"same_results: training failed at {checkout}: {result.stderr.strip().splitlines()[-1]}")
    return {**json.loads((out / "final_metrics.json").read_text()), "seconds": time.perf_counter() - started}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("commits", nargs=2, metavar="COMMIT")
    parser.add_argument("--configs", type=int, default=7, help="configurations to train at each commit (default 7)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random draw of configurations (default 0)")
    parser.add_argument("--jobs", type=int, default=2, help="trainings at once, one CPU each (default 2)")
    args = parser.parse_args()
    configs = demo_configs(args.configs, args.seed)
    with tempfile.TemporaryDirectory(prefix="same_results_") as tmp:
        tmp = Path(tmp)
        base = tmp / "base.yaml"
        base.write_text(yaml.safe_dump(load_space("demo").base))
        if (ROOT.parent / "shared").exists():  # beside the checkouts as beside this one (shared data for --set paths)
            (tmp / "shared").symlink_to(ROOT.parent / "shared")
        checkouts = []
        for index, commit in enumerate(args.commits):
            checkout = tmp / f"commit{index}"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(checkout), commit], check=True)
            checkouts.append(checkout)
        try:
            jobs = [(c, i) for i in range(len(configs)) for c in range(2)]
            with ThreadPoolExecutor(args.jobs) as pool:
                results = list(pool.map(lambda job: train(checkouts[job[0]], base, configs[job[1]], tmp / f"run{job[0]}_{job[1]}"), jobs))
        finally:
            for checkout in checkouts:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(checkout)], check=False)
    a, b = args.commits
    print(f"demo space, {len(configs)} configurations (random draw, seed {args.seed}), one thread each, {args.jobs} at a time\n")
    print(f"| configuration | dev @ {a} | dev @ {b} | sparsity @ {a} | sparsity @ {b} | s @ {a} | s @ {b} | equal |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    equal = 0
    for i, overrides in enumerate(configs):
        x, y = results[2 * i], results[2 * i + 1]
        same = all(x[k] == y[k] for k in ("target_dev", "target_test", "remaining_params"))
        equal += same
        print(f"| {', '.join(o.split('.', 1)[1] for o in overrides)} | {x['target_dev']:.3f} | {y['target_dev']:.3f} | "
              f"{x['exact_sparsity']:.3f} | {y['exact_sparsity']:.3f} | {x['seconds']:.0f} | {y['seconds']:.0f} | {'yes' if same else 'NO'} |")
    print(f"\n{equal} of {len(configs)} configurations give equal dev, test and remaining parameters")


if __name__ == "__main__":
    main()
