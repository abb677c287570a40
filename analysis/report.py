"""Rendering only: the Markdown report of a computed `Analysis` (analysis.compute)."""
import math

import pandas as pd

from raysearch.config import SPARSITY_TOLERANCE
from raysearch.experiment import model_in_experiment

from .compute import Analysis, factor_answers
from .frames import coupled_groups
from .pick import verdict_table
from raysearch.reporting import EXPORT_DIR


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


def with_bin_ranges(frame: pd.DataFrame, width: float) -> pd.DataFrame:
    """Sparsity bins shown as the range they hold (0.95-1.00), not their centre: no trial has sparsity 1.0."""
    if frame is None or "sparsity_bin" not in frame:
        return frame
    ranges = frame["sparsity_bin"].map(lambda c: f"{max(0.0, c - width / 2):.2f}-{min(1.0, c + width / 2):.2f}")
    return frame.assign(sparsity_bin=ranges).rename(columns={"sparsity_bin": "sparsity"})


def answer_lines(effects: pd.DataFrame, question: str, quality: str) -> list[str]:
    """One line per factor: its best level, the effect and interval, and the verdict."""
    lines = []
    for a in factor_answers(effects, question):
        interval = "no interval" if math.isnan(a.ci_low) or a.ci_high - a.ci_low < 1e-12 else f"95% CI {a.ci_low:+.3f} to {a.ci_high:+.3f}"
        lines.append(f"- **{a.factor}**: best level `{a.level}`, {a.effect:+.3f} {quality} vs the other levels "
                     f"at matched sparsity ({interval}; {a.trials} vs {a.others} trials) — {a.verdict}.")
    return lines or ["- not enough variation among the trials to say."]


def render_markdown(result: Analysis, plot_files: dict) -> str:
    t, quality = result.trials, result.objectives[0][0]
    objectives = ", ".join(f"{c} ({m})" for c, m in result.objectives)
    complete = int(t["complete"].sum()) if "complete" in t else len(t)
    out = [f"# raysearch analysis: {', '.join(sorted(t['experiment'].unique()))}", "",
           f"{len(t)} trials ({complete} complete{'; the others are left out of fronts and effects' if complete < len(t) else ''}), "
           f"objectives {objectives}. Hypervolume reference point "
           f"{result.reference} (quality 0 and the dense model's prunable parameters); hypervolume is in units of "
           f"quality x sparsity, so 1.0 would be a perfect model with no prunable parameters left.", ""]

    if "sparsity_off_target" in t:
        off = t[pd.to_numeric(t["sparsity_off_target"], errors="coerce").abs() > SPARSITY_TOLERANCE]
        if len(off):
            out += [f"{len(off)} trial(s) ended more than {SPARSITY_TOLERANCE:g} away from their target sparsity (the controller did not land it; "
                    "a longer warm-up usually does): " + ", ".join(f"{r.trial_id} {r.exact_sparsity:.3f} for {r.target_sparsity:.2f}"
                                                                  for r in off.itertuples()) + ".", ""]

    out += ["## Verdict: the pick", ""]
    if result.verdicts:
        out += [f"- {v.text}" for v in result.verdicts]
        out += ["", "Paired differences over the seeds both configurations ran, in points of accuracy, with 95% t-intervals; "
                "the pick is chosen on dev alone (docs/METHOD.md, \"The pick\").", "", _table(verdict_table(result.verdicts, quality)), ""]
    else:
        out += ["No configuration ran on the seeds a verdict needs.", ""]

    front = result.front.copy()
    front["groups"] = [", ".join(coupled_groups(r)) or "–" for _, r in front.iterrows()]
    shown = [c for c in ["experiment", "trial_id", "preset", "coupling", "groups", "transfer_start_fraction", "transfer_weight",
                         "exact_sparsity", "remaining_params", quality, "target_test", EXPORT_DIR] if c in front]
    if EXPORT_DIR in front:  # where each front model is, as `raysearch export` copies it (`model` is the base model)
        front[EXPORT_DIR] = front[EXPORT_DIR].map(model_in_experiment)
        front = front.rename(columns={EXPORT_DIR: "exported model"})
        shown = [("exported model" if c == EXPORT_DIR else c) for c in shown]
    out += ["## Pareto front (selected on dev)", "", f"![front]({plot_files['front']})", "",
            _table(front[shown], {"remaining_params": ",.0f"}), ""]
    if result.unscored:
        out += [f"Left off the front: {len(result.unscored)} finished trial(s) with no number (NaN) for an objective: "
                f"{', '.join(result.unscored)} (see their logs).", ""]

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
        out += [f"## Best {quality} per sparsity bin over {result.sets}s", "", _table(with_bin_ranges(result.per_bin, result.width)), ""]
    if result.attainment is not None and len(result.attainment) and t[result.sets].nunique() > 1:
        out += [f"Median (50%) attainment front over {t[result.sets].nunique()} {result.sets}s:", "", _table(result.attainment, {"remaining_params": ",.0f"}), ""]

    out += ["## How / what / when", "", f"Effects on {quality} at matched sparsity (bins of width {result.width:g}), 95% bootstrap intervals. "
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
