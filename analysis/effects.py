"""How / what / when: the effect of each factor on quality at matched sparsity, and baselines.

Effect of a factor level = mean quality of the trials at that level minus the mean quality of the
other trials *in the same sparsity bin*, averaged over the bins where both sides are present
(weighted by the number of trials in the bin). Comparing inside a bin is what "at matched sparsity"
means: a 0.8-sparse trial is never compared with a 0.6-sparse one. Effects are marginal over the other
factors (a level that happens to co-occur with a good coupling mode shares some of its credit; the
fANOVA importances below look at all factors jointly); where another factor splits the trials exactly as a
level does in the trials the effect is computed from (the bins holding both sides), the two are confounded there:
the row names it, and neither is credited. The 95% interval is a percentile bootstrap
that resamples trials within each bin.

Factors are only asked of the trials where they mean something: parameter groups, start step and
transfer weight among coupled trials (tied or soft), coupling strength among soft ones.
"""
from dataclasses import dataclass

import numpy as np
import pandas as pd

from raysearch.config import GROUPS, UNCOUPLED

from .frames import on_off
from .pareto import sparsity_bin

BASELINES = ("no_transfer", "sequential", "multitask")
MIN_TRIALS_FOR_CI = 3  # a bootstrap of one or two trials a side gives intervals that mean nothing


@dataclass(frozen=True)
class Factor:
    name: str  # what the report calls it
    column: str  # the trial-frame column
    question: str  # how, what or when
    scope: str = "all"  # all | coupled | strength (the trials whose mode has a coupling strength)
    bins: tuple | None = None  # edges for a numeric column; levels are then "[lo, hi)"


FACTORS = (
    Factor("coupling mode", "coupling", "how"),
    Factor("transfer weight", "transfer_weight", "how", "coupled", (0, 0.5, 1.0, np.inf)),
    Factor("coupling strength", "coupling_strength", "how", "strength", (0, 1e-3, 1e-2, np.inf)),
    *(Factor(f"group {g}", f"group_{g}", "what", "coupled") for g in GROUPS),
    Factor("transfer start (fraction of steps)", "transfer_start_fraction", "when", "coupled", (0, 0.2, 0.5, 1.01)),
)


def searched_trials(frame: pd.DataFrame) -> pd.DataFrame:
    """The distinct configurations the search sampled: not a named baseline preset, and each configuration
    once. A trial with `duplicate_of` set re-reported the results of a configuration the search had already
    trained; counting it again would weigh that configuration two or three times in every effect."""
    searched = frame[frame["preset"] == "searched"] if "preset" in frame else frame
    return searched[searched["duplicate_of"].isna()] if "duplicate_of" in searched else searched


def _in_scope(frame: pd.DataFrame, scope: str) -> pd.DataFrame:
    if scope == "coupled":
        return frame[frame["coupling"] != UNCOUPLED]
    if scope == "strength":
        return frame[frame["coupling_strength"].notna()]
    return frame


def factor_levels(frame: pd.DataFrame, factor: Factor) -> pd.Series:
    values = frame[factor.column]
    if factor.bins is None:
        return values.map(on_off)
    edges = factor.bins
    labels = [f"[{lo:g}, {hi:g})" if np.isfinite(hi) else f">= {lo:g}" for lo, hi in zip(edges[:-1], edges[1:])]
    return pd.cut(pd.to_numeric(values, errors="coerce"), edges, right=False, labels=labels).astype(object)


def _matched_difference(quality: np.ndarray, at_level: np.ndarray, bins: np.ndarray) -> float:
    """Bin-weighted mean of (level mean - rest mean) over bins holding both."""
    diffs, weights = [], []
    for b in np.unique(bins):
        in_bin = bins == b
        level, rest = quality[in_bin & at_level], quality[in_bin & ~at_level]
        if len(level) and len(rest):
            diffs.append(level.mean() - rest.mean())
            weights.append(in_bin.sum())
    return float(np.average(diffs, weights=weights)) if diffs else float("nan")


def factor_effects(frame: pd.DataFrame, quality: str = "target_dev", width: float = 0.1, n_boot: int = 1000,
                   seed: int = 0, factors=FACTORS) -> pd.DataFrame:
    """One row per factor level: effect on `quality` at matched sparsity with a 95% bootstrap interval.
    Baseline trials (a named preset) are left out: they are compared separately."""
    searched = searched_trials(frame).dropna(subset=[quality, "exact_sparsity"])
    rng = np.random.default_rng(seed)
    rows = []
    for factor in factors:
        if factor.column not in searched:
            continue
        data = _in_scope(searched, factor.scope)
        levels = factor_levels(data, factor)
        data = data[levels.notna()]
        levels = levels[levels.notna()]
        if levels.nunique() < 2:
            continue
        quality_values = data[quality].to_numpy(float)
        bins = sparsity_bin(data["exact_sparsity"], width).to_numpy()
        # bootstrap: resample trials within each sparsity bin
        by_bin = [np.flatnonzero(bins == b) for b in np.unique(bins)]
        resamples = [np.concatenate([rng.choice(idx, len(idx)) for idx in by_bin]) for _ in range(n_boot)]
        for level in sorted(levels.unique(), key=str):
            at_level = (levels == level).to_numpy()
            used = _compared(at_level, bins)  # the trials this effect rests on: bins holding both sides
            confounded = _confounded_with(searched, data.index[used], at_level[used], factor, factors)
            effect = _matched_difference(quality_values, at_level, bins)
            low = high = np.nan
            if min(at_level.sum(), (~at_level).sum()) >= MIN_TRIALS_FOR_CI:
                boot = np.array([_matched_difference(quality_values[r], at_level[r], bins[r]) for r in resamples])
                boot = boot[~np.isnan(boot)]
                if len(boot):
                    low, high = np.percentile(boot, [2.5, 97.5])
            rows.append({"question": factor.question, "factor": factor.name, "level": str(level),
                         "trials": int(at_level.sum()), "others": int((~at_level).sum()),
                         "mean_quality": float(quality_values[at_level].mean()),
                         "effect": effect, "ci_low": float(low), "ci_high": float(high), "confounded_with": ", ".join(confounded)})
    return pd.DataFrame(rows, columns=["question", "factor", "level", "trials", "others", "mean_quality", "effect", "ci_low", "ci_high",
                                       "confounded_with"])


