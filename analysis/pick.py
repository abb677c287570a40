"""The pick: which configuration to ship at each target sparsity, and whether transfer helps the pair at all
(docs/METHOD.md, "The pick").

A trial is one seed of one configuration (`configuration` column). Everything here is computed from a trial frame into
plain objects; `analysis.report` renders them and `raysearch launch` prints them. The search's confirmation stage
chooses what to re-train with `configs_to_confirm`, the same rule the verdict reads.
"""
import math
from dataclasses import dataclass

import pandas as pd
from scipy import stats

from raysearch.config import UNCOUPLED
from search_spaces.space import BASELINE_PRESETS
from raysearch.reporting import EXPORT_DIR

NO_TRANSFER = "no_transfer"
LEVEL = "target_sparsity"


def seed_rows(trials: pd.DataFrame, quality: str = "target_dev") -> pd.DataFrame:
    """Complete trials with a numeric quality, one row per (configuration, seed): a trial that replayed a twin
    (`duplicate_of`) or ran a seed twice counts once."""
    if trials is None or trials.empty or "configuration" not in trials:
        return pd.DataFrame(columns=["configuration", "seed", LEVEL, quality])
    done = trials[trials.get("complete", True).astype(bool)].copy()
    done[quality] = pd.to_numeric(done[quality], errors="coerce")
    done = done[done[quality].notna()]
    return done.drop_duplicates(["configuration", "seed"], keep="first")


def label(row) -> str:
    """A configuration in words: its preset, or its coupling, groups and start."""
    preset = row.get("preset")
    if isinstance(preset, str) and preset != "searched":
        return preset
    if row.get("coupling") in (None, UNCOUPLED) or not isinstance(row.get("coupling"), str):
        return "searched: none"
    groups = [c.removeprefix("group_") for c, v in row.items() if str(c).startswith("group_") and v in (True, 1)]
    extra = f", strength {row['coupling_strength']:.2g}" if isinstance(row.get("coupling_strength"), float) and row["coupling_strength"] == row["coupling_strength"] else ""
    start = row.get("transfer_start_fraction")
    start_text = f", start {start:.2f}" if isinstance(start, float) and start == start else ""
    return f"{row['coupling']}: {'+'.join(groups) or '-'}{extra}{start_text}"


def configurations(trials: pd.DataFrame, quality: str = "target_dev") -> pd.DataFrame:
    """One row per configuration and level: its label, preset, stages, seeds and mean/std of quality and test."""
    rows = seed_rows(trials, quality)
    out = []
    for (level, config), group in rows.groupby([LEVEL, "configuration"], sort=False):
        first = group.iloc[0]
        test = pd.to_numeric(group.get("target_test"), errors="coerce") if "target_test" in group else pd.Series(dtype=float)
        # a searched configuration with nothing coupled trains exactly what no_transfer trains: it is not transfer
        coupled = first.get("preset") != NO_TRANSFER and first.get("coupling") != UNCOUPLED
        out.append({LEVEL: level, "configuration": config, "label": label(first), "preset": first.get("preset"), "coupled": coupled,
                    "stages": ",".join(sorted(set(group.get("stage", pd.Series(["search"] * len(group))).fillna("search")))),
                    "seeds": len(group), f"{quality}_mean": group[quality].mean(), f"{quality}_std": group[quality].std(ddof=1),
                    "target_test_mean": test.mean(), "target_test_std": test.std(ddof=1)})
    return pd.DataFrame(out)


def configs_to_confirm(trials: pd.DataFrame, k: int, quality: str = "target_dev") -> list[str]:
    """Per level: the k best searched configurations by mean quality, the best baseline and `no_transfer` (the pick is
    compared with both on the same fresh seeds)."""
    table = configurations(trials, quality)
    chosen = []
    for _, at_level in table.groupby(LEVEL, sort=True):
        ranked = at_level.sort_values(f"{quality}_mean", ascending=False, kind="stable")
        baseline = ranked["preset"].isin(BASELINE_PRESETS)
        picks = list(ranked.loc[~baseline, "configuration"][:k]) + list(ranked.loc[baseline, "configuration"][:1])
        picks += list(ranked.loc[ranked["preset"] == NO_TRANSFER, "configuration"][:1])
        chosen += [c for c in dict.fromkeys(picks) if c not in chosen]
    return chosen


