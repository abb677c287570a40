"""Search spaces: the shipped ones load; bad ones report every problem with its key path."""
import optuna
import pytest

from raysearch.errors import UserInputError
from raysearch.config import GROUPS
from search_spaces import list_spaces, load_space, space_from_dict

from .conftest import SHARED_DATA


def test_shipped_spaces_load_and_are_listed():
    names = {s["name"] for s in list_spaces()}
    assert {"how_what_when", "baselines", "demo"} <= names
    for name in names:
        space = load_space(name)
        assert space.metrics == ["target_dev", "remaining_params"] and space.modes == ["max", "min"]


def test_define_by_run_samples_conditionals_and_valid_configs():
    space = load_space("how_what_when").with_base([])
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    seen_modes = set()
    for _ in range(40):
        trial = study.ask()
        space.sample(trial)
        params = trial.params
        mode = params["transfer.coupling"]
        seen_modes.add(mode)
        assert ("transfer.coupling_strength" in params) == (mode == "soft")
        assert any(k.startswith("transfer.groups.") for k in params) == (mode != "none")
        config = space.trial_config(params)  # every sampled config is a valid trial config
        assert config.pruning.target_sparsity in (0.6, 0.8)
        assert 0 <= config.transfer.transfer_start_step <= 0.8 * config.max_steps
        if mode != "none" and config.transfer.coupling != "none":
            assert config.transfer.groups == [g for g in ("embeddings", "attention", "ffn", "layernorm", "masks")
                                              if params[f"transfer.groups.{g}"] == "on"]
        study.tell(trial, [0.5, 1.0])
    assert seen_modes == {"tied", "soft", "none"}


def test_base_overrides_apply_and_local_paths_become_absolute(monkeypatch):
    monkeypatch.chdir(SHARED_DATA)
    space = load_space("demo").with_base(["target.source=RTE", "max_steps=400"])
    assert space.base["target"]["source"] == str((SHARED_DATA / "RTE").resolve())
    assert space.base["max_steps"] == 400


def _problems(data) -> str:
    with pytest.raises(UserInputError) as info:
        space_from_dict(data, name="bad")
    message = str(info.value)
    assert "\n" not in message
    return message


def test_every_problem_is_reported_with_its_key_path():
    base = {"target": {"source": "x"}, "max_steps": 100}
    message = _problems({"base": base, "parameters": {
        "transfer.groups": {"subset_of": ["embeddings", "ffnn"]},
        "transfer.coupling": {"choices": ["tied", "glued"]},
        "target_train_size": {"choices": []},
        "learning_rate": {"low": 1e-3, "high": 1e-5, "log": True},
        "transfer.transfer_start_step": {"low": 0, "high": 500, "int": True},
        "transfer.transfer_weight": {"distribution": "beta"},
        "pruning.target_sparsity": {"fraction": [0.2, 1.5]},
    }})
    for fragment in ("parameters.transfer.groups.subset_of: unknown group 'ffnn'",
                     "parameters.transfer.coupling.choices: unknown value 'glued'",
                     "parameters.target_train_size.choices: empty",
                     "parameters.learning_rate: low 0.001 > high 1e-05",
                     "parameters.transfer.transfer_start_step.high: start step 500 is beyond max_steps=100",
                     "parameters.transfer.transfer_weight: unknown distribution key(s) distribution",
                     "parameters.pruning.target_sparsity.fraction"):
        assert fragment in message, message


def test_bad_base_and_missing_parameters():
    assert "base.transfer.coupling" in _problems({"base": {"target": {"source": "x"}, "transfer": {"coupling": "glued"}},
                                                  "parameters": {"learning_rate": {"choices": [0.001]}}})
    assert "parameters: empty" in _problems({"base": {"target": {"source": "x"}}})
    assert "when: 'transfer.coupling' is not a parameter listed before" in _problems(
        {"base": {"target": {"source": "x"}}, "parameters": {"transfer.coupling_strength": {"low": 0.1, "high": 1, "when": {"transfer.coupling": "soft"}}}})


