"""Pareto fronts, their aggregation across seeds and experiments, and hypervolume.

Non-dominated sorting, hypervolume and the empirical attainment function come from moocore (the
maintained C implementations by the EAF authors); this module only maps frames and directions onto it.

Objectives are `(column, "max" | "min")` pairs. The default pair is the search's own: target dev
quality up, exact remaining parameters down.

Hypervolume reference point (documented choice): quality 0 and the dense model's prunable
parameters (`full_params`, sparsity 0). Hypervolume is then reported divided by `full_params`, i.e.
in units of quality x sparsity: 1.0 would be a perfect model with no prunable parameters left, and a
dense model of any quality adds nothing. A latency objective (`latency_ms`, min) takes the slowest trial's latency
as its reference and scale. Pass `reference=` for other objectives or another point.
"""
from dataclasses import dataclass

import moocore
import numpy as np
import pandas as pd

from raysearch.errors import UserInputError

Objectives = list[tuple[str, str]]
DEFAULT_OBJECTIVES: Objectives = [("target_dev", "max"), ("remaining_params", "min")]
TEST_OBJECTIVES: Objectives = [("target_test", "max"), ("remaining_params", "min")]


def check_objectives(frame: pd.DataFrame, objectives: Objectives):
    for column, mode in objectives:
        if mode not in ("max", "min"):
            raise UserInputError(f"objective {column}", f"unknown direction {mode!r}", "use max or min")
        if column not in frame.columns:
            raise UserInputError(f"objective {column}", "no such column in the trial frame",
                                 f"choose from: {', '.join(c for c in frame.columns if not c.startswith('param/'))}")
        finished = frame["complete"].astype("boolean").fillna(False).any() if "complete" in frame else len(frame) > 0
        values = pd.to_numeric(frame[column], errors="coerce")
        text = frame[column][values.isna() & frame[column].notna()].astype(str)
        text = text[text.str.lower() != "nan"]
        if len(text):
            raise UserInputError(f"objective {column}", f"is not numeric (trial values such as {text.iloc[0][:40]!r})",
                                 "choose a numeric metric as an objective")
        if finished and values.isna().all():  # before any trial finished: wait
            raise UserInputError(f"objective {column}", "no finished trial reported a number for it (none, or NaN)",
                                 "choose a metric the trials report (latency_ms is measured when a space names it as an objective); "
                                 "a NaN comes from a trial that diverged: see its log")


def trials_without(frame: pd.DataFrame, objectives: Objectives) -> list[str]:
    """Finished trials with no number for an objective (NaN): left off every front, and named in the report."""
    done = frame[frame["complete"].astype("boolean").fillna(False).astype(bool)] if "complete" in frame else frame
    if done.empty:
        return []
    missing = done[[c for c, _ in objectives]].apply(pd.to_numeric, errors="coerce").isna().any(axis=1)
    ids = done["trial_id"] if "trial_id" in done else pd.Series(done.index.astype(str), index=done.index)
    return [str(t) for t in ids[missing]]


def _points(frame: pd.DataFrame, objectives: Objectives) -> tuple[np.ndarray, np.ndarray]:
    """Objective values of the rows with all objectives present, and those rows' positions."""
    values = frame[[c for c, _ in objectives]].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    valid = ~np.isnan(values).any(axis=1)
    return values[valid], np.flatnonzero(valid)


def _maximise(objectives: Objectives) -> list[bool]:
    return [mode == "max" for _, mode in objectives]


def pareto_rank(frame: pd.DataFrame, objectives: Objectives = DEFAULT_OBJECTIVES) -> pd.Series:
    """Non-dominated sorting: 0 for the front, 1 for the next, ...; NaN where an objective is missing.
    Duplicated points share a rank (both are on the front)."""
    check_objectives(frame, objectives)
    rank = np.full(len(frame), np.nan)
    points, rows = _points(frame, objectives)
    if len(points):
        rank[rows] = moocore.pareto_rank(points, maximise=_maximise(objectives))
    return pd.Series(rank, index=frame.index, name="pareto_rank")


def front_plot_frame(trials: pd.DataFrame, objectives: Objectives = DEFAULT_OBJECTIVES) -> pd.DataFrame:
    """What the front plot draws, on the axes the front is computed on (quality against the second objective): each
    experiment's trials with their rank within their own experiment, so that every experiment shows its own front."""
    (quality, _), (x, _) = objectives[0], objectives[1]
    rows = trials.dropna(subset=[quality, x])
    ranks = pd.concat([pareto_rank(group, objectives) for _, group in rows.groupby("experiment")]) if len(rows) else pd.Series(dtype=float)
    preset = rows["preset"] if "preset" in rows else pd.Series("searched", index=rows.index)
    return pd.DataFrame({"experiment": rows["experiment"], "preset": preset, "x": rows[x], "quality": rows[quality],
                         "own_rank": ranks.reindex(rows.index)})