@dataclass
class Paired:
    """a - b over the seeds both configurations ran: mean and 95% t-interval (NaN with fewer than 2 seeds)."""
    n: int
    mean: float
    low: float
    high: float

    @property
    def clear(self) -> bool:
        return self.n >= 2 and self.low > 0


def paired(rows: pd.DataFrame, a: str, b: str, column: str) -> Paired:
    values = rows.pivot_table(index="seed", columns="configuration", values=column, aggfunc="first")
    if a not in values or b not in values:
        return Paired(0, math.nan, math.nan, math.nan)
    diff = (pd.to_numeric(values[a], errors="coerce") - pd.to_numeric(values[b], errors="coerce")).dropna()
    n = len(diff)
    if n == 0:
        return Paired(0, math.nan, math.nan, math.nan)
    mean = float(diff.mean())
    if n < 2:
        return Paired(n, mean, math.nan, math.nan)
    half = float(stats.t.ppf(0.975, n - 1) * diff.std(ddof=1) / math.sqrt(n))
    return Paired(n, mean, mean - half, mean + half)


@dataclass
class Verdict:
    level: float
    pick: str  # label
    configuration: str
    transfer_helps: bool | None  # None: the experiment has no no_transfer to compare with
    seeds: int
    dev_mean: float
    dev_std: float
    test_mean: float
    test_std: float
    vs_no_transfer_dev: Paired
    vs_no_transfer_test: Paired
    best_baseline: str | None
    vs_best_baseline_dev: Paired
    vs_best_baseline_test: Paired
    best_transfer: str | None  # the transfer configuration with the best mean dev among the candidates
    best_transfer_vs_no_transfer_dev: Paired
    best_transfer_vs_no_transfer_test: Paired
    model: str | None  # the exported model of the pick's best-dev seed
    text: str


def _points(p: Paired) -> str:
    if p.n == 0:
        return "not compared (no shared seeds)"
    interval = f"95% interval {100 * p.low:+.1f} to {100 * p.high:+.1f}" if p.n >= 2 else "one seed, no interval"
    return f"{100 * p.mean:+.1f} points ({interval}, {p.n} seeds)"


def verdicts(trials: pd.DataFrame, quality: str = "target_dev") -> list[Verdict]:
    """One verdict per target-sparsity level. The candidates are the confirmed configurations (all, when nothing was
    confirmed); the pick is the transfer configuration with the best mean quality among those that beat `no_transfer`
    on paired seeds beyond their 95% interval, and `no_transfer` when none does."""
    rows = seed_rows(trials, quality)
    table = configurations(trials, quality)
    out = []
    for level, at_level in table.groupby(LEVEL, sort=True):
        level_rows = rows[rows[LEVEL] == level]
        confirmed = set(level_rows.loc[level_rows.get("stage", pd.Series(index=level_rows.index, dtype=object)) == "confirm", "configuration"])
        candidates = at_level[at_level["configuration"].isin(confirmed)] if confirmed else at_level
        ranked = candidates.sort_values(f"{quality}_mean", ascending=False, kind="stable")
        none_rows = at_level[at_level["preset"] == NO_TRANSFER]
        none_id = none_rows["configuration"].iloc[0] if len(none_rows) else None
        transfer = ranked[ranked["coupled"]]
        best_transfer = transfer.iloc[0] if len(transfer) else None
        if none_id is None:
            pick, helps = ranked.iloc[0], None
        else:
            clear = [r for _, r in transfer.iterrows() if paired(level_rows, r["configuration"], none_id, quality).clear]
            pick = clear[0] if clear else none_rows.iloc[0]
            helps = bool(clear)
        baselines = at_level[at_level["preset"].isin(BASELINE_PRESETS)].sort_values(f"{quality}_mean", ascending=False, kind="stable")
        best_baseline = baselines.iloc[0] if len(baselines) else None
        pid = pick["configuration"]
        missing = Paired(0, math.nan, math.nan, math.nan)
        vs_none = (paired(level_rows, pid, none_id, quality), paired(level_rows, pid, none_id, "target_test")) if none_id else (missing, missing)
        vs_base = ((paired(level_rows, pid, best_baseline["configuration"], quality), paired(level_rows, pid, best_baseline["configuration"], "target_test"))
                   if best_baseline is not None else (missing, missing))
        bt = ((paired(level_rows, best_transfer["configuration"], none_id, quality), paired(level_rows, best_transfer["configuration"], none_id, "target_test"))
              if best_transfer is not None and none_id else (missing, missing))
        seeds = level_rows[level_rows["configuration"] == pid]
        best_seed = seeds.sort_values(quality, ascending=False, kind="stable").iloc[0]
        model = best_seed.get(EXPORT_DIR) if isinstance(best_seed.get(EXPORT_DIR), str) else None
        v = Verdict(level=float(level), pick=pick["label"], configuration=pid, transfer_helps=helps, seeds=int(pick["seeds"]),
                    dev_mean=pick[f"{quality}_mean"], dev_std=pick[f"{quality}_std"], test_mean=pick["target_test_mean"],
                    test_std=pick["target_test_std"], vs_no_transfer_dev=vs_none[0], vs_no_transfer_test=vs_none[1],
                    best_baseline=best_baseline["label"] if best_baseline is not None else None, vs_best_baseline_dev=vs_base[0],
                    vs_best_baseline_test=vs_base[1], best_transfer=best_transfer["label"] if best_transfer is not None else None,
                    best_transfer_vs_no_transfer_dev=bt[0], best_transfer_vs_no_transfer_test=bt[1], model=model, text="")
        v.text = verdict_text(v, quality)
        out.append(v)
    return out


