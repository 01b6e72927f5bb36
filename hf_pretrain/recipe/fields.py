"""How a recipe key is declared and checked: the field helpers every section uses (each key carries a one-line
doc, which `hf-pretrain recipes show` and `pretrain --help` print), the per-key checks (type, choices, range,
finite numbers) and building a section from a mapping, with a did-you-mean for unknown keys.

A bad value fails before any work starts, naming the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import field
from typing import Any

import yaml


class RecipeError(ValueError):
    """A recipe key or value that is not allowed; the message says which and what is."""


def setting(default, doc: str):
    """A key with no constraint beyond its type."""
    return field(default=default, metadata={"doc": doc})


def choice(default, *allowed, doc: str):
    return field(default=default, metadata={"choices": allowed, "doc": doc})


def ranged(default, low=None, high=None, doc: str = "", low_open: bool = False):
    """A number in [low, high] (or (low, high] with low_open)."""
    return field(default=default, metadata={"low": low, "high": high, "low_open": low_open, "doc": doc})


def listing(doc: str, default=()):
    """A list (a single value given for it becomes a one-item list)."""
    return field(default_factory=lambda: list(default), metadata={"doc": doc})


def mapping(doc: str):
    return field(default_factory=dict, metadata={"doc": doc})


def section(cls, doc: str | None = None):
    """A nested section; its doc is the section class's first docstring line unless given."""
    return field(default_factory=cls, metadata={"doc": doc or first_line(cls.__doc__)})


def first_line(text: str | None) -> str:
    return (text or "").strip().split("\n\n")[0].replace("\n", " ").split(". ")[0].rstrip(".")


