"""Recipes: YAML files mapped onto typed dataclasses, with `key=value` overrides and validation up front.

Modules: `fields` (how a key is declared, documented and checked), one module per group of sections (`model`,
`data`, `corruption`, `train`), `loading` (paths, shipped names, overrides), `pretraining` (the `Recipe` and its
cross-key rules, which read the objective registry), `resume` (what a resumed run may change). Fine-tuning
recipes (hf_pretrain/finetune/recipe.py) are built from the same pieces.
"""

from .corruption import FeaturesSection, MaskingSection, NoiseSection, ReplacedTokenDetectionSection
from .data import DataSection
from .fields import RecipeError, annotated_yaml, documented_keys
from .loading import read_recipe_data, recipe_kind, shipped_recipe_names
from .model import ModelSection, TokenizerSection
from .pretraining import Recipe, load_recipe, recipe_from_dict
from .train import OutputSection, TrainSection, resolve_precision

__all__ = [
    "Recipe", "RecipeError", "load_recipe", "recipe_from_dict", "read_recipe_data", "recipe_kind",
    "shipped_recipe_names", "annotated_yaml", "documented_keys", "resolve_precision", "ModelSection",
    "TokenizerSection", "DataSection", "MaskingSection", "ReplacedTokenDetectionSection", "NoiseSection",
    "FeaturesSection", "TrainSection", "OutputSection",
]
