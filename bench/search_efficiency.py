"""Search efficiency of Optuna's samplers on the demo space: hypervolume after 8, 16 and 32 trials, over search seeds.

Each search runs without Ray, in a pool of `--jobs` processes (one torch thread each, one search per process at a
time). A search keeps two trials in flight as a 2-CPU Ray search does: it asks for two and draws both configurations,
then trains both and tells both, so the second is drawn while the first is pending and the constant liar acts as it
does under Tune. (The searches in RESULTS/searches-sequential/ drew the second configuration only after the first was
told: a sequential search. Random search is the same either way; TPE and GP are not.) `random` is Optuna's
RandomSampler: the same distribution as Tune's random search over the space.

Every trained configuration's result is kept in RESULTS/results.jsonl, keyed by its resolved config. Training on a CPU
is deterministic (the same config gives the same result: checked on the demo), so a configuration met again costs
nothing: `none` coupling has no other parameter, and a TPE search's random start-up trials are its seed's first
random-search trials (the same RandomSampler seed). A stopped benchmark, run again, picks up where it stopped.

    python bench/search_efficiency.py [--samplers random tpe tpe-group] [--seeds 0 1 2 3 4] [--trials 32] [--jobs 2]
    python bench/search_efficiency.py --samplers tpe-group-s4 --trials 16   # 4 random start-up trials, 16-trial searches
    python bench/search_efficiency.py --samplers tpe-distinct-s4 --trials 16  # proposals of trained configurations redrawn
    python bench/search_efficiency.py --samplers tpe-cover-distinct-s4 --trials 16  # and the first 3 cover the coupling modes
    python bench/search_efficiency.py --summarize      # the tables from what RESULTS holds so far
    python bench/search_efficiency.py --summarize --searches searches-sequential   # the earlier, sequential searches
"""
import argparse
import hashlib
import json
import multiprocessing
import re
import tempfile
import time
import warnings
from pathlib import Path

import optuna
import pandas as pd

from analysis.pareto import hypervolume
from raysearch.distributed.distinct import MAX_REDRAWS  # the product's limit: then a trained configuration is kept
from raysearch.distributed.search import optuna_sampler, tpe_startup_trials
from search_spaces import load_space

IN_FLIGHT = 2  # trials a search runs at once: what 2 CPUs give a Ray search of 1-CPU trials
DEFAULT = "tpe-distinct"  # the shipped default, `raysearch launch --sampler tpe`: TPE, finished configurations drawn again
KEPT = ("target_dev", "target_test", "remaining_params", "full_params", "exact_sparsity")


def parse_name(name: str) -> tuple:
    """(sampler, cover, distinct, start-up trials text or None) from e.g. `tpe-cover-distinct-s4`."""
    base, cover, distinct, startup_text = re.fullmatch(r"(.+?)(-cover)?(-distinct)?(?:-s(\d+))?", name).groups()
    return base, bool(cover), bool(distinct), startup_text


def make_sampler(name: str, seed: int, trials: int) -> optuna.samplers.BaseSampler:
    """A sampler by name; a TPE or GP name may end in `-sN` for N random start-up trials (else the product's count).
    `-distinct` before it (e.g. `tpe-distinct-s4`): a configuration the search has trained is told its results again
    and the sampler asked anew, without counting a trial, as `raysearch launch` does; `-cover` before that: the first
    trials take each coupling mode once (`covering_points`)."""
    base, _, _, startup_text = parse_name(name)
    startup = int(startup_text) if startup_text else tpe_startup_trials(trials)
    if startup_text and base not in ("tpe", "tpe-group", "tpe-independent", "gp"):
        raise SystemExit(f"search_efficiency: {name!r}: only a TPE or GP sampler has start-up trials; drop the -s{startup_text}")
    if base == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if base in ("tpe", "nsga2"):  # what the product builds for --sampler
        return optuna_sampler(base, seed, trials, startup_trials=startup)
    if base == "tpe-group":  # the conditional parameters modelled jointly within each group of co-occurring ones
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True, n_startup_trials=startup)
    if base == "tpe-independent":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True, n_startup_trials=startup)
    if base == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup, deterministic_objective=True)
    raise SystemExit(f"search_efficiency: unknown sampler {name!r}; choose from random, tpe, tpe-group, tpe-independent, gp, "
                     f"nsga2 (a TPE or GP name may end in -sN: N random start-up trials, e.g. tpe-group-s4)")


def covering_points(space) -> list[dict]:
    """`-cover`: partial points that between them take every choice of each categorical parameter others are
    conditional on (the coupling mode), enqueued as a search's first trials. A random start-up of 4 trials misses
    one of 3 coupling modes with probability 5/9, and TPE then models that branch's parameters from nothing.
    Measured, not shipped: it did not raise the mean hypervolume after 16 trials (docs/PERFORMANCE.md)."""
    named = {key for p in space.params for key in p.when}
    roots = [p for p in space.params if p.path in named and p.kind == "categorical"]
    count = max((len(p.choices) for p in roots), default=0)
    return [{p.path: p.choices[i % len(p.choices)] for p in roots} for i in range(count)]