def test_unknown_space_and_bad_yaml(tmp_path):
    with pytest.raises(UserInputError, match="neither a file nor a shipped space"):
        load_space("no_such_space")
    bad = tmp_path / "bad.yaml"
    bad.write_text("parameters: [unclosed")
    with pytest.raises(UserInputError, match="not valid YAML"):
        load_space(str(bad))


def test_tune_random_search_space_samples_everything_and_conditions_apply_after():
    from ray import tune

    space = load_space("demo")
    domains = space.tune_param_space()
    assert set(domains) == {"transfer.coupling", "transfer.coupling_strength", "transfer.transfer_start_step",
                            "pruning.target_sparsity", *(f"transfer.groups.{g}" for g in GROUPS)}
    assert isinstance(domains["transfer.coupling_strength"], tune.search.sample.Float)
    flat = {"transfer.coupling": "tied", "transfer.coupling_strength": 0.1, "transfer.transfer_start_step": 0.5,
            "pruning.target_sparsity": 0.7, **{f"transfer.groups.{g}": "on" for g in GROUPS}}
    overrides = space.overrides(flat)
    assert "transfer.coupling_strength" not in overrides  # only for soft coupling
    assert overrides["transfer.transfer_start_step"] == 150 and overrides["transfer.groups"] == list(GROUPS)
    none = space.overrides({**flat, "transfer.coupling": "none"})
    assert set(none) == {"transfer.coupling", "pruning.target_sparsity"}  # groups and start step need coupling


def test_grid_covers_every_baseline_once_and_refuses_continuous_parameters():
    space = load_space("baselines")
    grid = space.tune_param_space(grid=True)
    assert grid["transfer.preset"] == {"grid_search": ["no_transfer", "sequential", "multitask"]}
    assert space.grid_size() == 3 * 2 * 3 and space.repeats == 3  # presets x sparsities, each on 3 seeds
    with pytest.raises(UserInputError, match="--sampler grid: needs categorical parameters only; transfer.coupling_strength"):
        load_space("demo").tune_param_space(grid=True)


def test_trial_configs_do_not_leak_into_each_other_or_the_base():
    """Overrides write into nested sections: one trial's values must not reach the next trial or the space."""
    import copy

    space = load_space("how_what_when")
    base = copy.deepcopy(space.base)
    groups = {f"transfer.groups.{g}": "on" if g == "ffn" else "off" for g in GROUPS}
    tied = {"transfer.coupling": "tied", **groups, "transfer.transfer_weight": 0.5, "transfer.transfer_start_step": 0.2}
    soft = {**tied, "transfer.coupling": "soft", "transfer.coupling_strength": 0.05}
    alone = space.trial_config(tied)
    assert space.trial_config(soft).transfer.coupling_strength == 0.05
    after = space.trial_config(tied)
    assert after.transfer.coupling_strength == alone.transfer.coupling_strength == 0.0
    assert space.base == base


@pytest.mark.parametrize("preset", ["sequential", None])
def test_a_stored_trial_config_loads_back_as_the_same_config(tmp_path, preset):
    """What a trial stores (its resolved config as JSON) is a config `raysearch train` reads back unchanged."""
    import json

    from raysearch.config import load_config

    space = load_space("baselines" if preset else "how_what_when")
    params = {"transfer.preset": preset} if preset else {
        "transfer.coupling": "soft", "transfer.coupling_strength": 0.05, "transfer.transfer_weight": 0.5,
        "transfer.transfer_start_step": 0.25, **{f"transfer.groups.{g}": "on" if g in ("ffn", "masks") else "off" for g in GROUPS}}
    config = space.trial_config(params)
    assert config.transfer.preset == preset
    stored = tmp_path / "trial.json"
    stored.write_text(json.dumps(config.to_dict()))
    assert load_config(stored) == config


def test_categorical_choices_of_mixed_types_are_refused_when_the_space_loads():
    space = {"description": "d", "base": {"model": {"tiny": {"architecture": "bert"}}, "target": {"source": "synthetic:target"}},
             "parameters": {"pruning.target_sparsity": {"choices": [0.5, "0.7"]}}}
    with pytest.raises(UserInputError, match=r"pruning.target_sparsity.choices: mixes number and str values"):
        space_from_dict(space, name="mixed")