class SerializableRecipe:
    """to_dict / to_yaml for the recipe dataclasses (pretraining and fine-tuning): the resolved recipe a run
    writes next to its outputs."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# --------------------------------------------------------------------------------------------------- building
def build_section(cls, data: dict, prefix: str):
    if not isinstance(data, dict):
        raise RecipeError(f"{prefix.rstrip('.') or 'recipe'} must be a mapping, got {data!r}.")
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            hint = difflib.get_close_matches(str(key), known, n=1)
            raise RecipeError(
                f"unknown key {prefix + str(key)!r}"
                + (f"; did you mean {prefix + hint[0]!r}?" if hint else "")
                + f" Allowed in {prefix.rstrip('.') or 'the recipe'}: {', '.join(known)}."
            )
    values = {}
    hints = typing.get_type_hints(cls)
    for name, spec in known.items():
        if name not in data:
            continue
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = build_section(hint, data[name] or {}, prefix=f"{prefix}{name}.")
        else:
            values[name] = check_value(f"{prefix}{name}", data[name], hint, spec.metadata)
    return cls(**values)


def check_fields(section, prefix: str) -> None:
    """A section built in Python (tests, notebooks, presets) gets the checks a recipe's mapping gets; each value
    is replaced by its checked form (e.g. an int given for a float)."""
    hints = typing.get_type_hints(type(section))
    for spec in dataclasses.fields(section):
        checked = check_value(f"{prefix}.{spec.name}", getattr(section, spec.name), hints[spec.name], spec.metadata)
        setattr(section, spec.name, checked)


def check_value(key: str, value: Any, hint, metadata) -> Any:
    allowed_types = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    optional = type(None) in allowed_types
    if value is None:
        if optional:
            return None
        raise RecipeError(f"{key}=null is not allowed; it needs a value of type {describe(allowed_types)}.")
    value = coerce(key, value, [t for t in allowed_types if t is not type(None)])
    choices = metadata.get("choices")
    if choices and value not in choices:
        hint_text = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        raise RecipeError(
            f"{key}={value!r} is not allowed; choose one of {', '.join(map(repr, choices))}"
            + (f" (did you mean {hint_text[0]!r}?)" if hint_text else "")
            + "."
        )
    low, high = metadata.get("low"), metadata.get("high")
    if low is not None and (value < low or (metadata.get("low_open") and value == low)):
        bound = f"> {low}" if metadata.get("low_open") else f">= {low}"
        raise RecipeError(f"{key}={value!r} is not allowed; it must be {bound}.")
    if high is not None and value > high:
        raise RecipeError(f"{key}={value!r} is not allowed; it must be <= {high}.")
    return value


def coerce(key: str, value: Any, types_allowed: list) -> Any:
    for expected in types_allowed:
        origin = typing.get_origin(expected) or expected
        if origin is bool and isinstance(value, bool):
            return value
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if origin is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return finite(key, float(value))
        if origin is float and isinstance(value, str):
            try:  # YAML 1.1 reads `1e-3` (no dot) as a string
                number = float(value)
            except ValueError:
                pass
            else:
                return finite(key, number)
        if origin is str and isinstance(value, str):
            return value
        if origin is list:
            return list(value) if isinstance(value, (list, tuple)) else [value]
        if origin is dict and isinstance(value, dict):
            return value
    raise RecipeError(f"{key}={value!r} is not allowed; it must be {describe(types_allowed)}.")


def finite(key: str, value: float) -> float:
    """nan passes every range check (all comparisons with it are false) and inf would never end a budget."""
    if not math.isfinite(value):
        raise RecipeError(f"{key}={value!r} is not allowed; it must be a finite number (not nan or inf).")
    return value


def describe(types_allowed) -> str:
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string", list: "a list",
             dict: "a mapping", type(None): "null"}
    return " or ".join(names.get(typing.get_origin(t) or t, str(t)) for t in types_allowed)


def changed_keys(section, prefix: str) -> list[str]:
    """`prefix.key=value` for every key of a section that differs from its default."""
    default = type(section)()
    return [f"{prefix}.{f.name}={getattr(section, f.name)!r}" for f in dataclasses.fields(section)
            if getattr(section, f.name) != getattr(default, f.name)]


# --------------------------------------------------------------------------------------------------- showing
def documented_keys(cls, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted key, default, doc) of every key of a recipe class, sections depth first; an optional section (null
    by default, like a fine-tuning recipe's `lora`) has a row of its own and its keys below it."""
    rows = []
    hints = typing.get_type_hints(cls)
    for spec in dataclasses.fields(cls):
        key, hint = f"{prefix}{spec.name}", hints[spec.name]
        nested = next((t for t in (typing.get_args(hint) or (hint,)) if dataclasses.is_dataclass(t)), None)
        default = spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()
        if nested is None or default is None:
            rows.append((key, default, spec.metadata.get("doc", "")))
        if nested is not None:
            rows += documented_keys(nested, f"{key}.")
    return rows


def annotated_yaml(recipe, sections: typing.Iterable[str] | None = None) -> str:
    """The recipe as YAML with each key's doc as a comment; `sections`: the top-level keys to show (all if None)."""
    lines: list[str] = []
    write_annotated(recipe, lines, indent="", keep=set(sections) if sections is not None else None)
    return "\n".join(lines) + "\n"


def write_annotated(node, lines: list[str], indent: str, keep: set[str] | None) -> None:
    for spec in dataclasses.fields(node):
        if keep is not None and spec.name not in keep and dataclasses.is_dataclass(getattr(node, spec.name)):
            continue
        value = getattr(node, spec.name)
        doc = spec.metadata.get("doc", "")
        if dataclasses.is_dataclass(value):
            lines.append(f"{indent}{spec.name}:" + (f"  # {doc}" if doc else ""))
            write_annotated(value, lines, indent + "  ", None)
        elif isinstance(value, dict) and value:
            lines.append(f"{indent}{spec.name}:" + (f"  # {doc}" if doc else ""))
            for key, item in value.items():
                lines.append(f"{indent}  {key}: {inline_yaml(item)}")
        else:
            lines.append(f"{indent}{spec.name}: {inline_yaml(value)}" + (f"  # {doc}" if doc else ""))


def inline_yaml(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()
