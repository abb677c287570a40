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


def plot_front(trials: pd.DataFrame, ranks: pd.Series, quality: str, path: Path, title: str = "") -> Path:
    """Quality against exact sparsity: searched trials (dominated ones faded), the front of each
    experiment as a step line, and the named baselines overlaid with their own markers."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    data = trials.assign(rank=ranks).dropna(subset=[quality, "exact_sparsity"])
    searched = data[data["preset"] == "searched"] if "preset" in data else data
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, group) in enumerate(searched.groupby("experiment")):
        color = colors[i % len(colors)]
        dominated, front = group[group["rank"] > 0], group[group["rank"] == 0].sort_values("exact_sparsity")
        ax.scatter(dominated["exact_sparsity"], dominated[quality], color=color, alpha=0.25, s=22)
        ax.scatter(front["exact_sparsity"], front[quality], color=color, s=40, edgecolor="black", label=f"{name}: front")
        ax.step(front["exact_sparsity"], front[quality], where="post", color=color, alpha=0.8)
    if "preset" in data:
        for preset, marker in BASELINE_MARKERS.items():
            runs = data[data["preset"] == preset]
            if len(runs):
                faded = np.where(runs["rank"] > 0, 0.45, 1.0)
                ax.scatter(runs["exact_sparsity"], runs[quality], marker=marker, color="black", alpha=faded, s=40, label=preset)
    ax.set_xlabel("exact sparsity (share of prunable parameters removed)")
    ax.set_ylabel(quality)
    ax.set_title(title or "Pareto front (dominated points faded)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def plot_effects(effects: pd.DataFrame, path: Path, quality: str = "target_dev") -> Path:
    """One bar per factor level with its 95% bootstrap interval, grouped by how / what / when."""
    n = max(1, len(effects))
    fig, ax = plt.subplots(figsize=(7, 0.35 * n + 1.2))
    if effects.empty:
        ax.text(0.5, 0.5, "not enough trials for factor effects", ha="center", va="center")
        ax.set_axis_off()
        return _save(fig, path)
    labels = [f"{r.question}: {r.factor} = {r.level}" for r in effects.itertuples()]
    y = np.arange(len(effects))[::-1]
    err = np.vstack([effects["effect"] - effects["ci_low"], effects["ci_high"] - effects["effect"]]).clip(min=0)
    colors = {"how": "tab:blue", "what": "tab:orange", "when": "tab:green"}
    ax.barh(y, effects["effect"], xerr=np.nan_to_num(err), color=[colors.get(q, "gray") for q in effects["question"]], alpha=0.8)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel(f"effect on {quality} at matched sparsity (vs other levels), 95% CI")
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