# ------------------------------------------------------------------ results kept across runs


def config_key(config) -> str:
    return hashlib.sha1(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()


def read_results(folder: Path) -> dict:
    path = folder / "results.jsonl"
    results = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut off by a stopped run
            continue
        results[row["key"]] = row
    return results


# ------------------------------------------------------------------ one search (in a pool process)

_WORKER = {}


def _start_worker(space_name: str, overrides: list, folder: str):
    import torch

    from raysearch.tasks import load_task

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(space_name).with_base(overrides)
    base = space.trial_config({})  # the tasks are loaded once: every trial of the space reads the same data
    target, transfer = load_task(base.target, "target"), load_task(base.transfer.task, "transfer.task")
    _WORKER.update(space=space, folder=Path(folder), tasks={True: (target, transfer), False: (target, None)})


def _result(config) -> dict:
    """The config's final metrics: kept from an earlier training, or trained now and kept."""
    from raysearch.loop import run
    from raysearch.run_folder import LocalReporter

    key, folder = config_key(config), _WORKER["folder"]
    kept = read_results(folder).get(key)  # read again each time: another process may have trained it meanwhile
    if kept is not None:
        return {**kept, "trained_s": 0.0}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        final = run(config, LocalReporter(tmp, keep_checkpoints=1), tasks=_WORKER["tasks"][config.transfer.active], threads=1)
    row = {"key": key, **{k: final[k] for k in KEPT}, "trained_s": time.perf_counter() - started}
    with (folder / "results.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")
    return row


def run_search(sampler_name: str, seed: int, trials: int) -> str:
    space, folder = _WORKER["space"], _WORKER["folder"]
    directions = ["maximize" if mode == "max" else "minimize" for mode in space.modes]
    study = optuna.create_study(directions=directions, sampler=make_sampler(sampler_name, seed, trials))
    _, cover, distinct, _ = parse_name(sampler_name)
    for point in covering_points(space) if cover else []:  # the first trials take each coupling mode once
        study.enqueue_trial(point)
    told = {}  # config key -> objective values of the configurations this search has finished
    redrawn = 0
    rows = []
    while len(rows) < trials:
        asked = []
        for _ in range(min(IN_FLIGHT, trials - len(rows))):
            for attempt in range(MAX_REDRAWS + 1):
                trial = study.ask()
                space.sample(trial)
                config = space.trial_config(trial.params)
                if not distinct or config_key(config) not in told or attempt == MAX_REDRAWS:
                    break
                study.tell(trial, told[config_key(config)])  # what the product's searcher does: no trial spent
                redrawn += 1
            asked.append((trial, config))
        for trial, config in asked:
            result = _result(config)
            values = told[config_key(config)] = [result[metric] for metric in space.metrics]
            study.tell(trial, values)
            rows.append({"sampler": sampler_name, "seed": seed, "trial": trial.number, **trial.params,
                         **{k: result[k] for k in KEPT}, "trained_s": result["trained_s"]})
    out = folder / "searches" / f"{sampler_name}-seed{seed}.csv"
    pd.DataFrame(rows).to_csv(out, index=False)
    return f"{out.stem}: {trials} trials, {sum(r['trained_s'] > 0 for r in rows)} trained, " \
           f"{sum(r['trained_s'] for r in rows) / 60:.1f} min of training" + (f", {redrawn} proposals redrawn" if distinct else "")


def _run_search(job: tuple) -> str:
    return run_search(*job)


# ------------------------------------------------------------------ tables


def hypervolumes(searches: pd.DataFrame, budgets) -> pd.DataFrame:
    """Hypervolume of each search's first b trials (reference: quality 0 and the dense model's parameters)."""
    rows = []
    for (sampler, seed), search in searches.groupby(["sampler", "seed"]):
        search = search.sort_values("trial")
        reference = [0.0, float(search["full_params"].max())]
        rows += [{"sampler": sampler, "seed": seed, "trials": b, "hypervolume": hypervolume(search.iloc[:b], reference=reference)}
                 for b in budgets if b <= len(search)]
    return pd.DataFrame(rows)


def summary_table(hv: pd.DataFrame) -> str:
    summary = hv.groupby(["sampler", "trials"])["hypervolume"].agg(["mean", "std", "count"]).reset_index()
    lines = ["| sampler | trials | hypervolume mean | std | seeds |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r.sampler} | {r.trials} | {r.mean:.4f} | {r.std:.4f} | {r.count} |" for r in summary.itertuples()]
    return "\n".join(lines)


def paired_table(hv: pd.DataFrame) -> str:
    """Each sampler minus random search at the same budget and seed: mean, std, and seeds where it is ahead."""
    wide = hv.pivot_table(index=["trials", "seed"], columns="sampler", values="hypervolume")
    if "random" not in wide:
        return "(no random search to pair with)"
    lines = ["| sampler | trials | minus random (mean) | std | ahead in |", "| --- | --- | --- | --- | --- |"]
    for sampler in [s for s in wide.columns if s != "random"]:
        for budget, group in wide.groupby(level="trials"):
            diff = (group[sampler] - group["random"]).dropna()
            if len(diff):
                lines.append(f"| {sampler} | {budget} | {diff.mean():+.4f} | {diff.std():.4f} | {ahead(diff)} |")
    return "\n".join(lines)


def target_verdict(hv: pd.DataFrame, sampler: str = DEFAULT) -> str:
    """The target: a sampler (the shipped one first) after 16 trials >= random search after 32, on the mean over seeds."""
    def at(name, budget):
        return hv[(hv["sampler"] == name) & (hv["trials"] == budget)].set_index("seed")["hypervolume"]

    ours, random = at(sampler, 16), at("random", 32)
    seeds = ours.index.intersection(random.index)
    if not len(seeds):
        return f"target {sampler}@16 >= random@32: not measured yet"
    diff = ours[seeds] - random[seeds]
    verdict = "met" if ours[seeds].mean() >= random[seeds].mean() else "NOT met"
    low, high = paired_interval(diff)
    return (f"target {sampler}@16 >= random@32 (mean of {len(seeds)} seeds): {ours[seeds].mean():.4f} vs {random[seeds].mean():.4f} "
            f"-> {verdict}; paired difference {diff.mean():+.4f} (std {diff.std():.4f}, 95% interval {low:+.4f} to {high:+.4f}), "
            f"ahead in {ahead(diff)}")


def ahead(diff: pd.Series) -> str:
    """In how many seeds a sampler is strictly ahead (a tie, e.g. equal start-up trials, is not)."""
    return f"{int((diff > 0).sum())} of {len(diff)} seeds"


def paired_interval(diff: pd.Series, level: float = 0.95) -> tuple:
    """Student-t interval of the mean paired difference over seeds (scipy comes with scikit-learn)."""
    from scipy import stats

    if len(diff) < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf(0.5 + level / 2, len(diff) - 1) * diff.std() / len(diff) ** 0.5
    return diff.mean() - half, diff.mean() + half


def report(folder: Path, budgets, searches_folder: str = "searches") -> str:
    files = sorted((folder / searches_folder).glob("*.csv"))
    if not files:
        return f"no finished search in {folder}/{searches_folder}"
    searches = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    hv = hypervolumes(searches, budgets)
    hv.to_csv(folder / ("hypervolumes.csv" if searches_folder == "searches" else f"hypervolumes-{searches_folder}.csv"), index=False)
    trained = read_results(folder)
    spent = sum(r["trained_s"] for r in trained.values()) / 3600
    per_seed = hv.pivot_table(index=["sampler", "seed"], columns="trials", values="hypervolume").round(4)
    verdicts = "\n".join(target_verdict(hv, name) for name in sorted(set(hv["sampler"]) - {"random"}, key=lambda n: not n.startswith(DEFAULT)))
    return "\n\n".join([summary_table(hv), paired_table(hv), verdicts,
                        f"{len(files)} searches, {len(searches)} trials; {len(trained)} distinct configurations trained "
                        f"({spent:.2f} h of training in one process)", "per seed:\n" + per_seed.to_string()])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="demo")
    parser.add_argument("--samplers", nargs="+", default=["random", DEFAULT, "tpe-group"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--trials", type=int, default=32, help="trials per search (default 32)")
    parser.add_argument("--budgets", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--jobs", type=int, default=2, help="searches at once, one CPU each (default 2)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override the space's base config")
    parser.add_argument("--results", default="bench/results/search_efficiency",
                        help="where results and finished searches are kept (default bench/results/search_efficiency)")
    parser.add_argument("--summarize", action="store_true", help="only print the tables from what --results holds")
    parser.add_argument("--searches", default="searches",
                        help="with --summarize: the folder of finished searches in --results to tabulate (default searches; "
                             "searches-sequential: the earlier runs that drew the second trial after the first was told)")
    args = parser.parse_args()
    folder = Path(args.results)
    (folder / "searches").mkdir(parents=True, exist_ok=True)
    if not args.summarize:
        for name in args.samplers:
            make_sampler(name, 0, args.trials)  # an unknown name fails now, not in a pool process
        done = {f.stem for f in (folder / "searches").glob("*.csv")}
        todo = [(s, seed, args.trials) for seed in args.seeds for s in args.samplers if f"{s}-seed{seed}" not in done]
        print(f"{len(todo)} searches to run ({len(done)} finished before), {args.jobs} at a time", flush=True)
        started = time.perf_counter()
        context = multiprocessing.get_context("spawn")
        with context.Pool(args.jobs, initializer=_start_worker, initargs=(args.space, args.set, str(folder))) as pool:
            for line in pool.imap_unordered(_run_search, todo):
                print(line, flush=True)
        print(f"{(time.perf_counter() - started) / 60:.1f} min", flush=True)
    print(f"\n{args.space} space{' with ' + ', '.join(args.set) if args.set else ''}; results in {folder}\n")
    print(report(folder, args.budgets, args.searches if args.summarize else "searches"))


if __name__ == "__main__":
    main()