def _compared(at_level: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """The trials `_matched_difference` compares: those in the sparsity bins that hold the level and the rest."""
    both = [b for b in np.unique(bins) if (at_level & (bins == b)).any() and (~at_level & (bins == b)).any()]
    return np.isin(bins, both)


def _confounded_with(searched: pd.DataFrame, rows: pd.Index, at_level: np.ndarray, factor: Factor, factors) -> list[str]:
    """The other factors that split these trials exactly as this level does (always on together, or always
    opposite): in these trials the level's effect is theirs as much as its own."""
    found = []
    for other in factors:
        if other is factor or other.column not in searched:
            continue
        levels = factor_levels(searched.loc[rows], other)
        if levels.isna().any() or levels.nunique() < 2:
            continue  # not defined for every one of these trials, or constant: it cannot stand in for this level
        for level in levels.unique():
            split = (levels == level).to_numpy()
            if (split == at_level).all() or (split == ~at_level).all():
                found.append(other.name)
                break
    return found


# ------------------------------------------------------------------ Optuna importances


def param_importances(frame: pd.DataFrame, quality: str = "target_dev", seed: int = 0) -> pd.Series:
    """fANOVA importances (Optuna's evaluator) of the factors for `quality`, over the searched trials.

    The study is rebuilt from the frame with every factor defined for every trial, because fANOVA
    only uses parameters present in all trials: an uncoupled trial has its groups off, transfer
    weight 0 and transfer start 1.0 (never). Coupling strength, defined only for the penalized modes, is
    left out here (its effect is in `factor_effects`). Empty when fewer than 3 trials or no variation.
    """
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = searched_trials(frame).dropna(subset=[quality])
    if len(data) < 3 or data[quality].nunique() < 2:
        return pd.Series(dtype=float, name="importance")
    coupled = data["coupling"] != UNCOUPLED
    columns = {
        "coupling": data["coupling"].astype(str),
        "target_sparsity": data["target_sparsity"].astype(float),
        **{f"group_{g}": data[f"group_{g}"].map(on_off).fillna("off") for g in GROUPS},
        "transfer_weight": data["transfer_weight"].where(coupled, 0.0).astype(float),
        "transfer_start_fraction": data["transfer_start_fraction"].where(coupled, 1.0).astype(float).clip(0, 1),
    }
    distributions = {}
    for name, values in columns.items():
        if values.nunique() < 2:
            continue  # a constant explains nothing (and fANOVA needs a range)
        if not pd.api.types.is_numeric_dtype(values):
            columns[name] = values = values.astype(str).astype(object)
            distributions[name] = CategoricalDistribution(sorted(values.unique()))
        else:
            distributions[name] = FloatDistribution(float(values.min()), float(values.max()))
    if not distributions:
        return pd.Series(dtype=float, name="importance")
    study = optuna.create_study(direction="maximize")
    params = pd.DataFrame({n: columns[n] for n in distributions}).to_dict("records")
    study.add_trials([optuna.trial.create_trial(params=p, distributions=distributions, value=float(v))
                      for p, v in zip(params, data[quality])])
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
    return pd.Series({k: float(v) for k, v in importances.items()}, name="importance")


# ------------------------------------------------------------------ baselines


def baseline_comparison(frame: pd.DataFrame, quality: str = "target_dev", test: str = "target_test", width: float = 0.1) -> pd.DataFrame:
    """Per sparsity bin: each named baseline's quality (mean, std over seeds) and the best searched
    configuration's, on dev and (where reported) test. The searched row is the trial with the best dev
    quality in the bin; its test value is that same trial's."""
    data = frame.dropna(subset=[quality, "exact_sparsity"]).assign(sparsity_bin=lambda f: sparsity_bin(f["exact_sparsity"], width))
    has_test = test in data and data[test].notna().any()
    rows = []
    for bin_value, group in data.groupby("sparsity_bin"):
        for preset in BASELINES:
            runs = group[group["preset"] == preset]
            if len(runs):
                rows.append({"sparsity_bin": bin_value, "method": preset, "trials": len(runs),
                             "dev_mean": runs[quality].mean(), "dev_std": runs[quality].std(),
                             "test_mean": runs[test].mean() if has_test else np.nan,
                             "test_std": runs[test].std() if has_test else np.nan})
        searched = group[group["preset"] == "searched"]
        if len(searched):
            best = searched.loc[searched[quality].idxmax()]
            rows.append({"sparsity_bin": bin_value, "method": "searched (best on dev)", "trials": len(searched),
                         "dev_mean": best[quality], "dev_std": np.nan,
                         "test_mean": best[test] if has_test else np.nan, "test_std": np.nan,
                         "trial_id": best["trial_id"]})
    return pd.DataFrame(rows, columns=["sparsity_bin", "method", "trials", "dev_mean", "dev_std", "test_mean", "test_std", "trial_id"])
