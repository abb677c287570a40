"""Typed dataclasses from plain dicts (YAML, --set), with one-line errors that name the field and the fix.

`build(cls, data, where, nested)` checks unknown keys, types and missing fields; `set_dotted` and `set_value` write
`key.sub=value` overrides into nested dicts; `shown` quotes a value briefly in a message.
"""
import types
import typing
from dataclasses import MISSING, fields
from typing import Any

import yaml

from .errors import UserInputError


def check(condition: bool, where: str, problem: str, fix: str):
    if not condition:
        raise UserInputError(where, problem, fix)


def check_choice(value, choices, where: str):
    check(value in choices, where, f"unknown value {value!r}", f"choose one of {', '.join(map(str, choices))}")


def check_non_negative(value, where: str):
    check(isinstance(value, (int, float)) and value >= 0, where, f"must be >= 0, got {value!r}", "give a non-negative number")


def build(cls, data: Any, where: str, nested: dict):
    """Build dataclass `cls` from a mapping: unknown keys and values of the wrong type are rejected with their path."""
    if data is None:
        data = {}
    check(isinstance(data, dict), where or "config", f"must be a mapping of fields, got {shown(data)}",
           "write it as `key: value` lines (see README.md, Train one configuration)")
    known = {f.name: f for f in fields(cls)}
    for key in data:
        check(key in known, f"{where}.{key}".lstrip("."), "unknown field", f"valid fields here: {', '.join(known)}")
    kwargs = {}
    for key, value in data.items():
        sub = nested.get((cls, key))
        path = f"{where}.{key}".lstrip(".")
        if sub is not None and value is not None:
            kwargs[key] = build(sub, value, path, nested)
        elif sub is not None and allows_none(known[key].type):
            kwargs[key] = None  # an optional section left empty (e.g. `task:`)
        elif sub is not None:
            check(known[key].default_factory is not MISSING, path, "is empty", f"give the {key} section's fields, e.g. {key}: {{source: PATH}}")
            kwargs[key] = sub()  # an empty section means its defaults
        else:
            kwargs[key] = typed(value, known[key], path)
    missing = [f.name for f in known.values() if f.name not in kwargs and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        raise UserInputError(f"{where}.{missing[0]}".lstrip("."), "is missing", f"add it, e.g. {missing[0]}: {{source: PATH}}")
    return cls(**kwargs)


_TYPE_WORDS = {bool: ("true or false", "true"), int: ("a whole number", "100"), float: ("a number", "0.5"),
               str: ("text", "NAME"), dict: ("a mapping", "{key: value}"), list: ("a list of names", "[a, b]")}


_TYPE_CHECKS = {bool: lambda v: isinstance(v, bool), int: lambda v: isinstance(v, int) and not isinstance(v, bool),
                float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), str: lambda v: isinstance(v, str),
                dict: lambda v: isinstance(v, dict), list: lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)}


def allows_none(annotation) -> bool:
    return isinstance(annotation, types.UnionType) and type(None) in typing.get_args(annotation)


SHOWN_CHARS = 60  # a message quotes at most this much of a value (YAML aliases can expand one to megabytes)


def shown(value) -> str:
    if not isinstance(value, (str, int, float, bool)):
        return f"a {type(value).__name__}"
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}... ({len(text):,} characters)"


def typed(value, spec, where: str):
    """`value` checked against the annotation of field `spec`. Ints given for floats become floats, and YAML 1.1
    reads `1e-3` as text, so a number written so is accepted for a float field."""
    annotation = spec.type
    if value is None:
        default = spec.default if spec.default is not MISSING else None
        check(allows_none(annotation), where, "is empty", f"give a value, or remove the line for the default ({default!r})")
        return None
    kind = next(a for a in typing.get_args(annotation) if a is not type(None)) if allows_none(annotation) else annotation
    base = typing.get_origin(kind) or kind
    if base is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            example = spec.default if isinstance(spec.default, float) else 0.5  # an example of this field's own scale
            raise UserInputError(where, f"{shown(value)} is not a number", f"write e.g. {where.rsplit('.', 1)[-1]}: {example:g}") from None
    if not _TYPE_CHECKS.get(base, lambda v: True)(value):
        word, example = _TYPE_WORDS.get(base, ("another type", "..."))
        if base is list and isinstance(value, str):
            example = f"[{value}]"
        elif spec.default not in (MISSING, None, "") and _TYPE_CHECKS[base](spec.default):  # the field's own default
            example = str(spec.default).lower() if isinstance(spec.default, bool) else str(spec.default)
        raise UserInputError(where, f"must be {word}, got {shown(value)}", f"write e.g. {where.rsplit('.', 1)[-1]}: {example}")
    return float(value) if base is float else value


def set_dotted(data: dict, assignment: str) -> dict:
    """Apply one `key.sub=value` override (value parsed as YAML, as on a command line) to a nested dict."""
    check("=" in assignment, f"--set {assignment}", "is not key=value", "write e.g. --set pruning.target_sparsity=0.5")
    key, raw = assignment.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw else None
    except yaml.YAMLError as e:
        raise UserInputError(f"--set {key}", f"value {raw!r} is not valid YAML ({yaml_problem(e)})",
                             "quote the value or close its brackets, e.g. --set transfer.groups=[ffn,attention]") from None
    return set_value(data, key.strip(), value, where=f"--set {key}")


def yaml_problem(e: yaml.YAMLError) -> str:
    """What is wrong and where (line and column), in one line."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


def set_value(data: dict, key: str, value, where: str | None = None) -> dict:
    """Set the dotted `key` (e.g. pruning.target_sparsity) of a nested dict to `value`, creating sections."""
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        check(isinstance(node, dict), where or key, f"{part!r} is not a section", "check the key path")
    node[parts[-1]] = value
    return data
