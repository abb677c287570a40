"""The analysis of one or more experiments: computed once into an `Analysis`, then written out as
frames, plots and a short `report.md` that answers how / what / when with numbers.

    from analysis import analyze_experiments, write_outputs
    result = analyze_experiments(["runs/search/rte-hww"])
    result.front            # the dev-selected Pareto front (a DataFrame)
    write_outputs(result, "runs/analysis")
"""
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from raysearch.errors import UserInputError
from raysearch.transfer.groups import GROUPS

from . import plots
from .effects import MIN_TRIALS_FOR_CI, baseline_comparison, factor_effects, param_importances
from .frames import Experiment, coupled_groups, history_frame, save_frames, trial_frame
from .pareto import (DEFAULT_OBJECTIVES, HeldOutCheck, Objectives, attainment_front, best_per_sparsity_bin, check_objectives,
                     default_reference, heldout_check, hypervolume, hypervolume_history, pareto_front, pareto_rank)

MARKER = "raysearch_analysis.json"
CONFIG_COLUMNS = ("experiment", "trial_id", "trial_index", "preset", "coupling", "target_sparsity", "transfer_weight",
                  "transfer_start_fraction", "coupling_strength", *(f"group_{g}" for g in GROUPS))  # marks a folder as analysis output, which a rerun may overwrite


@dataclass
class Analysis:
    trials: pd.DataFrame
    history: pd.DataFrame
    objectives: Objectives
    reference: list
    sets: str  # what the aggregation runs over: seed or experiment
    ranks: pd.Series = None
    front: pd.DataFrame = None
    hypervolumes: dict = field(default_factory=dict)
    method_fronts: pd.DataFrame = None  # per method (baseline preset, or coupling mode of searched trials)
    hypervolume_history: pd.DataFrame = None
    per_bin: pd.DataFrame = None
    attainment: pd.DataFrame = None
    heldout: HeldOutCheck | None = None
    effects: pd.DataFrame = None
    importances: pd.Series = None
    baselines: pd.DataFrame = None


def analyze(trials: pd.DataFrame, history: pd.DataFrame | None = None, objectives: Objectives = DEFAULT_OBJECTIVES,
            reference=None, sets: str | None = None, width: float = 0.1, n_boot: int = 1000) -> Analysis:
    """Everything the report shows, computed from a trial frame (and a history frame)."""
    check_objectives(trials, objectives)
    # a frame from elsewhere may carry only some columns: absent config columns are unknown (NaN), absent
    # presets mean "not a named baseline"
    defaults = {"experiment": "unnamed", "preset": "searched", "trial_id": [f"row{i}" for i in range(len(trials))],
                "trial_index": np.arange(1, len(trials) + 1)}
    trials = trials.assign(**{c: defaults.get(c, np.nan) for c in CONFIG_COLUMNS if c not in trials})
    quality = objectives[0][0]
    scored = trials.dropna(subset=[c for c, _ in objectives])
    if scored.empty:
        raise UserInputError("experiments", "no trial has reported both objectives yet", "wait for the first evaluations, or check the trials' logs")
    if sets is None:
        sets = "experiment" if trials["experiment"].nunique() > 1 else "seed"
    reference = list(reference) if reference is not None else default_reference(trials, objectives)
    result = Analysis(trials=trials, history=history if history is not None else pd.DataFrame(), objectives=objectives,
                      reference=reference, sets=sets)
    result.ranks = pareto_rank(trials, objectives)
    result.front = pareto_front(trials, objectives)
    result.hypervolumes = {name: hypervolume(group, objectives, reference) for name, group in trials.groupby("experiment")}
    result.hypervolume_history = hypervolume_history(trials, objectives, reference)
    result.method_fronts = method_fronts(trials, objectives, reference)
    if sets in trials and "exact_sparsity" in trials:  # aggregation needs something to aggregate over
        result.per_bin = best_per_sparsity_bin(scored, quality, sets=sets, width=width)
        result.attainment = attainment_front(trials, objectives, sets=sets)
    result.heldout = heldout_check(trials, objectives)
    result.effects = factor_effects(trials, quality, width=width, n_boot=n_boot)
    result.importances = param_importances(trials, quality)
    result.baselines = baseline_comparison(trials, quality, width=width)
    return result