def verdict_text(v: Verdict, quality: str = "target_dev") -> str:
    """The verdict in words (the report's first lines and launch's last)."""
    at = f"at target sparsity {v.level:g}"
    if v.transfer_helps is None:
        return (f"No no_transfer baseline ran {at}, so whether transfer helps is not known; the pick is the best mean "
                f"{quality}, {v.pick} (launch without --no-baselines to know).")
    if v.transfer_helps:
        return (f"Transfer helps this pair {at}: the pick, {v.pick}, is {_points(v.vs_no_transfer_dev)} over no_transfer on dev "
                f"and {_points(v.vs_no_transfer_test)} on test.")
    lost = "" if v.best_transfer is None else (
        f" The best transfer configuration, {v.best_transfer}, was {_points(v.best_transfer_vs_no_transfer_dev)} from no_transfer "
        f"on dev and {_points(v.best_transfer_vs_no_transfer_test)} on test.")
    return (f"Transfer does not help this pair {at}: no transfer configuration beat no_transfer on dev beyond its 95% "
            f"interval, so the pick is no_transfer.{lost}")


def verdict_table(found: list[Verdict], quality: str = "target_dev") -> pd.DataFrame:
    """The verdicts as a frame (one row per level), for the report and for saving."""
    def fmt(p: Paired) -> str:
        return "–" if p.n == 0 else f"{100 * p.mean:+.1f} ({100 * p.low:+.1f} to {100 * p.high:+.1f})" if p.n >= 2 else f"{100 * p.mean:+.1f}"

    return pd.DataFrame([{
        "sparsity": v.level, "pick": v.pick, "seeds": v.seeds,
        f"{quality} mean ± std": f"{v.dev_mean:.4f} ± {v.dev_std:.4f}" if v.seeds > 1 else f"{v.dev_mean:.4f}",
        "test mean ± std": f"{v.test_mean:.4f} ± {v.test_std:.4f}" if v.seeds > 1 else f"{v.test_mean:.4f}",
        "vs no_transfer, dev pts": fmt(v.vs_no_transfer_dev), "vs no_transfer, test pts": fmt(v.vs_no_transfer_test),
        "best baseline": v.best_baseline or "–", "vs best baseline, dev pts": fmt(v.vs_best_baseline_dev),
        "vs best baseline, test pts": fmt(v.vs_best_baseline_test), "model": v.model or "–"} for v in found])


def summary_lines(found: list[Verdict]) -> list[str]:
    """What `raysearch launch` ends with: the verdict per level and the picked model's path."""
    lines = []
    for v in found:
        lines.append(f"verdict: {v.text}")
        lines.append(f"  pick: {v.pick}  dev {v.dev_mean:.4f}" + (f" ± {v.dev_std:.4f}" if v.seeds > 1 else "")
                     + f"  test {v.test_mean:.4f}" + (f" ± {v.test_std:.4f}" if v.seeds > 1 else "") + f"  ({v.seeds} seed{'s' if v.seeds != 1 else ''})"
                     + (f"  model {v.model}" if v.model else ""))
    return lines