def pareto_front(frame: pd.DataFrame, objectives: Objectives = DEFAULT_OBJECTIVES, by: str | None = None) -> pd.DataFrame:
    """The non-dominated rows (of each `by` group, e.g. per experiment, preset or coupling mode),
    sorted by the first objective, best first."""
    if by is not None and by not in frame.columns:
        raise UserInputError(f"by={by}", "no such column in the trial frame", "group by an existing column")
    groups = [frame] if by is None else [g for _, g in frame.groupby(by, dropna=False, sort=True)]
    fronts = []
    for group in groups:
        rank = pareto_rank(group, objectives)
        fronts.append(group[rank == 0])
    front = pd.concat(fronts) if fronts else frame.iloc[:0]
    column, mode = objectives[0]
    return front.sort_values([by, column] if by else column, ascending=[True, mode == "min"] if by else mode == "min")


# ------------------------------------------------------------------ hypervolume


def default_reference(frame: pd.DataFrame, objectives: Objectives) -> list[float]:
    """Quality 0 and the dense model's parameter count (see the module docstring)."""
    ref = []
    for column, mode in objectives:
        if column in ("target_dev", "target_test", "best_target_dev", "test_at_best_dev") and mode == "max":
            ref.append(0.0)
        elif column == "remaining_params" and mode == "min" and "full_params" in frame and frame["full_params"].notna().any():
            ref.append(float(frame["full_params"].max()))
        elif column == "exact_sparsity" and mode == "max":
            ref.append(0.0)
        elif column == "latency_ms" and mode == "min" and column in frame and frame[column].notna().any():
            ref.append(float(frame[column].max()))  # the slowest trial: a dense model's latency is not measured
        else:
            raise UserInputError(f"objective {column}", "has no default hypervolume reference point", "pass reference=[...] with one value per objective")
    return ref


def _scale(frame: pd.DataFrame, objectives: Objectives) -> float:
    """Parameter counts are divided by the dense count, so hypervolumes read as quality x sparsity; latencies by
    the slowest trial's, so they read as quality x share of that latency saved."""
    scale = 1.0
    if any(c == "remaining_params" for c, _ in objectives) and "full_params" in frame and frame["full_params"].notna().any():
        scale *= float(frame["full_params"].max())
    if any(c == "latency_ms" for c, _ in objectives) and "latency_ms" in frame and frame["latency_ms"].notna().any():
        scale *= float(frame["latency_ms"].max())
    return scale


def hypervolume(frame: pd.DataFrame, objectives: Objectives = DEFAULT_OBJECTIVES, reference=None) -> float:
    """Hypervolume of the rows' objective values with respect to `reference` (0 for an empty set;
    points that do not improve on the reference in every objective contribute nothing)."""
    check_objectives(frame, objectives)
    ref = list(reference) if reference is not None else default_reference(frame, objectives)
    if len(ref) != len(objectives):
        raise UserInputError("reference", f"has {len(ref)} values for {len(objectives)} objectives", "give one value per objective")
    points, _ = _points(frame, objectives)
    maximise = _maximise(objectives)
    better = np.all([(points[:, i] > r) if m else (points[:, i] < r) for i, (r, m) in enumerate(zip(ref, maximise))], axis=0) \
        if len(points) else np.zeros(0, bool)
    if not better.any():
        return 0.0
    return float(moocore.hypervolume(points[better], ref=ref, maximise=maximise)) / _scale(frame, objectives)


def hypervolume_history(frame: pd.DataFrame, objectives: Objectives = DEFAULT_OBJECTIVES, reference=None,
                        by: str = "experiment", order: str = "trial_index") -> pd.DataFrame:
    """Hypervolume of the first k trials (in `order`) for k = 1..n, per `by` group. One reference point
    for all groups, so their curves are comparable."""
    check_objectives(frame, objectives)
    ref = list(reference) if reference is not None else default_reference(frame, objectives)
    rows = []
    for key, group in frame.groupby(by, sort=True):
        group = group.sort_values(order)
        for k in range(1, len(group) + 1):
            rows.append({by: key, "trials": k, "hypervolume": hypervolume(group.iloc[:k], objectives, ref)})
    return pd.DataFrame(rows, columns=[by, "trials", "hypervolume"])


