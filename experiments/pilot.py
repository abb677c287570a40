"""The study's pilot: learning curves that choose its step budget.

For a study pair: dense fine-tuning and `no_transfer` pruning to 0.6, each on the pair's limited target
data for a long run, evaluated on dev every `--eval-every` steps. The study's `max_steps` is where
`no_transfer` has stopped improving. The two runs go side by side, one torch thread each (2 CPUs).
Curves land in experiments/results/pilot/ (pilot-<profile>/ for a profile other than cpu), compact and committed;
`study.py --report` draws them.

    python experiments/pilot.py --pair sst2_imdb --steps 1200 --warmup 200
    python experiments/pilot.py --pair sst2_imdb --profile full --steps 3000 --warmup 600 --threads 4   # on a GPU
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from study_cells import PAIRS, PROFILES  # noqa: E402
from study_report import pilot_folder  # noqa: E402

METHODS = ("dense", "no_transfer")


def pilot_config(pair: str, method: str, args) -> dict:
    config = {
        "model": {"name_or_path": "all-MiniLM-L6-v2", "max_seq_length": PAIRS[pair]["seq"]},
        **PAIRS[pair]["config"], "transfer": {},
        "max_steps": args.steps, "batch_size": args.batch, "eval_every": args.eval_every, "checkpoint_every": args.steps,
        "eval_max_examples": args.eval_max_examples, "seed": args.seed,
    }
    if method == "dense":
        config["pruning"] = {"target_sparsity": 0.0, "structures": [], "warmup_steps": 0}
    else:
        config["pruning"] = {"target_sparsity": args.sparsity, "warmup_steps": args.warmup}
    return config


def run_one(pair: str, method: str, args) -> pd.DataFrame:
    """One curve, in this process (one thread)."""
    import tempfile

    from raysearch.config import config_from_dict
    from raysearch.loop import run

    class Collect:
        def __init__(self, root):
            self.root, self.rows = Path(root), []

        def checkpoint_dir(self, step):
            return Path(tempfile.mkdtemp(dir=self.root))

        def report(self, metrics, checkpoint):
            self.rows.append(metrics)
            print(f"[pilot] {pair} {method} step {metrics['step']}: dev {metrics['target_dev']:.3f}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory() as scratch:
        reporter = Collect(scratch)
        run(config_from_dict(pilot_config(pair, method, args)), reporter, threads=args.threads)
    frame = pd.DataFrame(reporter.rows)
    frame.insert(0, "method", method)
    frame.insert(0, "pair", pair)
    return frame


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pair", choices=list(PAIRS), required=True)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--warmup", type=int, default=200, help="sparsity warm-up of the no_transfer run")
    parser.add_argument("--sparsity", type=float, default=0.6)
    parser.add_argument("--profile", choices=list(PROFILES), default="cpu",
                        help="the study profile whose budget this pilot chooses: its batch, evaluation settings and results folder")
    parser.add_argument("--eval-every", type=int, help="default: the profile's")
    parser.add_argument("--batch", type=int, help="default: the profile's")
    parser.add_argument("--eval-max-examples", type=int, help="default: the profile's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (the two runs go side by side)")
    parser.add_argument("--method", choices=METHODS, help=argparse.SUPPRESS)  # a child process: one curve to stdout
    args = parser.parse_args()
    profile = PROFILES[args.profile]
    for name, key in (("eval_every", "eval_every"), ("batch", "batch"), ("eval_max_examples", "eval_max_examples")):
        if getattr(args, name) is None:
            setattr(args, name, profile[key])
    if args.method:
        print(run_one(args.pair, args.method, args).to_json(orient="records"))
        return
    started = time.perf_counter()
    children = {m: subprocess.Popen([sys.executable, __file__, *sys.argv[1:], "--method", m], stdout=subprocess.PIPE) for m in METHODS}
    frames = []
    for method, child in children.items():
        out, _ = child.communicate()
        if child.returncode:
            raise SystemExit(f"[pilot] the {method} run failed (exit {child.returncode})")
        frames.append(pd.DataFrame(json.loads(out.decode().strip().splitlines()[-1])))
    curves = pd.concat(frames, ignore_index=True)
    folder = pilot_folder(args.profile)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{args.pair}-seed{args.seed}.csv"
    keep = ["pair", "method", "step", "phase", "target_dev", "target_test", "exact_sparsity", "train_loss", "wall_time"]
    curves[[c for c in keep if c in curves]].to_csv(path, index=False)
    (folder / f"{args.pair}-seed{args.seed}.json").write_text(json.dumps({"command": " ".join(["python", "experiments/pilot.py", *sys.argv[1:]]),
                                                                          "minutes": round((time.perf_counter() - started) / 60, 1)}, indent=2))
    print(curves.pivot_table(index="step", columns="method", values="target_dev").to_string())
    print(f"wrote {path} in {(time.perf_counter() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
