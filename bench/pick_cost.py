"""What a correct pick costs: trainings and CPU-minutes of the staged search on two synthetic pairs whose answer is
known, for several stage settings, side by side in one run.

  * helps: the demo pair (the target's labels are a function of the topics the transfer task names);
  * noise: the same transfer sentences with random labels (transfer cannot help).
A pick is correct when it is a transfer configuration on `helps` and `no_transfer` on `noise`. Each search is the demo
space at one target sparsity (0.5), short trainings of the tiny model (100 steps), run without Ray one trial at a time
(raysearch.distributed.staged.drive_locally), `--jobs` searches at once with one torch thread each.

    python bench/pick_cost.py [--seeds 0 1 2] [--configurations 4] [--jobs 2]
"""
import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

# name -> (repeats, confirm_top, confirm_seeds): the default, successive halving over seeds, no confirmation
SETTINGS = {"default (R2, top3, C3)": (2, 3, 3), "halving (R1, top3, C3)": (1, 3, 3), "no confirmation (R2)": (2, 3, 0),
            "small (R1, top1, C2)": (1, 1, 2)}
PAIRS = {"helps": "synthetic:transfer", "noise": "synthetic:noise"}
OUT = Path(__file__).resolve().parent / "results" / "pick_cost.jsonl"


class _NoReports:
    keeps_checkpoints_alone = True

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="pick_cost_"))

    def checkpoint_dir(self, step):
        return self.root

    def report(self, metrics, checkpoint):
        pass


def one_search(job: tuple) -> dict:
    setting, pair, seed, configurations = job
    import optuna

    from analysis.pick import verdicts
    from raysearch.distributed.distinct import DistinctOptunaSearch
    from raysearch.distributed.staged import StagedSearch, drive_locally
    from raysearch.loop import run
    from search_spaces import load_space, space_from_dict

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    repeats, top, confirm = SETTINGS[setting]
    space = load_space("demo").with_base(["max_steps=100", "eval_every=50", "pruning.warmup_steps=40", "pruning.finetune_steps=20",
                                          f"transfer.task.source={PAIRS[pair]}"])
    data = space.to_dict()
    space = space_from_dict({**data, "parameters": {**data["parameters"], "pruning.target_sparsity": {"choices": [0.5]}}})
    inner = DistinctOptunaSearch(space=space.define_by_run(), metric=space.metrics, mode=space.modes,
                                 sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=2), space_dict=space.to_dict())
    search = StagedSearch(inner, space.to_dict(), repeats=repeats, configurations=configurations, confirm_top=top, confirm_seeds=confirm)
    started = time.perf_counter()
    trials = drive_locally(search, lambda config, trial_id: run(config, _NoReports(), threads=1))
    minutes = (time.perf_counter() - started) / 60
    [v] = verdicts(trials)
    correct = (v.transfer_helps is True) if pair == "helps" else (v.pick == "no_transfer")
    return {"setting": setting, "pair": pair, "seed": seed, "configurations": configurations, "trainings": len(trials),
            "cpu_minutes": minutes, "pick": v.pick, "transfer_helps": v.transfer_helps, "correct": correct,
            "pick_test_vs_no_transfer": v.vs_no_transfer_test.mean, "best_transfer": v.best_transfer,
            "best_transfer_dev_vs_no_transfer": v.best_transfer_vs_no_transfer_dev.mean}


def table(rows: list[dict]) -> str:
    import pandas as pd

    frame = pd.DataFrame(rows)
    out = ["| setting | pair | searches | trainings (mean) | CPU-min (mean) | correct picks | pick's test vs no_transfer (mean pts) |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for (setting, pair), g in frame.groupby(["setting", "pair"], sort=False):
        out.append(f"| {setting} | {pair} | {len(g)} | {g['trainings'].mean():.1f} | {g['cpu_minutes'].mean():.2f} | "
                   f"{int(g['correct'].sum())}/{len(g)} | {100 * g['pick_test_vs_no_transfer'].fillna(0).mean():+.1f} |")
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sampler seeds (default 0 1 2)")
    parser.add_argument("--configurations", type=int, default=4, help="searched configurations per search (default 4)")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--jobs", type=int, default=2, help="searches at once, one CPU each (default 2)")
    parser.add_argument("--summarize", action="store_true", help="print the table of the results so far, run nothing")
    args = parser.parse_args()
    done = [json.loads(line) for line in OUT.read_text().splitlines()] if OUT.is_file() else []
    if not args.summarize:
        seen = {(r["setting"], r["pair"], r["seed"], r["configurations"]) for r in done}
        jobs = [(s, p, seed, args.configurations) for s in args.settings for p in PAIRS for seed in args.seeds
                if (s, p, seed, args.configurations) not in seen]
        OUT.parent.mkdir(parents=True, exist_ok=True)
        with ProcessPoolExecutor(args.jobs) as pool:  # resumable: every finished search is appended at once
            for row in pool.map(one_search, jobs):
                done.append(row)
                with OUT.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
    print(table(done))
    return 0


if __name__ == "__main__":
    sys.exit(main())
