"""Analysis of raysearch experiments: frames, Pareto fronts, hypervolume and the how / what / when report.

Reads experiment folders directly (no Ray needed):

    from analysis import trial_frame, pareto_front, analyze_experiments, write_outputs
    trials = trial_frame(["runs/search/rte-hww"])
    front = pareto_front(trials)                       # target_dev up, remaining_params down
    write_outputs(analyze_experiments(["runs/search/rte-hww"]), "runs/analysis")
"""
from .effects import BASELINES, FACTORS, baseline_comparison, factor_effects, param_importances
from .frames import history_frame, load_frame, run_frames, save_frames, trial_frame
from .pareto import (DEFAULT_OBJECTIVES, attainment_front, best_per_sparsity_bin, heldout_check, hypervolume,
                     hypervolume_history, pareto_front, pareto_rank)
from .compute import Analysis, analyze, analyze_experiments
from .outputs import write_outputs
from .report import render_markdown

__all__ = [
    "Analysis", "BASELINES", "DEFAULT_OBJECTIVES", "FACTORS", "analyze", "analyze_experiments", "attainment_front",
    "baseline_comparison", "best_per_sparsity_bin", "factor_effects", "heldout_check", "history_frame", "hypervolume",
    "hypervolume_history", "load_frame", "param_importances", "pareto_front", "pareto_rank", "render_markdown", "run_frames",
    "save_frames", "trial_frame", "write_outputs",
]
