"""Objectives: what the one training loop needs to know about a pretraining objective, one module per family of
objectives (`masked`: mlm, rtd; `causal`: clm; `denoising`: dae; `features`: dae-features), the contract and the
text objectives' common ground in `base`, and continuing transformers checkpoints in `continued`. The registry
(hf_pretrain/objectives.py) names the class of each objective."""

from .base import Objective, PackedTextObjective, TextObjective, build_objective, model_config_from_recipe, vocab_rows

__all__ = ["Objective", "TextObjective", "PackedTextObjective", "build_objective", "model_config_from_recipe",
           "vocab_rows"]
