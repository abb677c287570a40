"""A search in three stages, each configuration on several seeds (docs/METHOD.md, "The pick").

1. **Baselines**: the presets `no_transfer`, `multitask`, `sequential` at each level of the space's other categorical
   parameters (e.g. each target sparsity), so that every experiment carries its own baselines, paired by seed.
2. **Search**: `configurations` proposals of the inner searcher (Optuna), each trained on `repeats` seeds; the inner
   searcher is told the mean of each objective over them (a seed is a repeat, not a parameter).
3. **Confirmation**: when every earlier trial has ended, the top-k configurations by mean quality per level, the best
   baseline and `no_transfer` are trained on `confirm_seeds` fresh seeds.

Tune's `Repeater` has this shape but averages one metric only (ray/tune/search/repeater.py, Ray 2.60); this wrapper
averages every objective. Its whole state (inner searcher included) is saved with Tune's experiment state, so a
resumed search neither enqueues the baselines again nor re-trains a finished seed.
"""
import math

from ray.tune.search import Searcher
from ray.tune.search.util import _set_search_properties_backwards_compatible

from analysis.pick import configs_to_confirm
from search_spaces import space_from_dict
from search_spaces.space import SEED_KEY, STAGE_KEY

from ..errors import UserInputError
from .distinct import NamedOptunaSearch

PENDING, FAILED = None, "failed"


