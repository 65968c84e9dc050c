"""Dotted `key=value` overrides of any spec field, read against the spec's own dataclasses."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass

from pipeline.errors import MvlptError

# Sizes a shipped spec sets for its own task list; on fewer tasks they shrink to what the tasks allow
# (the largest value the loader accepts for n tasks), unless the command line gives them.
SHRINKABLE = {
    "noise.pairs": lambda n: n * (n - 1),
    "multisource.k": lambda n: n - 1,
    "groups.n_groups": lambda n: n,
    "noise.targets": lambda n: n,
    "multisource.folds": lambda n: n,
}


@dataclass(frozen=True)
class Field:
    """What a dotted key names: its path in the spec's TOML document and the type it accepts."""

    path: tuple[str, ...]
    kind: object  # a type hint: int, float, str, bool, tuple[X, ...], X | None


def _hints(schema: type) -> dict:
    return typing.get_type_hints(schema)


def _schemas() -> dict:
    """The tables whose keys are not a dataclass field's own: [recipe] (the kernel's Recipe) and
    [methods.NAME] (each method's config schema)."""
    from pipeline.methods import METHODS, TUNED_METHODS
    from pipeline.recipe import Recipe

    return {"recipe": Recipe, "methods": {m: METHODS[m][0] for m in TUNED_METHODS}}


def resolve_key(key: str) -> Field:
    """The spec field a dotted key names, or one error line naming the key and the keys it could be."""
    from study.spec import TOP_KEYS, StudySpec

    parts = key.split(".")
    schema, path = StudySpec, []
    special = _schemas()
    from pipeline.methods import TUNED_METHODS
    from pipeline.recipe import Recipe

    for i, part in enumerate(parts):
        if schema is Recipe and part in TUNED_METHODS and path == ["recipe"]:  # recipe.<method>.<key>
            path.append(part)
            continue
        if isinstance(schema, dict):  # methods.<name>
            if part not in schema:
                _unknown(key, ".".join(path), schema)
            schema, path = schema[part], [*path, part]
            continue
        fields = {f.name: f for f in dataclasses.fields(schema)}
        if schema is StudySpec:  # fields the TOML document does not hold (the suite's name) are not keys
            fields = {name: f for name, f in fields.items() if name in TOP_KEYS}
        if part not in fields:
            _unknown(key, ".".join(path), fields)
        path.append(part)
        kind = _hints(schema)[part]
        nested = special.get(part) if schema is StudySpec else None
        if nested is None and dataclasses.is_dataclass(kind):
            nested = kind
        if nested is None:
            if i != len(parts) - 1:
                raise MvlptError(f"override '{key}': '{'.'.join(path)}' has no keys below it")
            return Field(tuple(path), kind)
        schema = nested
    where = ".".join(path)
    keys = schema if isinstance(schema, dict) else [f.name for f in dataclasses.fields(schema)]
    raise MvlptError(f"override '{key}': '{where}' is a table; name one of its keys ({', '.join(keys)})")


def _unknown(key: str, where: str, known) -> typing.NoReturn:
    place = f" in '{where}'" if where else ""
    raise MvlptError(f"override '{key}': unknown key{place} (known: {', '.join(sorted(known))})")


def _describe(kind) -> str:
    if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]
        plural = {int: "integers", float: "numbers", str: "strings", bool: "true/false values"}
        return f"a list of {plural.get(item, _describe(item))} (a,b,c or [a, b, c])"
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return " or ".join("none" if a is type(None) else _describe(a) for a in args)
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        kind, getattr(kind, "__name__", str(kind))
    )


def _scalar(text: str, kind):
    if kind is bool:
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        raise ValueError(text)
    if kind is int:
        return int(text)
    if kind is float:
        return float(text)
    if kind is str:
        return text
    raise ValueError(text)


def _items(text: str) -> list[str]:
    """A list value: JSON ('[0, 1]') or comma-separated ('0,1'); an empty text is an empty list."""
    if text.startswith("["):
        items = json.loads(text)
        if not isinstance(items, list):
            raise ValueError(text)
        return [json.dumps(v) if isinstance(v, bool) else str(v) for v in items]
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_value(key: str, text: str, kind):
    """`text` as a value of `kind`, or one error line naming the key and what it accepts."""
    try:
        if typing.get_origin(kind) is tuple:
            return [_scalar(t, typing.get_args(kind)[0]) for t in _items(text)]
        if typing.get_origin(kind) in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(kind) if a is not type(None)]
            if len(args) < len(typing.get_args(kind)) and text.lower() in ("none", "null"):
                return None
            for a in args:
                try:
                    return _scalar(text, a)
                except ValueError:
                    continue
            raise ValueError(text)
        return _scalar(text, kind)
    except (ValueError, json.JSONDecodeError):
        raise MvlptError(f"override '{key}': expected {_describe(kind)}, got '{text}'") from None


def parse_overrides(pairs: list[str]) -> dict[tuple[str, ...], object]:
    """KEY=VALUE strings -> {path in the spec document: typed value}; each bad one named in one line."""
    out = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise MvlptError(f"override '{pair}': expected KEY=VALUE (e.g. noise.pairs=2)")
        field = resolve_key(key.strip())
        out[field.path] = parse_value(key.strip(), text.strip(), field.kind)
    return out


def apply_to(data: dict, overrides: dict[tuple[str, ...], object]) -> dict:
    """The spec document with each override set at its path (tables created where missing)."""
    for path, value in overrides.items():
        table = data
        for part in path[:-1]:
            table = table.setdefault(part, {})
        table[path[-1]] = value
    return data


def shrink_to_tasks(data: dict, n_tasks: int, given: set[str]) -> list[str]:
    """Lower the sizes of a shipped spec (SHRINKABLE) that `n_tasks` tasks cannot serve, except those
    the command line gave (`given`, dotted keys); -> one line per size changed."""
    notes = []
    for key, largest in SHRINKABLE.items():
        section, name = key.split(".")
        value = data.get(section, {}).get(name)
        if key in given or value is None or value <= largest(n_tasks):
            continue
        data[section][name] = max(largest(n_tasks), 1 if name != "pairs" else 0)
        notes.append(f"{key} {value} -> {data[section][name]}")
    return notes


def command_line_spec(path, shipped: bool, flags: dict, pairs: list[str]):
    """The spec of `mvlpt run`: the file at `path`, its flags (study.launch.overridden), then the
    dotted overrides; a shipped spec's sizes shrink to a smaller task list. -> (spec, notes)."""
    from study.launch import overridden
    from study.spec import load_spec, spec_from_dict

    spec = load_spec(path)
    dotted = parse_overrides(pairs)
    data = overridden(spec, **flags)
    for path_ in dotted:
        if path_[0] == "methods" and len(path_) > 2 and path_[1] not in data["methods"]:
            raise MvlptError(
                f"override '{'.'.join(path_)}': method '{path_[1]}' is not in this run's methods "
                f"({', '.join(data['methods'])})"
            )
    apply_to(data, dotted)
    notes = []
    if shipped and isinstance(data["tasks"], list) and list(data["tasks"]) != list(spec.tasks):
        notes = shrink_to_tasks(data, len(data["tasks"]), {".".join(p) for p in dotted})
    return spec_from_dict(data, where="command line"), notes
