"""The causal LM (objective `clm`): next-token prediction on packed blocks."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ...data.collation import IGNORE_INDEX
from ...models import PretrainDecoderConfig
from ...recipe import Recipe
from .base import PackedTextObjective, predicted_token_sums
from .continued import load_transformers_checkpoint, transformers_flops

logger = logging.getLogger(__name__)


class CausalLMObjective(PackedTextObjective):
    """Packed blocks of the corpus, next-token prediction; our decoder family (per-document positions and
    attention, so no document sees another) or a transformers causal LM continued from `model.init_from` (rows of
    concatenated documents with its own positions, as run_clm.py makes them). Eval: loss, perplexity, next-token
    accuracy on the held-out blocks."""

    config_class = PretrainDecoderConfig

    def __init__(self, recipe: Recipe, accelerator, run_dir: Path):
        from ...data.collation import CausalLMCollator

        super().__init__(recipe, accelerator, run_dir)
        self.build_packed_datasets(accelerator, with_word_starts=False)
        self.model = self.build_model()
        self.own_family = self.model.config.model_type == "hf_pretrain_decoder"
        self.apply_embedding_init(self.training_documents)
        if self.own_family:
            logger.info("packing: per-document positions and attention within each document (hf_pretrain decoder)")
        else:
            logger.info(f"packing: {type(self.model).__name__}: rows of concatenated documents as run_clm.py makes "
                        "them (the model's own positions, attention across the documents of a row)")
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        self.train_collator = CausalLMCollator(pad, with_position_ids=self.own_family)
        self.eval_collator = self.train_collator  # no noise: eval batches are the same at every eval

    def build_model(self):
        from transformers import AutoModelForCausalLM

        from ...models import PretrainDecoderForCausalLM

        if self.recipe.model.init_from:
            return load_transformers_checkpoint(AutoModelForCausalLM, self.recipe, self.tokenizer)
        return self.new_model(
            PretrainDecoderForCausalLM, bos_token_id=self.tokenizer.bos_token_id, eos_token_id=self.tokenizer.eos_token_id
        )

    def eval_sums(self, model, batch: dict) -> dict[str, torch.Tensor]:
        logits = model(**batch).logits[:, :-1]  # (B, L-1, V): position t predicts token t + 1
        targets = batch["labels"][:, 1:]  # (B, L-1)
        valid = targets != IGNORE_INDEX
        return predicted_token_sums(logits[valid], targets[valid])

    def step_flops(self, micro_batches: list[dict]) -> float:
        tokens = sum(self.count_tokens(b) for b in micro_batches)
        length = self.recipe.data.block_size
        if self.own_family:
            return self.model.training_flops(tokens, length)
        return transformers_flops(self.model, tokens, tokens, length)