class StagedSearch(Searcher):
    def __init__(self, searcher: NamedOptunaSearch, space_dict: dict, repeats: int, configurations: int, baselines: bool = True,
                 confirm_top: int = 3, confirm_seeds: int = 3):
        super().__init__(metric=searcher.metric, mode=searcher.mode)
        self.searcher, self.space = searcher, space_from_dict(space_dict)
        self.repeats, self.configurations, self.confirm_top = repeats, configurations, confirm_top
        first = self.space.base_seed
        self.seeds = list(range(first, first + repeats))
        self.confirm_seeds = list(range(first + repeats, first + repeats + confirm_seeds))
        self.groups = {}  # group -> {"flat", "stage", "inner" (the inner searcher's trial id), "results": {trial id: values}}
        self.trial_group = {}  # Tune trial id -> group
        self.records = {}  # Tune trial id -> what the confirmation rule reads (configuration, preset, level, seed, quality)
        self.queue = []  # (group, seed) still to hand out
        self.proposed = 0
        self.confirm_planned = confirm_seeds == 0
        for i, point in enumerate(self.space.baseline_points() if baselines else []):
            self._new_group(f"baseline{i}", point, "baseline", None, self.seeds)

    def max_trials(self) -> int:
        """An upper bound on the trials this search runs (Tune's num_samples); it ends with FINISHED once done."""
        baselines = sum(g["stage"] == "baseline" for g in self.groups.values())
        confirmed = 0 if self.confirm_planned and not self.confirm_seeds else self.space.levels() * (self.confirm_top + 2)
        return (baselines + self.configurations) * self.repeats + confirmed * len(self.confirm_seeds)

    def _new_group(self, group: str, flat: dict, stage: str, inner: str | None, seeds: list[int]):
        self.groups[group] = {"flat": dict(flat), "stage": stage, "inner": inner, "results": {}}
        self.queue += [(group, seed) for seed in seeds]

    # ------------------------------------------------------------------ Tune's Searcher interface

    def suggest(self, trial_id: str):
        if not self.queue and self.proposed < self.configurations:
            config = self.searcher.suggest(trial_id)
            if config is None:
                return None
            if config == Searcher.FINISHED:
                self.proposed = self.configurations
            else:
                self._new_group(f"search{self.proposed}", config, "search", trial_id, self.seeds)
                self.proposed += 1
        if not self.queue and not self.confirm_planned:
            if any(v is PENDING for g in self.groups.values() for v in g["results"].values()):
                return None  # the confirmation is chosen from every earlier result
            self._plan_confirmation()
        if not self.queue:
            return Searcher.FINISHED
        group, seed = self.queue.pop(0)
        return self._issue(trial_id, group, seed)

    def _issue(self, trial_id: str, group: str, seed: int) -> dict:
        g = self.groups[group]
        g["results"][trial_id] = PENDING
        self.trial_group[trial_id] = group
        try:
            config = self.space.trial_config(g["flat"], seed=seed)
            record = {"configuration": config.configuration_id(), "preset": config.transfer.preset or "searched",
                      "target_sparsity": config.pruning.target_sparsity}
        except UserInputError:  # the trial fails on it and says why; nothing to confirm
            record = {"configuration": None, "preset": None, "target_sparsity": None}
        self.records[trial_id] = {**record, "seed": seed, "stage": g["stage"], "group": group, "quality": math.nan, "complete": False}
        return {**g["flat"], STAGE_KEY: g["stage"], SEED_KEY: seed}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        group = self.trial_group.get(trial_id)
        if group is None:
            return
        g, metrics = self.groups[group], self.metric if isinstance(self.metric, list) else [self.metric]
        values = [result.get(m) for m in metrics] if result and not error else None
        ok = values is not None and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        g["results"][trial_id] = values if ok else FAILED
        self.records[trial_id].update(quality=values[0] if ok else math.nan, complete=ok)
        done = list(g["results"].values())
        if g["stage"] == "search" and not g.get("told") and len(done) == self.repeats and PENDING not in done:
            g["told"] = True
            self.searcher.link_trials(g["inner"], sorted(g["results"]))
            finished = [v for v in done if v is not FAILED]
            if finished:
                mean = {m: sum(v[i] for v in finished) / len(finished) for i, m in enumerate(metrics)}
                self.searcher.on_trial_complete(g["inner"], result=mean)
            else:
                self.searcher.on_trial_complete(g["inner"], error=True)

    def _plan_confirmation(self):
        import pandas as pd

        self.confirm_planned = True
        frame = pd.DataFrame([r for r in self.records.values() if r["complete"] and r["configuration"]])
        if frame.empty:
            return
        frame = frame.rename(columns={"quality": "target_dev"})
        chosen = configs_to_confirm(frame, self.confirm_top, "target_dev")
        for i, configuration in enumerate(chosen):
            source = next(r["group"] for r in self.records.values() if r["configuration"] == configuration)
            self._new_group(f"confirm{i}", self.groups[source]["flat"], "confirm", None, self.confirm_seeds)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return _set_search_properties_backwards_compatible(self.searcher.set_search_properties, metric, mode, config, **spec)

    # Tune saves a wrapper (a searcher with a `.searcher`) by get_state/set_state, the searcher inside by its own save
    def get_state(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "searcher"}

    def set_state(self, state: dict):
        self.__dict__.update(state)


def drive_locally(search: StagedSearch, train) -> "pd.DataFrame":  # noqa: F821
    """Run a staged search one trial at a time in this process, without Ray (tests, benchmarks): `train(config,
    trial_id)` trains one trial and returns its final metrics. Returns the trial frame (analysis.frames' columns)."""
    import pandas as pd

    from analysis.frames import config_columns, with_configuration_spread

    rows = []
    while (suggested := search.suggest(trial_id := f"local{len(rows):03d}")) not in (None, Searcher.FINISHED):
        config = search.space.trial_config(suggested, seed=suggested[SEED_KEY])
        final = train(config, trial_id)
        search.on_trial_complete(trial_id, final)
        rows.append({"experiment": "local", "trial_id": trial_id, "stage": suggested[STAGE_KEY], "complete": True,
                     **config_columns(config), **final})
    if suggested is None:  # one trial at a time, every result is in before the next suggestion: it cannot wait
        raise RuntimeError("the staged search waited with no trial running")
    return with_configuration_spread(pd.DataFrame(rows))