def method_of(trials: pd.DataFrame) -> pd.Series:
    """A named baseline, or "searched: <coupling mode>"."""
    preset = trials["preset"] if "preset" in trials else pd.Series("searched", index=trials.index)
    return preset.where(preset != "searched", "searched: " + trials["coupling"].astype(str))


def method_fronts(trials: pd.DataFrame, objectives: Objectives, reference) -> pd.DataFrame:
    """Per method: trials, front size, best quality and the hypervolume of its own front (same reference)."""
    quality = objectives[0][0]
    rows = []
    for method, group in trials.assign(method=method_of(trials)).groupby("method"):
        front = pareto_front(group, objectives)
        rows.append({"method": method, "trials": len(group), "front_points": len(front),
                     f"best_{quality}": group[quality].max(), "hypervolume": hypervolume(group, objectives, reference)})
    return pd.DataFrame(rows)


def space_objectives(paths) -> Objectives:
    """The objectives the experiments were searched with (they must agree)."""
    found = {tuple((o["metric"], o["mode"]) for o in Experiment(str(p)).space.objectives) for p in paths}
    if len(found) > 1:
        raise UserInputError("experiments", f"were searched with different objectives ({sorted(found)})", "analyse them separately or pass objectives=")
    return list(found.pop())


def analyze_experiments(paths, objectives: Objectives | None = None, **kwargs) -> Analysis:
    paths = [str(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    trials = trial_frame(paths)
    return analyze(trials, history_frame(paths), objectives or space_objectives(paths), **kwargs)


# ------------------------------------------------------------------ output


def _fmt(value, spec=".3f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return format(value, spec) if isinstance(value, (int, float)) else str(value)


def _table(frame: pd.DataFrame, formats: dict | None = None) -> str:
    if frame is None or frame.empty:
        return "_(none)_"
    formats = formats or {}
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + " --- |" * len(frame.columns)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v, formats.get(c, ".3f" if isinstance(v, float) else "")) for c, v in zip(frame.columns, row)) + " |")
    return "\n".join(lines)


def answer_lines(effects: pd.DataFrame, question: str, quality: str) -> list[str]:
    """One line per factor: its best level, the effect and interval, and whether the interval excludes 0."""
    lines = []
    rows = effects[effects["question"] == question]
    for name, group in rows.groupby("factor", sort=False):
        best = group.loc[group["effect"].idxmax()] if group["effect"].notna().any() else None
        if best is None:
            continue
        if math.isnan(best["ci_low"]):
            interval, verdict = "no interval", f"too few trials to tell (an interval needs {MIN_TRIALS_FOR_CI} a side)"
        else:
            interval = f"95% CI {best['ci_low']:+.3f} to {best['ci_high']:+.3f}"
            verdict = "clear" if best["ci_low"] > 0 else "not distinguishable from 0 at this trial count"
        lines.append(f"- **{name}**: best level `{best['level']}`, {best['effect']:+.3f} {quality} vs the other levels "
                     f"at matched sparsity ({interval}; {best['trials']} vs {best['others']} trials) — {verdict}.")
    return lines or ["- not enough variation among the trials to say."]


