"""Search spaces: YAML files describing what Optuna may vary in a trial config.

A space file has
    description: one line
    base: a trial config (the sections of `raysearch train` YAML), or base_file: a path to one
    objectives: [{metric: target_dev, mode: max}, {metric: remaining_params, mode: min}]   (default)
                (`latency_ms`, min: the exported model's inference latency, measured at every evaluation)
    parameters: {dotted.config.key: spec, ...}
    repeats: 2   seeds each configuration is trained on (a seed is a repeat, never a parameter); default 2
A spec is one of
    {choices: [a, b, ...]}                          categorical
    {low: x, high: y, log: true|false}              float (uniform or log-uniform)
    {low: i, high: j, int: true}                    integer
    {subset_of: [g1, g2, ...]}                      one on/off parameter per element (e.g. groups)
    {fraction: [lo, hi]}                            a step as a fraction of max_steps (e.g. the start step)
and may carry `when: {other.key: value-or-list}`: sampled only when that earlier parameter took one of
those values (conditional parameters, e.g. coupling_strength only for soft coupling).

Loading validates everything and reports every problem with its key path, in one line.
"""
import copy
from dataclasses import dataclass
from functools import partial
from itertools import product
from pathlib import Path

import yaml

from raysearch.config import DEFAULT_MAX_STEPS, PRESETS, UNCOUPLED, config_from_dict
from raysearch.fields import set_dotted, set_value, yaml_problem
from raysearch.errors import UserInputError

from .params import Param, parse_param, spec_of

SPACES_DIR = Path(__file__).resolve().parent
DEFAULT_OBJECTIVES = ({"metric": "target_dev", "mode": "max"}, {"metric": "remaining_params", "mode": "min"})
DEFAULT_REPEATS = 2
# the named baselines every search runs first, on the same seeds as every other configuration (docs/METHOD.md, "Presets")
BASELINE_PRESETS = ("no_transfer", "multitask", "sequential")
PRESET_PARAM = "transfer.preset"
# keys the staged search adds to a trial's Tune config: its stage (baseline | search | confirm) and its seed
STAGE_KEY, SEED_KEY = "__stage__", "__seed__"


