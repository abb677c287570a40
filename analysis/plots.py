"""Rendering only: each function draws data computed elsewhere (analysis.compute.Analysis) to a PNG."""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on clusters
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

BASELINE_MARKERS = {"no_transfer": "s", "sequential": "^", "multitask": "D"}


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_front(points: pd.DataFrame, quality: str, x: str, x_mode: str, path: Path, title: str = "") -> Path:
    """Quality against the objective the front was computed on (`analysis.pareto.front_plot_frame`): searched trials
    (points off their experiment's front faded), each experiment's own front as a step line, the named baselines
    with their own markers."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    searched = points[points["preset"] == "searched"]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, group) in enumerate(searched.groupby("experiment")):
        color = colors[i % len(colors)]
        dominated, front = group[group["own_rank"] > 0], group[group["own_rank"] == 0]
        ax.scatter(dominated["x"], dominated["quality"], color=color, alpha=0.25, s=22)
        ax.scatter(front["x"], front["quality"], color=color, s=40, edgecolor="black", label=f"{name}: front")
        xs, ys = front_steps(front, x_mode)
        ax.plot(xs, ys, color=color, alpha=0.8)
    for preset, marker in BASELINE_MARKERS.items():
        runs = points[points["preset"] == preset]
        if len(runs):
            faded = np.where(runs["own_rank"] > 0, 0.45, 1.0)
            ax.scatter(runs["x"], runs["quality"], marker=marker, color="black", alpha=faded, s=40, label=preset)
    ax.set_xlabel(f"{X_LABELS.get(x, x)} ({'fewer' if x_mode == 'min' else 'more'} is better)")
    ax.set_ylabel(quality)
    ax.set_title(title or "Pareto front of each experiment (dominated points faded)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


X_LABELS = {"remaining_params": "remaining prunable parameters", "exact_sparsity": "exact sparsity", "latency_ms": "latency (ms)"}


def front_steps(front: pd.DataFrame, x_mode: str = "max") -> tuple[list, list]:
    """The vertices of a front's step line over columns `x` and `quality`: between two front points the line is at
    the quality of the one better on x (the best reached at that x or better), and it ends at the point best on x,
    claiming nothing past it."""
    sign = 1 if x_mode == "max" else -1
    points = front.assign(key=sign * front["x"]).sort_values("key")
    xs, ys = [], []
    for x, y in zip(points["x"], points["quality"]):
        if xs:
            xs.append(xs[-1])
            ys.append(y)  # up to the previous point's x, this (better on x) point's quality is reachable
        xs.append(x)
        ys.append(y)
    return xs, ys


def effect_bars(effects: pd.DataFrame) -> pd.DataFrame:
    """The bars of the effects plot: one per factor level that has an effect (a level with no matched comparison
    has nothing to draw), with its label and interval half-widths."""
    bars = effects.dropna(subset=["effect"])
    confounded = bars.get("confounded_with", pd.Series("", index=bars.index)).fillna("").astype(str)
    return pd.DataFrame({"label": [f"{r.question}: {r.factor} = {r.level}" + (f" (confounded with {c})" if c else "")
                                   for r, c in zip(bars.itertuples(), confounded)],
                         "confounded": (confounded != "").to_numpy(),
                         "question": bars["question"].to_numpy(), "effect": bars["effect"].to_numpy(),
                         "below": (bars["effect"] - bars["ci_low"]).clip(lower=0).fillna(0).to_numpy(),
                         "above": (bars["ci_high"] - bars["effect"]).clip(lower=0).fillna(0).to_numpy()})


def plot_effects(effects: pd.DataFrame, path: Path, quality: str = "target_dev") -> Path:
    """One bar per factor level with its 95% bootstrap interval, grouped by how / what / when."""
    bars = effect_bars(effects)
    fig, ax = plt.subplots(figsize=(7.5, max(2.5, 0.35 * len(bars) + 1.5)))
    if bars.empty:
        ax.text(0.5, 0.5, "not enough trials for factor effects", ha="center", va="center")
        ax.set_axis_off()
        return _save(fig, path)
    y = np.arange(len(bars))[::-1]
    colors = {"how": "tab:blue", "what": "tab:orange", "when": "tab:green"}
    # a confounded effect is drawn hatched and pale: it cannot be credited to its factor
    ax.barh(y, bars["effect"], xerr=np.vstack([bars["below"], bars["above"]]), color=[colors.get(q, "gray") for q in bars["question"]],
            alpha=0.8)
    for patch, confounded in zip(ax.patches, bars["confounded"]):
        if confounded:
            patch.set_alpha(0.3)
            patch.set_hatch("//")
    ax.set_yticks(y, bars["label"], fontsize=8)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel(f"effect on {quality} at matched sparsity\n(vs the other levels; 95% bootstrap interval)", fontsize=9)
    return _save(fig, path)


def plot_hypervolume(history: pd.DataFrame, path: Path, by: str = "experiment") -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, group in history.groupby(by):
        ax.plot(group["trials"], group["hypervolume"], marker="o", markersize=3, label=str(name))
    ax.set_xlabel("trials")
    ax.set_ylabel("hypervolume (quality x sparsity)")
    ax.set_title("hypervolume over trials")
    ax.grid(alpha=0.3)
    if len(history):
        ax.legend(fontsize=8)
    return _save(fig, path)
