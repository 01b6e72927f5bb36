"""Which recipe changes a resumed run may take: a longer budget or another cadence, yes; anything that changes what
a step computes, no (the run would silently be a mix of two recipes)."""

from __future__ import annotations

from .fields import RecipeError
from .pretraining import recipe_from_dict

# Keys a rerun may change when it resumes: how long to train, how often to evaluate, save and log, and where.
# Everything else decides what a step computes (data, tokenizer, model, noise, optimizer). A changed budget refits
# the lr schedule from there on.
SAFE_TO_CHANGE_ON_RESUME = frozenset({
    "train.max_steps", "train.max_tokens", "train.max_minutes", "train.eval_every", "train.eval_batches",
    "train.save_every", "train.keep_last", "train.max_bad_steps", "train.peak_tflops",
    "train.log_every", "output.dir", "output.log_with", "output.progress_bar",
})


def flat_items(data: dict, prefix: str = "") -> dict:
    """{"train": {"lr": 1e-3}} -> {"train.lr": 1e-3}; values other than mappings are kept as they are."""
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(flat_items(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def resume_changes(trained_with: dict, requested) -> tuple[list[str], list[str]]:
    """(allowed, refused): `key: old -> new` for every key whose value differs between the recipe a checkpoint was
    trained with (a dict read from its recipe.yaml) and the one a rerun asks for (a Recipe)."""
    try:  # through the dataclasses, so defaults and types compare alike; a stored key since removed compares raw
        old = flat_items(recipe_from_dict(trained_with).to_dict())
    except RecipeError:
        old = flat_items(trained_with)
    new = flat_items(requested.to_dict())
    allowed, refused = [], []
    for key in sorted(old.keys() | new.keys()):
        if old.get(key) != new.get(key):
            line = f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
            (allowed if key in SAFE_TO_CHANGE_ON_RESUME else refused).append(line)
    return allowed, refused
