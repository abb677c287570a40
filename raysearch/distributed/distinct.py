"""An Optuna searcher that spends no trial on a configuration the search has already finished.

Samplers propose a configuration again (bench/search_efficiency.py counts how often). Training on a CPU is deterministic, so such a trial can only replay the results it had (`duplicate_of` in raysearch.distributed.trial).
Here the proposal is told those results at once, which Optuna's model sees as it would a finished trial, and the sampler
is asked again; the trial Tune starts gets a configuration no finished trial ran. After MAX_REDRAWS proposals that were
all trained, the last one is kept and the trial replays its twin as before, so a small space still ends.

Ray's OptunaSearch keeps its Optuna study and trials in `_ot_study` and `_ot_trials` (Ray 2.60); the test
`test_a_proposal_of_a_finished_configuration_is_told_its_results_and_drawn_again` fails if that changes.
"""
import json
import warnings

import optuna

from ray.tune.search.optuna import OptunaSearch

from search_spaces import space_from_dict

MAX_REDRAWS = 10
TRIAL_IDS_ATTR = "raysearch_trial_ids"  # an Optuna trial's user attribute: the raysearch trials (seeds) that ran it


class NamedOptunaSearch(OptunaSearch):
    """Ray's OptunaSearch whose study names its objectives (Optuna's `trials_dataframe`, plots and optuna-dashboard show
    `target_dev`, not `values_0`) and links each Optuna trial to the raysearch trials that trained it."""

    def _setup_study(self, mode):
        super()._setup_study(mode)
        if self._ot_study.metric_names is None:  # a resumed study has them already
            with warnings.catch_warnings():  # "experimental" since Optuna 3.2, and what its dashboard reads
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self._ot_study.set_metric_names(self._metric if isinstance(self._metric, list) else [self._metric])

    def link_trials(self, trial_id: str, raysearch_trial_ids: list[str]):
        """Before `on_trial_complete(trial_id)`: the raysearch trials (one per seed) that trained this proposal."""
        if trial_id in self._ot_trials:
            self._ot_trials[trial_id].set_user_attr(TRIAL_IDS_ATTR, list(raysearch_trial_ids))


class DistinctOptunaSearch(NamedOptunaSearch):
    def __init__(self, *args, space_dict: dict, **kwargs):
        super().__init__(*args, **kwargs)
        self._search_space = space_from_dict(space_dict)  # configs keyed as they resolve (`_space` is OptunaSearch's)
        self._finished_values = {}  # resolved config (JSON) -> objective values of a finished trial that ran it
        self._pending_keys = {}  # Tune trial id -> resolved config (JSON) of the trial it runs
        self.redrawn = 0  # proposals told and drawn again

    def _config_key(self, params: dict) -> str:
        return json.dumps(self._search_space.trial_config(params).to_dict(), sort_keys=True)

    def suggest(self, trial_id: str):
        for attempt in range(MAX_REDRAWS + 1):
            suggested = super().suggest(trial_id)
            key = self._config_key(self._ot_trials[trial_id].params)
            values = self._finished_values.get(key)
            if values is None or attempt == MAX_REDRAWS:
                break
            self._ot_study.tell(self._ot_trials.pop(trial_id), values)
            self.redrawn += 1
        self._pending_keys[trial_id] = key
        return suggested

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        super().on_trial_complete(trial_id, result=result, error=error)
        key = self._pending_keys.pop(trial_id, None)
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        if key is not None and result and not error and all(isinstance(result.get(m), (int, float)) for m in metrics):
            self._finished_values.setdefault(key, [result[m] for m in metrics])
