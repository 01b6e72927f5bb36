"""Reading a recipe: a YAML path or the name of a shipped recipe, with `key=value` overrides applied."""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .fields import RecipeError


def shipped_recipe_names() -> list[str]:
    folder = resources.files("hf_pretrain") / "recipes"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def resolve_recipe_path(name_or_path: str) -> Path:
    """A YAML path, or the name of a recipe shipped inside the package (`mlm-small`)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = resources.files("hf_pretrain") / "recipes" / f"{path.stem if path.suffix else name_or_path}.yaml"
    if shipped.is_file():
        return Path(str(shipped))
    names = shipped_recipe_names()
    hint = difflib.get_close_matches(path.stem, names, n=1)
    raise RecipeError(
        f"recipe {name_or_path!r} is neither a file nor a shipped recipe"
        + (f"; did you mean {hint[0]!r}?" if hint else "")
        + f" Shipped recipes: {', '.join(names)}."
    )


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=3e-4` -> (["train", "lr"], 0.0003). Values are read as YAML scalars/lists."""
    if "=" not in text:
        raise RecipeError(f"override {text!r} is not of the form key=value (e.g. train.lr=3e-4).")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise RecipeError(f"override {text!r} has an empty key; write it as section.key=value.")
    return key.split("."), yaml.safe_load(raw) if raw.strip() else None


def apply_override(data: dict, keys: list[str], value: Any) -> None:
    """Set one dotted key. A mapping given for a section the recipe already has is merged into it, so
    `lora={}` turns an optional section on without dropping the settings a recipe file gives it."""
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise RecipeError(f"override {'.'.join(keys)}: {key!r} is a value, not a section.")
        node = child
    current = node.get(keys[-1])
    node[keys[-1]] = {**current, **value} if isinstance(current, dict) and isinstance(value, dict) else value


# The key that marks each kind of recipe, and what the kind is called in messages.
RECIPE_KINDS = {"pretrain": ("objective", "pretraining"), "finetune": ("task", "fine-tuning")}


def recipe_kind(name_or_path: str) -> str:
    """"pretrain" or "finetune": which command runs the recipe (by the key that marks its kind)."""
    data = read_yaml(resolve_recipe_path(name_or_path))
    return next((command for command, (key, _) in RECIPE_KINDS.items() if key in data), "pretrain")


def read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise RecipeError(f"recipe {path} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {path} must be a mapping of sections, got {type(data).__name__}.")
    return data


def read_recipe_data(name_or_path: str, overrides=(), command: str = "pretrain") -> dict:
    """The mapping a YAML recipe (a path or a shipped name) holds, with `key=value` overrides applied: what both
    kinds of recipe are built from. A recipe of the other kind is refused, naming the command that runs it."""
    data = read_yaml(resolve_recipe_path(name_or_path))
    own_key = RECIPE_KINDS[command][0]
    for other, (key, kind) in RECIPE_KINDS.items():
        if other != command and key in data and own_key not in data:
            raise RecipeError(f"recipe {name_or_path!r} is a {kind} recipe (it has '{key}:'); run it with "
                              f"`hf-pretrain {other} {name_or_path}`.")
    for override in overrides:
        apply_override(data, *parse_override(override))
    return data
