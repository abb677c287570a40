"""One parameter of a search space: its spec parsed and checked (`parse_param`), asked of an Optuna trial
(`Param.suggest`), and written back as a spec (`spec_of`). The spec forms are in search_spaces/space.py."""
from dataclasses import dataclass, field
from typing import Any

from raysearch.config import COUPLING_MODES, GROUPS, PRESETS, field_path_problem

# values that a categorical parameter may take, for the keys where a typo would only fail inside a trial
KNOWN_CHOICES = {"transfer.coupling": COUPLING_MODES, "transfer.preset": tuple(PRESETS)}
SPEC_KEYS = {"choices", "low", "high", "log", "int", "subset_of", "fraction", "when"}


@dataclass
class Param:
    path: str
    kind: str  # categorical | float | int | subset | fraction
    choices: list = field(default_factory=list)
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    when: dict = field(default_factory=dict)

    def active(self, sampled: dict) -> bool:
        return all(sampled.get(key) in values for key, values in self.when.items())

    def suggest(self, trial) -> Any:
        """Ask an Optuna trial for this parameter; returns the value as the Optuna param(s) store it."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.path, self.choices)
        if self.kind == "float":
            return trial.suggest_float(self.path, self.low, self.high, log=self.log)
        if self.kind == "int":
            return trial.suggest_int(self.path, int(self.low), int(self.high))
        if self.kind == "fraction":
            return trial.suggest_float(self.path, self.low, self.high)
        # plain "on"/"off" strings: Optuna stores them without warnings, and they read well in frames
        return [g for g in self.choices if trial.suggest_categorical(f"{self.path}.{g}", ["on", "off"]) == "on"]


def spec_of(p: Param) -> dict:
    spec = {"choices": p.choices} if p.kind == "categorical" else {"subset_of": p.choices} if p.kind == "subset" else \
        {"fraction": [p.low, p.high]} if p.kind == "fraction" else {"low": p.low, "high": p.high, "log": p.log, "int": p.kind == "int"}
    if p.when:
        spec["when"] = p.when
    return spec



def parse_param(path: str, spec: Any, problems: list, max_steps: int, seen: list) -> Param | None:
    where = f"parameters.{path}"
    if path == "seed":
        problems.append(f"{where}: a seed is a repeat, not a parameter to search; remove it and set `repeats: N` in the space "
                        "(or `raysearch launch --repeats N`)")
        return None
    wrong_path = field_path_problem(path)
    if wrong_path:
        problems.append(f"{where}: not a config field ({wrong_path})")
        return None
    if not isinstance(spec, dict):
        problems.append(f"{where}: must be a mapping (choices / low+high / subset_of / fraction)")
        return None
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        problems.append(f"{where}: unknown distribution key(s) {', '.join(sorted(unknown))} (use choices, low/high[, log, int], subset_of, fraction)")
        return None
    when = {}
    for key, values in (spec.get("when") or {}).items():
        if key not in seen:
            problems.append(f"{where}.when: {key!r} is not a parameter listed before this one")
        when[key] = values if isinstance(values, list) else [values]
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            problems.append(f"{where}.choices: empty; list at least one value")
            return None
        kinds = {"number" if isinstance(c, (int, float)) and not isinstance(c, bool) else type(c).__name__ for c in choices}
        if len(kinds) > 1:  # every trial trains, then every analysis of the experiment fails on the mixed column
            problems.append(f"{where}.choices: mixes {' and '.join(sorted(kinds))} values ({choices!r}); "
                            "give them all one type (e.g. 0.7, not \"0.7\")")
        allowed = KNOWN_CHOICES.get(path)
        for c in choices if allowed else ():
            if c not in allowed:
                problems.append(f"{where}.choices: unknown value {c!r} (choose from {', '.join(allowed)})")
        if path == "transfer.transfer_start_step":
            for c in choices:
                if not isinstance(c, int) or c > max_steps:
                    problems.append(f"{where}.choices: start step {c!r} is beyond max_steps={max_steps}")
        return Param(path, "categorical", choices=list(choices), when=when)
    if "subset_of" in spec:
        elements = spec["subset_of"]
        if not isinstance(elements, list) or not elements:
            problems.append(f"{where}.subset_of: empty; list the elements to switch on/off")
            return None
        if path == "transfer.groups":
            for g in elements:
                if g not in GROUPS:
                    problems.append(f"{where}.subset_of: unknown group {g!r} (choose from {', '.join(GROUPS)})")
        return Param(path, "subset", choices=list(elements), when=when)
    if "fraction" in spec:
        bounds = spec["fraction"]
        if not (isinstance(bounds, list) and len(bounds) == 2 and all(isinstance(b, (int, float)) for b in bounds)):
            problems.append(f"{where}.fraction: give [low, high] fractions of max_steps")
            return None
        low, high = map(float, bounds)
        if low > high:
            problems.append(f"{where}.fraction: low {low} > high {high}")
        if low < 0 or high > 1:
            problems.append(f"{where}.fraction: [{low}, {high}] leaves [0, 1] (a start step beyond max_steps)")
        return Param(path, "fraction", low=low, high=high, when=when)
    if "low" in spec and "high" in spec:
        try:
            low, high = float(spec["low"]), float(spec["high"])
        except (TypeError, ValueError):
            problems.append(f"{where}: low/high must be numbers")
            return None
        if low > high:
            problems.append(f"{where}: low {low:g} > high {high:g}")
        if spec.get("log") and low <= 0:
            problems.append(f"{where}: a log distribution needs low > 0")
        if path == "transfer.transfer_start_step" and high > max_steps:
            problems.append(f"{where}.high: start step {high:g} is beyond max_steps={max_steps}")
        return Param(path, "int" if spec.get("int") else "float", low=low, high=high, log=bool(spec.get("log")), when=when)
    problems.append(f"{where}: unknown distribution (use choices, low/high, subset_of or fraction)")
    return None