@dataclass
class SearchSpace:
    name: str
    description: str
    base: dict
    params: list[Param]
    objectives: list[dict]
    source: str = ""
    repeats: int = DEFAULT_REPEATS

    @property
    def metrics(self) -> list[str]:
        return [o["metric"] for o in self.objectives]

    @property
    def modes(self) -> list[str]:
        return [o["mode"] for o in self.objectives]

    @property
    def max_steps(self) -> int:
        return int(self.base.get("max_steps", DEFAULT_MAX_STEPS))

    def sample(self, trial) -> dict:
        """Define-by-run sampling: the trial's overrides as {dotted.key: value}."""
        sampled = {}
        for param in self.params:
            if param.active(sampled):
                sampled[param.path] = param.suggest(trial)
        return sampled

    def overrides(self, flat: dict) -> dict:
        """Turn a trial's flat params (as Tune's trial config) into config overrides. Parameters whose
        `when` does not hold are dropped: Optuna never samples them, Tune's random search samples all."""
        out, taken = {}, {}
        if flat.get(PRESET_PARAM) is not None:  # a baseline: its preset decides the transfer, the space the rest
            out[PRESET_PARAM] = flat[PRESET_PARAM]
        for param in self.params:
            if not param.active(taken):
                continue
            if param.kind == "subset":
                keys = [f"{param.path}.{g}" for g in param.choices]
                if any(k in flat for k in keys):
                    out[param.path] = [g for g in param.choices if flat.get(f"{param.path}.{g}") == "on"]
            elif param.path in flat:
                value = taken[param.path] = flat[param.path]
                out[param.path] = int(round(value * self.max_steps)) if param.kind == "fraction" else value
        # coupling with no group coupled is no coupling at all: say so, rather than fail the trial
        if out.get("transfer.coupling", self.base.get("transfer", {}).get("coupling")) not in (None, UNCOUPLED) and out.get("transfer.groups") == []:
            out["transfer.coupling"] = UNCOUPLED
        return out

    def trial_config(self, flat: dict, seed: int | None = None):
        """The validated TrainConfig of one trial: the base with the trial's values (and its repeat's seed) set (no
        text round trip). A baseline's preset replaces whatever transfer fields the base fixes."""
        data = copy.deepcopy(self.base)
        overrides = self.overrides(flat)
        if PRESET_PARAM in overrides:
            data["transfer"] = {k: v for k, v in (data.get("transfer") or {}).items() if k not in PRESETS[overrides[PRESET_PARAM]]}
        for key, value in overrides.items():
            set_value(data, key, value)
        if seed is not None:
            data["seed"] = seed
        return config_from_dict(data)

    @property
    def base_seed(self) -> int:
        return int(self.base.get("seed", 0))

    def baseline_points(self) -> list[dict]:
        """The named baselines as flat trial params: each preset at every combination of the space's categorical
        parameters outside `transfer.` (e.g. each target sparsity), so every level carries its own baselines."""
        axes = [[{p.path: c} for c in p.choices] for p in self.params if p.kind == "categorical" and not p.path.startswith("transfer.")]
        levels = [{k: v for part in combo for k, v in part.items()} for combo in product(*axes)]
        return [{PRESET_PARAM: preset, **level} for preset in BASELINE_PRESETS for level in levels]

    def levels(self) -> int:
        """Target-sparsity levels of the space (one pick each): the choices it searches, else one."""
        return next((len(p.choices) for p in self.params if p.path == "pruning.target_sparsity" and p.kind == "categorical"), 1)

    def with_base(self, overrides: list[str]) -> "SearchSpace":
        """A copy whose base config has `key=value` overrides applied and local data paths made absolute
        (trials run in other working directories, possibly on other nodes of a shared file system)."""
        base = copy.deepcopy(self.base)
        for assignment in overrides:
            set_dotted(base, assignment)
        keys = [a.split("=", 1)[0].strip() for a in overrides]
        try:
            config_from_dict(base)
        except UserInputError as e:  # a value given with --set is the user's line to fix, not the space file
            key = next((k for k in keys if e.where == k or e.where.startswith(k + ".")), None)
            if key is not None:
                raise UserInputError(f"--set {key}", e.problem, e.fix) from None
        for section in (base.get("target"), (base.get("transfer") or {}).get("task")):
            if isinstance(section, dict) and section.get("source") and Path(section["source"]).expanduser().exists():
                section["source"] = str(Path(section["source"]).expanduser().resolve())
        return space_from_dict({**self.to_dict(), "base": base}, name=self.name, source=self.source)

    def tune_param_space(self, grid: bool = False) -> dict:
        """Every parameter as a Ray Tune distribution, for Tune's own random search (conditions are
        applied afterwards, in `overrides`); with `grid`, every combination of categorical choices."""
        from ray import tune

        if grid:
            self._check_categorical("--sampler grid", "use tpe or random for this space, or give those parameters choices")
        pick = tune.grid_search if grid else tune.choice
        space = {}
        for p in self.params:
            if p.kind == "categorical":
                space[p.path] = pick(p.choices)
            elif p.kind == "subset":
                space.update({f"{p.path}.{g}": pick(["on", "off"]) for g in p.choices})
            elif p.kind == "int":
                space[p.path] = tune.randint(int(p.low), int(p.high) + 1)
            else:
                space[p.path] = tune.loguniform(p.low, p.high) if p.log else tune.uniform(p.low, p.high)
        return space

    def grid_points(self) -> list[dict]:
        """Every combination of categorical choices as flat params, the first parameter varying slowest, on each of the
        space's `repeats` seeds (SEED_KEY): the trials of Tune's grid search, for running a grid without Ray."""
        self._check_categorical("grid", "give those parameters choices")
        axes = []
        for p in self.params:
            if p.kind == "categorical":
                axes.append([{p.path: c} for c in p.choices])
            else:
                axes += [[{f"{p.path}.{g}": v} for v in ("on", "off")] for g in p.choices]
        axes.append([{SEED_KEY: self.base_seed + i} for i in range(self.repeats)])
        return [{k: v for part in combo for k, v in part.items()} for combo in product(*axes)]

    def _check_categorical(self, field: str, fix: str):
        continuous = [p.path for p in self.params if p.kind not in ("categorical", "subset")]
        if continuous:
            raise UserInputError(field, f"needs categorical parameters only; {', '.join(continuous)} are continuous", fix)

    def grid_size(self) -> int:
        """Trials in the full grid of categorical choices (a subset parameter is on/off per element), each on `repeats` seeds."""
        size = self.repeats
        for p in self.params:
            size *= 2 ** len(p.choices) if p.kind == "subset" else len(p.choices) if p.kind == "categorical" else 1
        return size

    def define_by_run(self):
        """A picklable define-by-run function for OptunaSearch (searcher checkpoints pickle it)."""
        return partial(_define_by_run, self.to_dict())

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "base": self.base, "objectives": self.objectives,
                "parameters": {p.path: spec_of(p) for p in self.params}, "source": self.source, "repeats": self.repeats}