# ------------------------------------------------------------------ aggregation across seeds / experiments


def attainment_front(frame: pd.DataFrame, objectives: Objectives = DEFAULT_OBJECTIVES, sets: str = "seed",
                     percentile: float = 50) -> pd.DataFrame:
    """The `percentile`% attainment surface over the fronts of each `sets` group (the median front at 50):
    the points attained by at least that share of the seeds' (or experiments') fronts."""
    check_objectives(frame, objectives)
    if sets not in frame.columns:
        raise UserInputError(f"sets={sets}", "no such column in the trial frame", "use seed or experiment")
    points, rows = _points(frame, objectives)
    columns = [c for c, _ in objectives]
    if not len(points):
        return pd.DataFrame(columns=columns)
    sign = np.array([-1.0 if m else 1.0 for m in _maximise(objectives)])  # moocore's EAF minimises
    labels = pd.factorize(frame[sets].iloc[rows])[0] + 1
    surface = moocore.eaf(points * sign, sets=labels, percentiles=[percentile])
    out = pd.DataFrame(surface[:, : len(objectives)] * sign, columns=columns)
    return out.sort_values(columns[0], ascending=objectives[0][1] == "min").reset_index(drop=True)


def sparsity_bin(sparsity: pd.Series, width: float = 0.1) -> pd.Series:
    """Bins centred on multiples of `width` (0.6 holds 0.55..0.65): matched-sparsity comparisons."""
    return (np.round(pd.to_numeric(sparsity, errors="coerce") / width) * width).round(6)


def best_per_sparsity_bin(frame: pd.DataFrame, quality: str = "target_dev", sets: str = "seed", width: float = 0.1,
                          by: str | None = None) -> pd.DataFrame:
    """Best quality per sparsity bin within each seed (or experiment), then mean, standard deviation and
    count over the seeds: how reliably a search reaches a quality at a size."""
    for column in (quality, sets, "exact_sparsity") + ((by,) if by else ()):
        if column not in frame.columns:
            raise UserInputError(f"column {column}", "not in the trial frame", "pass an existing column")
    data = frame.dropna(subset=[quality, "exact_sparsity"]).assign(sparsity_bin=lambda f: sparsity_bin(f["exact_sparsity"], width))
    keys = ([by] if by else []) + ["sparsity_bin"]
    best = data.groupby(keys + [sets], dropna=False)[quality].max().reset_index()
    summary = best.groupby(keys, dropna=False)[quality].agg(mean="mean", std="std", seeds="count").reset_index()
    return summary


# ------------------------------------------------------------------ held-out check


@dataclass
class HeldOutCheck:
    """The dev-selected front, re-scored on the held-out test split."""

    points: pd.DataFrame  # front rows: trial, sparsity, dev, test, test_minus_dev
    front_gap: float  # mean (dev - test) over the front: the optimism of selecting on dev
    all_gap: float  # mean (dev - test) over all trials: the dev/test difference without selection
    test_front_share: float  # share of the dev front still non-dominated on test
    hypervolume_dev: float
    hypervolume_test: float


def heldout_check(frame: pd.DataFrame, objectives: Objectives = DEFAULT_OBJECTIVES, test_column: str = "target_test") -> HeldOutCheck | None:
    """None when the trials report no test metric (a task without a labelled test split and no
    `heldout_test_size`)."""
    quality = objectives[0][0]
    if test_column not in frame.columns or frame[test_column].isna().all():
        return None
    scored = frame.dropna(subset=[quality, test_column])
    front = pareto_front(scored, objectives)
    test_objectives = [(test_column, objectives[0][1])] + list(objectives[1:])
    on_test_front = pareto_rank(scored, test_objectives) == 0
    gap = lambda f: float((f[quality] - f[test_column]).mean()) if len(f) else float("nan")
    points = front[["experiment", "trial_id", "exact_sparsity", "remaining_params", quality, test_column]].assign(
        test_minus_dev=front[test_column] - front[quality], on_test_front=on_test_front.loc[front.index])
    return HeldOutCheck(points=points.reset_index(drop=True), front_gap=gap(front), all_gap=gap(scored),
                        test_front_share=float(points["on_test_front"].mean()) if len(points) else float("nan"),
                        hypervolume_dev=hypervolume(front, objectives), hypervolume_test=hypervolume(front, test_objectives))
