"""The analysis of one or more experiments, computed once into a plain `Analysis` (frames and numbers);
`analysis.report` renders it as Markdown and `analysis.outputs` writes it out with the frames and plots.

    from analysis import analyze_experiments, write_outputs
    result = analyze_experiments(["runs/search/rte-hww"])
    result.front            # the dev-selected Pareto front (a DataFrame)
    write_outputs(result, "runs/analysis")
"""
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from raysearch.config import GROUPS
from raysearch.errors import UserInputError

from .effects import MIN_TRIALS_FOR_CI, baseline_comparison, factor_effects, param_importances
from .frames import Experiment, history_frame, trial_frame
from .pick import verdicts
from .pareto import (DEFAULT_OBJECTIVES, HeldOutCheck, Objectives, attainment_front, best_per_sparsity_bin, check_objectives,
                     default_reference, heldout_check, hypervolume, hypervolume_history, pareto_front, pareto_rank, trials_without)

# columns every analysed frame has (NaN where a frame from elsewhere lacks them)
CONFIG_COLUMNS = ("experiment", "trial_id", "trial_index", "preset", "coupling", "target_sparsity", "transfer_weight",
                  "transfer_start_fraction", "coupling_strength", *(f"group_{g}" for g in GROUPS))


@dataclass
class Analysis:
    trials: pd.DataFrame
    history: pd.DataFrame
    objectives: Objectives
    reference: list
    sets: str  # what the aggregation runs over: seed or experiment
    width: float = 0.1  # of the sparsity bins inside which trials are compared
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
    verdicts: list = None  # analysis.pick.Verdict per target-sparsity level: the pick and whether transfer helps
    unscored: list = None  # finished trials with no number (NaN) for an objective: off every front


def analyze(trials: pd.DataFrame, history: pd.DataFrame | None = None, objectives: Objectives = DEFAULT_OBJECTIVES,
            reference=None, sets: str | None = None, width: float = 0.1, n_boot: int = 1000) -> Analysis:
    """Everything the report shows, computed from a trial frame (and a history frame)."""
    check_objectives(trials, objectives)
    if not 0 < width <= 1:
        raise UserInputError("--bin-width", f"must be in (0, 1], got {width}", "give a sparsity bin width such as 0.1")
    # a frame from elsewhere may carry only some columns: absent config columns are unknown (NaN), absent
    # presets mean "not a named baseline"
    defaults = {"experiment": "unnamed", "preset": "searched", "trial_id": [f"row{i}" for i in range(len(trials))],
                "trial_index": np.arange(1, len(trials) + 1)}
    trials = trials.assign(**{c: defaults.get(c, np.nan) for c in CONFIG_COLUMNS if c not in trials})
    quality = objectives[0][0]
    all_trials = trials
    if "complete" in trials:
        # a trial still running, or one that failed for good, reports numbers from before its final structure: it
        # stays in the trial frame, and is left out of every front, hypervolume and effect
        trials = trials[trials["complete"].astype("boolean").fillna(False).astype(bool)]
    scored = trials.dropna(subset=[c for c, _ in objectives])
    if scored.empty:
        raise UserInputError("experiments", "no trial has finished with both objectives yet",
                             "wait for the first trial to finish (`raysearch status` shows progress), or check the trials' logs")
    if sets is None:
        sets = "experiment" if trials["experiment"].nunique() > 1 else "seed"
    reference = list(reference) if reference is not None else default_reference(trials, objectives)
    result = Analysis(trials=all_trials, history=history if history is not None else pd.DataFrame(), objectives=objectives,
                      reference=reference, sets=sets, width=width)
    result.ranks = pareto_rank(trials, objectives)
    result.unscored = trials_without(trials, objectives)
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
    result.verdicts = verdicts(trials, quality) if "configuration" in trials else []
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
        raise UserInputError("experiments", f"were searched with different objectives ({sorted(found)})", "analyse them separately, or name the objectives with --objective (analyze(..., objectives=...) in Python)")
    return list(found.pop())


def analyze_experiments(paths, objectives: Objectives | None = None, **kwargs) -> Analysis:
    paths = [str(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    trials = trial_frame(paths)
    return analyze(trials, history_frame(paths), objectives or space_objectives(paths), **kwargs)


@dataclass
class FactorAnswer:
    """The answer for one factor: its best level, the effect and its interval, and what that lets us say."""

    question: str
    factor: str
    level: str
    effect: float
    ci_low: float
    ci_high: float
    trials: int
    others: int
    verdict: str


def factor_answers(effects: pd.DataFrame, question: str) -> list[FactorAnswer]:
    """Per factor of one question (how / what / when): the level with the largest effect and its verdict."""
    answers = []
    for name, group in effects[effects["question"] == question].groupby("factor", sort=False):
        if not group["effect"].notna().any():
            continue
        best = group.loc[group["effect"].idxmax()]
        confounded = best.get("confounded_with") or ""
        if confounded:
            verdict = (f"confounded with {confounded} in these trials (they split the trials the same way): "
                       "the effect cannot be credited to one of them")
        elif math.isnan(best["ci_low"]):
            verdict = f"too few trials to tell (an interval needs {MIN_TRIALS_FOR_CI} a side)"
        elif best["ci_high"] - best["ci_low"] < 1e-12:
            verdict = "the bootstrap cannot vary (every resample gives the same difference), so it says nothing: cannot tell"
        else:
            verdict = "clear" if best["ci_low"] > 0 else "not distinguishable from 0 at this trial count"
        answers.append(FactorAnswer(question, name, str(best["level"]), float(best["effect"]), float(best["ci_low"]),
                                    float(best["ci_high"]), int(best["trials"]), int(best["others"]), verdict))
    return answers