def _define_by_run(space_dict: dict, trial):
    space_from_dict(space_dict).sample(trial)
    return None


# ------------------------------------------------------------------ validation


def _value_problems(base: dict, params: list[Param]) -> list[str]:
    """Each value a parameter may take (every choice, both ends of a range), set alone on the base: a value its own
    field refuses (a sparsity of 1.5) is reported now, not inside a trial. Problems of other fields are left to the
    combinations that set them (soft coupling needs a strength, which another parameter gives)."""
    problems = []
    for p in params:
        values = p.choices if p.kind == "categorical" else [p.low, p.high] if p.kind in ("float", "int") else []
        for value in values:
            data = copy.deepcopy(base)
            try:
                set_value(data, p.path, int(value) if p.kind == "int" else value)
                config_from_dict(data)
            except UserInputError as e:
                if e.where == p.path:
                    problems.append(f"parameters.{p.path}: the value {value!r}: {e.problem} — {e.fix}")
    return problems


def space_from_dict(data: dict, name: str = "", source: str = "") -> SearchSpace:
    problems = []
    if not isinstance(data, dict):
        raise UserInputError(source or name or "space", "must be a YAML mapping", "write description, base and parameters as the shipped spaces do (`raysearch spaces` lists them)")
    for key in set(data) - {"name", "description", "base", "base_file", "objectives", "parameters", "source", "repeats"}:
        problems.append(f"{key}: unknown key (use description, base or base_file, objectives, parameters, repeats)")
    repeats = data.get("repeats", DEFAULT_REPEATS)
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        problems.append(f"repeats: must be a whole number >= 1 (seeds per configuration), got {repeats!r}")
    base = data.get("base")
    if base is None and data.get("base_file"):
        base_path = (Path(source).parent if source else Path.cwd()) / data["base_file"]
        if not base_path.is_file():
            problems.append(f"base_file: {base_path} not found")
            base = {}
        else:
            base = yaml.safe_load(base_path.read_text()) or {}
    if not isinstance(base, dict) or not base:
        problems.append("base: missing; give the trial config (model, target, transfer, pruning, ...) or base_file")
        base = {}
    max_steps = base.get("max_steps", DEFAULT_MAX_STEPS)
    max_steps = max_steps if isinstance(max_steps, int) else DEFAULT_MAX_STEPS
    params, seen = [], []
    parameters = data.get("parameters") or {}
    if not isinstance(parameters, dict) or not parameters:
        problems.append("parameters: empty; list at least one parameter to search")
        parameters = {}
    for path, spec in parameters.items():
        param = parse_param(path, spec, problems, max_steps, seen)
        seen.append(path)
        if param is not None:
            params.append(param)
    objectives = data.get("objectives") or [dict(o) for o in DEFAULT_OBJECTIVES]
    for i, objective in enumerate(objectives):
        if not isinstance(objective, dict) or objective.get("mode") not in ("max", "min") or not objective.get("metric"):
            problems.append(f"objectives[{i}]: give {{metric: NAME, mode: max|min}}")
    if any(isinstance(o, dict) and o.get("metric") == "latency_ms" for o in objectives):
        # a latency objective needs every evaluation to measure it
        base = {**base, "latency": {**(base.get("latency") or {}), "enabled": True}}
    if base and not problems:
        try:  # the base must be a valid trial config by itself
            config_from_dict(base)
        except UserInputError as e:
            problems.append(f"base.{e.where}: {e.problem} — {e.fix}")
        else:
            problems += _value_problems(base, params)
    if problems:
        raise UserInputError(source or name or "space", "; ".join(problems), "fix the search space file")
    return SearchSpace(name=data.get("name") or name, description=str(data.get("description", "")), base=base,
                       params=params, objectives=objectives, source=source, repeats=repeats)


def load_space(name_or_path: str) -> SearchSpace:
    """A shipped space by name (see `list_spaces`) or a user's YAML file."""
    path = Path(name_or_path)
    if not path.is_file():
        shipped = SPACES_DIR / f"{name_or_path}.yaml"
        if not shipped.is_file():
            raise UserInputError("SPACE", f"{name_or_path!r} is neither a file nor a shipped space",
                                 f"use one of {', '.join(s['name'] for s in list_spaces())} or a YAML path")
        path = shipped
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise UserInputError(str(path), f"is not valid YAML ({yaml_problem(e)})", "fix the YAML syntax there") from None
    return space_from_dict(data, name=path.stem, source=str(path.resolve()))


def list_spaces() -> list[dict]:
    out = []
    for path in sorted(SPACES_DIR.glob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        out.append({"name": path.stem, "description": str(data.get("description", "")).strip()})
    return out