def render_markdown(result: Analysis, plot_files: dict) -> str:
    t, quality = result.trials, result.objectives[0][0]
    objectives = ", ".join(f"{c} ({m})" for c, m in result.objectives)
    complete = int(t["complete"].sum()) if "complete" in t else len(t)
    out = [f"# raysearch analysis: {', '.join(sorted(t['experiment'].unique()))}", "",
           f"{len(t)} trials ({complete} complete), objectives {objectives}. Hypervolume reference point "
           f"{result.reference} (quality 0 and the dense model's prunable parameters); hypervolume is in units of "
           f"quality x sparsity, so 1.0 would be a perfect model with no prunable parameters left.", ""]

    front = result.front.copy()
    front["groups"] = [", ".join(coupled_groups(r)) or "–" for _, r in front.iterrows()]
    shown = [c for c in ["experiment", "trial_id", "preset", "coupling", "groups", "transfer_start_fraction", "transfer_weight",
                         "exact_sparsity", "remaining_params", quality, "target_test"] if c in front]
    out += ["## Pareto front (selected on dev)", "", f"![front]({plot_files['front']})", "",
            _table(front[shown], {"remaining_params": ",.0f"}), ""]

    out += ["## Hypervolume", "", _table(pd.DataFrame({"experiment": list(result.hypervolumes), "hypervolume": list(result.hypervolumes.values())}), {"hypervolume": ".4f"}),
            "", f"![hypervolume history]({plot_files['hypervolume']})", "",
            "Fronts per method (each method's own front, same reference point):", "",
            _table(result.method_fronts, {"hypervolume": ".4f"}), ""]

    h = result.heldout
    out += ["## Held-out check", ""]
    if h is None:
        out += ["No test metric was reported (the target has no labelled test split; set `target.heldout_test_size` to hold one out).", ""]
    else:
        out += [f"Test minus dev over the dev-selected front: {-h.front_gap:+.3f} on average (over all trials: {-h.all_gap:+.3f}). "
                f"The difference, {h.all_gap - h.front_gap:+.3f}, is what selecting on a small dev set adds in optimism (negative: the front "
                f"looks better on dev than it is). {h.test_front_share:.0%} of the front is still non-dominated on test; front hypervolume "
                f"{h.hypervolume_dev:.4f} on dev, {h.hypervolume_test:.4f} on test.",
                "", _table(h.points.drop(columns=["experiment"]), {"remaining_params": ",.0f"}), ""]

    if result.per_bin is not None:
        out += [f"## Best {quality} per sparsity bin over {result.sets}s", "", _table(result.per_bin), ""]
    if result.attainment is not None and len(result.attainment) and t[result.sets].nunique() > 1:
        out += [f"Median (50%) attainment front over {t[result.sets].nunique()} {result.sets}s:", "", _table(result.attainment, {"remaining_params": ",.0f"}), ""]

    out += ["## How / what / when", "", f"Effects on {quality} at matched sparsity (bins of width 0.1), 95% bootstrap intervals. "
            f"![effects]({plot_files['effects']})", ""]
    for question, title in (("how", "How to couple"), ("what", "What to transfer"), ("when", "When to start")):
        out += [f"### {title}", "", *answer_lines(result.effects, question, quality), ""]
    if result.importances is not None and len(result.importances):
        out += ["fANOVA importances for quality (Optuna): " + ", ".join(f"{k} {v:.2f}" for k, v in result.importances.items()), ""]
    out += ["Full table:", "", _table(result.effects), ""]

    out += ["## Baselines", ""]
    if result.baselines is None or not (result.baselines["method"] != "searched (best on dev)").any():
        out += ["No baseline trials (`no_transfer`, `sequential`, `multitask`) in these experiments; launch the `baselines` space and analyse both together.", ""]
    else:
        out += [_table(result.baselines), ""]
    return "\n".join(out)


def _check_out_dir(out: Path):
    """Never overwrite a user's files: only an empty folder or an earlier analysis output is written to."""
    if out.exists() and not out.is_dir():
        raise UserInputError(str(out), "is a file", "give a folder for --out")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise UserInputError(str(out), "is not empty and holds no earlier analysis", "give a new or empty folder for --out")


def write_outputs(result: Analysis, out_dir: str | Path, formats=("parquet", "csv")) -> dict:
    """Frames, plots and report.md under OUT; returns the paths written, by name."""
    out = Path(out_dir)
    _check_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(json.dumps({"experiments": sorted(result.trials["experiment"].unique())}))
    frames = {"trials": result.trials.assign(pareto_rank=result.ranks), "history": result.history,
              "front": result.front, "effects": result.effects, "hypervolume_history": result.hypervolume_history}
    written = {p.name: p for p in save_frames(frames, out, formats)}
    quality = result.objectives[0][0]
    plot_files = {"front": "front.png", "effects": "effects.png", "hypervolume": "hypervolume.png"}
    plots.plot_front(result.trials, result.ranks, quality, out / plot_files["front"])
    plots.plot_effects(result.effects, out / plot_files["effects"], quality)
    plots.plot_hypervolume(result.hypervolume_history, out / plot_files["hypervolume"])
    (out / "report.md").write_text(render_markdown(result, plot_files))
    written.update({name: out / name for name in [*plot_files.values(), "report.md"]})
    return written
