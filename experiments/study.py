"""The real-data study: does searched transfer beat the baselines when a pruned MiniLM-L6 must learn a
data-poor task?

Pairs (data from ../shared/data), each target limited to 1,000 training examples where it has more:
    sst2_imdb  SST-2 (1,000 sentences)  <- IMDB
    rte_mnli   RTE (1,990 pairs; 500 held out as its test split)  <- MNLI-subset
    mrpc_mnli  MRPC (1,000 pairs)  <- MNLI-subset   (the pilot's stand-in when RTE stays at chance)
Per pair: a dense (unpruned) reference on 3 seeds, the ceiling. Per cell (pair x target sparsity 0.6 / 0.8),
three experiments, each one sitting's work on 2 CPUs:
    baselines  no_transfer / sequential / multitask x 3 seeds (a grid)
    search     the how/what/when TPE search, `search_trials` trials on seed 0
    rerun      the search's dev-best configuration on seeds 1 and 2
and, with the search of issue 27, one experiment that does all of it (run with `--only PAIR:SPARSITY:pick`):
    pick       baselines, the profile's `pick` searched configurations and its confirmation stage (cpu: one seed each,
               then the top configuration, the best baseline and no_transfer on 3 fresh seeds, 18 trainings, so that
               a cell fits one sitting); its verdict is the cell's pick
The step budget comes from the pilot (experiments/pilot.py), not a guess.

    python experiments/study.py --only sst2_imdb:0.6:baselines   # one experiment (resumed if it was interrupted)
    python experiments/study.py --only sst2_imdb:dense
    python experiments/study.py --report                         # docs/RESULTS.md from experiments/results alone
    python experiments/study.py --profile full --address auto --gpus-per-worker 1   # the GPU profile
    python experiments/study.py --profile full --local-workers 8 --only sst2_imdb:dense   # grid parts, no Ray

Each finished experiment's compact results (trial and history frames as parquet, each trial's resolved
config; never checkpoints) go to experiments/results/<profile>/<experiment>/ to be committed.
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from study_cells import HERE, PAIRS, PARTS, PICK, PRESETS, PROFILES, RESULTS, experiment_name  # noqa: E402


def base_config(pair: str, sparsity: float, profile: dict) -> dict:
    p, budget = profile, profile["budget"][pair]
    return {
        "model": {"name_or_path": "all-MiniLM-L6-v2", "max_seq_length": PAIRS[pair]["seq"]},
        **PAIRS[pair]["config"],
        "pruning": {"target_sparsity": sparsity, "warmup_steps": budget["warmup"], "finetune_steps": budget["finetune"]},
        "max_steps": budget["max_steps"], "batch_size": p["batch"], "eval_every": p["eval_every"],
        "eval_max_examples": p["eval_max_examples"],
    }


def dense_config(pair: str, profile: dict) -> dict:
    base = base_config(pair, 0.0, profile)
    return {**base, "transfer": {}, "pruning": {"target_sparsity": 0.0, "structures": [], "warmup_steps": 0}}


def space_of(pair: str, sparsity: float | None, part: str, profile: dict, results: Path, distill: bool = False):
    """(search space, sampler, trials) of one experiment of the study; `results`: the profile's compact results
    (a rerun reads its search's best configuration there); `distill`: the pruned runs distil from the
    dense model (its teacher is the dense reference's configuration, trained once per seed and cached)."""
    from search_spaces import load_space, space_from_dict

    name = experiment_name(pair, sparsity, part, distill)
    seeds = profile["seeds"]
    if part == "dense":
        space = {"description": "dense reference", "base": {**dense_config(pair, profile), "seed": seeds[0]},
                 "parameters": {"transfer.preset": {"choices": ["no_transfer"]}}, "repeats": len(seeds)}
        return space_from_dict(space, name=name), "grid", len(seeds)
    base = base_config(pair, sparsity, profile)
    if distill:
        base["distill"] = {"enabled": True}
    if part == "baselines":
        space = {"description": "baselines", "base": {**base, "seed": seeds[0]},
                 "parameters": {"transfer.preset": {"choices": list(PRESETS)}}, "repeats": len(seeds)}
        return space_from_dict(space, name=name), "grid", len(PRESETS) * len(seeds)
    if part == "search":
        hww = load_space("how_what_when").to_dict()
        params = {k: v for k, v in hww["parameters"].items() if k not in ("pruning.target_sparsity", "seed")}
        space = {"description": "how/what/when", "base": {**base, "seed": seeds[0]}, "parameters": params, "repeats": 1}
        return space_from_dict(space, name=name), "tpe", profile["search_trials"]
    if part == PICK:
        hww = load_space("how_what_when").to_dict()
        params = {k: v for k, v in hww["parameters"].items() if k != "pruning.target_sparsity"}
        space = {"description": "baselines, how/what/when search, confirmation", "base": {**base, "seed": seeds[0]},
                 "parameters": params, "repeats": profile["pick"]["repeats"]}
        return space_from_dict(space, name=name), "tpe", profile["pick"]["configurations"]
    if part == "rerun":
        best = best_searched_config(pair, sparsity, results, distill)
        space = {"description": "the search's dev-best configuration on the other seeds", "base": {**best, "seed": seeds[1]},
                 "parameters": {"max_steps": {"choices": [best["max_steps"]]}}, "repeats": len(seeds) - 1}
        return space_from_dict(space, name=name), "grid", len(seeds) - 1
    raise ValueError(part)


def best_searched_config(pair: str, sparsity: float, folder: Path, distill: bool = False) -> dict:
    """The resolved config of the search's best trial on dev (final evaluation), as a plain dict, read from the
    search's committed compact results, so that a rerun needs neither its storage nor the sitting that searched."""
    import pandas as pd

    name = experiment_name(pair, sparsity, "search", distill)
    trials_file, configs_file = folder / name / "trials.parquet", folder / name / "configs.jsonl"
    if not trials_file.is_file() or not configs_file.is_file():
        raise SystemExit(f"[study] {pair}:{sparsity}:rerun needs the search's compact results in {folder / name} "
                         f"(run {pair}:{sparsity}:search first)")
    trials = pd.read_parquet(trials_file)
    done = trials[trials["complete"]]
    best = done.loc[done["target_dev"].idxmax(), "trial_id"]
    configs = {row["trial_id"]: row["config"] for row in map(json.loads, configs_file.read_text().splitlines())}
    return configs[best]


def resolved_configs(path: str) -> dict:
    """trial id -> the validated config that trial ran with (a plain dict)."""
    from analysis.frames import Experiment

    exp = Experiment(path)
    configs = {trial_id: exp.config(trial_dir, trial_id) for trial_dir, trial_id, _ in exp.trial_dirs()}
    return {trial_id: config.to_dict() for trial_id, config in configs.items() if config is not None}


def run_experiment(pair, sparsity, part, profile, args, storage) -> str:
    """Launch one experiment, or resume it where an earlier sitting left it; then save its compact results."""
    from analysis import trial_frame
    from raysearch.distributed.search import launch, resume
    from raysearch.distributed.settings import SearchSettings
    from raysearch.experiment import experiment_path, holds_experiment, tune_has_saved

    space, sampler, trials = space_of(pair, sparsity, part, profile, RESULTS / args.profile, args.distill)
    name = space.name
    path = experiment_path(storage, name)
    started = time.perf_counter()
    frame = trial_frame([path]) if holds_experiment(path) else None
    if part == PICK:  # a staged search is done once its confirmation has run, whatever its trial count
        settings = SearchSettings(num_samples=trials, sampler=sampler, seed=0, workers_per_trial=args.workers_per_trial,
                                  gpus_per_worker=args.gpus_per_worker, confirm_top=profile["pick"]["confirm_top"],
                                  confirm_seeds=profile["pick"]["confirm_seeds"])
        finished = lambda f: f is not None and len(f) and f["complete"].all() and (f["stage"] == "confirm").any()  # noqa: E731
    else:  # this study's first design: one seed per experiment's configuration, no baselines or confirmation of its own
        settings = SearchSettings(num_samples=trials if sampler != "grid" else 1, sampler=sampler, seed=0, baselines=False,
                                  confirm_seeds=0, workers_per_trial=args.workers_per_trial, gpus_per_worker=args.gpus_per_worker)
        finished = lambda f: f is not None and int(f["complete"].sum()) >= trials  # noqa: E731
    if finished(frame):
        print(f"[study] {name}: done ({int(frame['complete'].sum())} trials)", flush=True)
    elif holds_experiment(path) and tune_has_saved(path):
        print(f"[study] {name}: {int(frame['complete'].sum())} trials finished; resuming", flush=True)
        resume(path)
    else:
        launch(space, settings, storage, name, quiet=args.quiet)
    frame = trial_frame([path])
    if not finished(frame):  # Ctrl-C: Tune stops the search and returns; the next sitting resumes it
        raise SystemExit(f"[study] {name}: {int(frame['complete'].sum())} trials finished, not all it needs; rerun the same command to resume it")
    minutes = (time.perf_counter() - started) / 60
    save_compact(path, RESULTS / args.profile / name, minutes, " ".join(["python experiments/study.py", *sys.argv[1:]]))
    print(f"[study] {name}: {len(frame)} trials; compact results in {RESULTS / args.profile / name}", flush=True)
    return path


def run_experiment_locally(pair, sparsity, part, profile, args, storage) -> str:
    """A grid experiment (baselines, dense, rerun) without Ray, for a machine that has none (a lent GPU box): each
    trial is a `python -m raysearch train` process, `--local-workers` at a time, each with its share of the CPUs
    (on a GPU machine they share the GPU). The search needs Ray. A stopped sitting is resumed: finished runs are
    kept, the others continue from their newest checkpoint."""
    import os
    import subprocess

    import yaml

    from analysis import run_frames
    from raysearch.loop import available_cpus
    from raysearch.run_folder import checkpoints_in

    space, sampler, trials = space_of(pair, sparsity, part, profile, RESULTS / args.profile, args.distill)
    if sampler != "grid":
        raise SystemExit(f"[study] {space.name}: the how/what/when search needs Ray (Tune + Optuna); run it without --local-workers")
    folder = Path(storage) / space.name
    (folder / "configs").mkdir(parents=True, exist_ok=True)
    from search_spaces.space import SEED_KEY

    runs = [(folder / f"trial_{i:03d}", space.trial_config(flat, seed=flat[SEED_KEY])) for i, flat in enumerate(space.grid_points())]
    pending = [(run_dir, config) for run_dir, config in runs if not (run_dir / "final_metrics.json").is_file()]
    threads = max(1, available_cpus() // args.local_workers)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")]))}
    print(f"[study] {space.name}: {len(runs) - len(pending)}/{len(runs)} runs finished; {args.local_workers} at a time, "
          f"{threads} threads each", flush=True)
    started, running, failed = time.perf_counter(), [], []
    while pending or running:
        while pending and len(running) < args.local_workers:
            run_dir, config = pending.pop(0)
            config_file = folder / "configs" / f"{run_dir.name}.yaml"
            config_file.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
            command = [sys.executable, "-m", "raysearch", "train", str(config_file), "--output-dir", str(run_dir),
                       "--threads", str(threads), "--quiet", *(["--resume"] if checkpoints_in(run_dir) else [])]
            log = (folder / f"{run_dir.name}.log").open("a")
            running.append((run_dir, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env), log))
        time.sleep(1)
        for item in [r for r in running if r[1].poll() is not None]:
            running.remove(item)
            item[2].close()
            if item[1].returncode:
                failed.append(item[0].name)
            print(f"[study] {space.name}: {item[0].name} {'failed (see its .log)' if item[1].returncode else 'finished'} "
                  f"at {(time.perf_counter() - started) / 60:.1f} min", flush=True)
    trial_rows, history = run_frames([run_dir for run_dir, _ in runs], space.name)
    complete = int(trial_rows["complete"].sum())
    if complete < trials:
        raise SystemExit(f"[study] {space.name}: {complete}/{trials} runs finished ({', '.join(failed)} failed); "
                         "rerun the same command to resume the others")
    configs = {run_dir.name: config.to_dict() for run_dir, config in runs}
    write_compact(RESULTS / args.profile / space.name, space.name, trial_rows, history, configs,
                  (time.perf_counter() - started) / 60, " ".join(["python experiments/study.py", *sys.argv[1:]]))
    print(f"[study] {space.name}: {complete} runs; compact results in {RESULTS / args.profile / space.name}", flush=True)
    return str(folder)


def save_compact(path: str, out: Path, minutes: float, command: str):
    """What the report needs and nothing more: trial and history frames, resolved configs, provenance."""
    from analysis import history_frame, trial_frame

    write_compact(out, Path(path).name, trial_frame([path]).drop(columns=["experiment_path"]), history_frame([path]),
                  resolved_configs(path), minutes, command)


def write_compact(out: Path, experiment: str, trials, history, configs: dict, minutes: float, command: str):
    out.mkdir(parents=True, exist_ok=True)
    trials.to_parquet(out / "trials.parquet", index=False)
    history.to_parquet(out / "history.parquet", index=False)
    (out / "configs.jsonl").write_text("".join(json.dumps({"trial_id": t, "config": c}) + "\n" for t, c in configs.items()))
    info = out / "experiment.json"
    previous = json.loads(info.read_text()) if info.exists() else {}
    sittings = previous.get("sittings", []) + [{"command": command, "minutes": round(minutes, 1), "finished": time.strftime("%Y-%m-%d %H:%M"),
                                                "commit": code_commit()}]
    info.write_text(json.dumps({"experiment": experiment, "sittings": sittings}, indent=2))


def code_commit() -> str | None:
    """The commit of the code that ran (a study runs from a worktree pinned to one), with "+changes" if it was edited."""
    import subprocess

    def git(*args):
        return subprocess.run(["git", "-C", str(HERE), *args], capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "HEAD")
    return (commit + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")) if commit else None


def parse_only(items: list[str]) -> list[tuple[str, float | None, str]]:
    """`pair:sparsity[:part]` or `pair:dense` -> experiments, in the order they must run."""
    out = []
    for item in items:
        fields = item.split(":")
        if fields[0] not in PAIRS or len(fields) not in (2, 3):
            raise SystemExit(f"--only {item}: write PAIR:SPARSITY[:PART] or PAIR:dense, with PAIR one of {', '.join(PAIRS)}")
        if fields[1] == "dense":
            out.append((fields[0], None, "dense"))
            continue
        try:
            sparsity = float(fields[1])
        except ValueError:
            raise SystemExit(f"--only {item}: {fields[1]!r} is not a sparsity (e.g. 0.6) or 'dense'") from None
        parts = [fields[2]] if len(fields) == 3 else list(PARTS)
        if any(p not in (*PARTS, PICK) for p in parts):
            raise SystemExit(f"--only {item}: the part is one of {', '.join((*PARTS, PICK))}")
        out += [(fields[0], sparsity, p) for p in parts]
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=list(PROFILES), default="cpu")
    parser.add_argument("--storage", default="runs/study", help="where the experiments (with checkpoints) go")
    parser.add_argument("--only", action="append", metavar="PAIR:SPARSITY[:PART]", help="run these experiments, e.g. sst2_imdb:0.6:search")
    parser.add_argument("--report", action="store_true", help="regenerate docs/RESULTS.md from experiments/results")
    parser.add_argument("--address", help="Ray cluster address (default: a local Ray)")
    parser.add_argument("--workers-per-trial", type=int, default=1)
    parser.add_argument("--gpus-per-worker", type=float, default=0.0)
    parser.add_argument("--local-workers", type=int, metavar="N",
                        help="run grid experiments (baselines, dense, rerun) without Ray, N trial processes at a time")
    parser.add_argument("--distill", action="store_true", help="the pruned runs distil from the dense model (experiments named *-distill)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    if args.report:
        from study_report import write_results

        print(f"wrote {write_results(RESULTS / args.profile, args.profile, PROFILES[args.profile])}")
        return
    if not args.only:
        raise SystemExit("give --only PAIR:SPARSITY[:PART] (one sitting's experiments) or --report")
    experiments = parse_only(args.only)
    storage = str(Path(args.storage).resolve() / args.profile)
    if args.local_workers is not None:
        if args.local_workers < 1:
            raise SystemExit(f"--local-workers must be >= 1, got {args.local_workers}")
        for pair, sparsity, part in experiments:
            run_experiment_locally(pair, sparsity, part, PROFILES[args.profile], args, storage)
        return
    from raysearch.distributed.auth import use_cluster_token

    use_cluster_token()  # before ray is imported: Ray reads its auth mode then
    import ray

    from raysearch.distributed.cluster import init_ray

    init_ray(args.address)
    try:
        for pair, sparsity, part in experiments:
            run_experiment(pair, sparsity, part, PROFILES[args.profile], args, storage)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
