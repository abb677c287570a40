"""An Optuna searcher that spends no trial on a configuration the search has already finished.

Samplers propose a configuration again: in the demo space `none` coupling leaves only the target sparsity to choose,
3 configurations in all, and TPE re-proposed one in 0-4 of every 16 trials (bench/search_efficiency.py). Training on a
CPU is deterministic, so such a trial can only replay the results it had (`duplicate_of` in raysearch.distributed.trial).
Here the proposal is told those results at once, which Optuna's model sees as it would a finished trial, and the sampler
is asked again; the trial Tune starts gets a configuration no finished trial ran. After MAX_REDRAWS proposals that were
all trained, the last one is kept and the trial replays its twin as before, so a small space still ends.

Ray's OptunaSearch keeps its Optuna study and trials in `_ot_study` and `_ot_trials` (Ray 2.60); the test
`test_a_proposal_of_a_finished_configuration_is_told_its_results_and_drawn_again` fails if that changes.
"""
import json

from ray.tune.search.optuna import OptunaSearch

from search_spaces import space_from_dict

MAX_REDRAWS = 10


class DistinctOptunaSearch(OptunaSearch):
    def __init__(self, *args, space_dict: dict, **kwargs):
        super().__init__(*args, **kwargs)
        self._search_space = space_from_dict(space_dict)  # configs keyed as they resolve (`_space` is OptunaSearch's)
        self._finished_values = {}  # resolved config (JSON) -> objective values of a finished trial that ran it
        self._pending_keys = {}  # Tune trial id -> resolved config (JSON) of the trial it runs
        self.redrawn = 0  # proposals told and drawn again (the tests read it)

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
