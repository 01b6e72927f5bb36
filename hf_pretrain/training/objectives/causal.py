"""The causal LM (objective `clm`): next-token prediction on packed blocks."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ...architectures import stock_architecture
from ...data.collation import IGNORE_INDEX
from ...models import PretrainDecoderConfig
from ...recipe import Recipe
from .base import PackedTextObjective, predicted_token_sums
from .stock import load_transformers_checkpoint, new_stock_model, stock_config, transformers_flops

logger = logging.getLogger(__name__)


class CausalLMObjective(PackedTextObjective):
    """Packed blocks of the corpus, next-token prediction; our decoder family (per-document positions and
    attention, so no document sees another), a stock architecture trained from scratch (`model.architecture`:
    Llama and GPT-2 take per-document `position_ids` too, and with no cache attend within each document), or a
    transformers causal LM continued from `model.init_from` (rows of concatenated documents with its own
    positions, as run_clm.py makes them). Eval: loss, perplexity, next-token accuracy on the held-out blocks."""

    config_class = PretrainDecoderConfig

    def __init__(self, recipe: Recipe, accelerator, run_dir: Path):
        from ...data.collation import CausalLMCollator

        super().__init__(recipe, accelerator, run_dir)
        self.build_packed_datasets(accelerator, with_word_starts=False)
        self.model = self.build_model()
        self.own_family = self.model.config.model_type == "hf_pretrain_decoder"
        stock = stock_architecture(recipe.model.architecture) if not recipe.model.init_from else None
        per_document = self.own_family or bool(stock and stock.per_document)
        # A transformers decoder finds the documents of a packed row from its position ids only without a cache.
        self.forward_options = {} if self.own_family or not per_document else {"use_cache": False}
        self.apply_embedding_init(self.training_documents)
        if per_document:
            logger.info(f"packing: per-document positions and attention within each document "
                        f"({'hf_pretrain decoder' if self.own_family else type(self.model).__name__})")
        else:
            logger.info(f"packing: {type(self.model).__name__}: rows of concatenated documents as run_clm.py makes "
                        "them (the model's own positions, attention across the documents of a row)")
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        self.train_collator = CausalLMCollator(pad, with_position_ids=per_document)
        self.eval_collator = self.train_collator  # no noise: eval batches are the same at every eval

    def build_model(self):
        from transformers import AutoModelForCausalLM

        from ...models import PretrainDecoderForCausalLM

        if self.recipe.model.init_from:
            return load_transformers_checkpoint(AutoModelForCausalLM, self.recipe, self.tokenizer)
        if stock_architecture(self.recipe.model.architecture):
            return new_stock_model(AutoModelForCausalLM, stock_config(self.recipe, self.tokenizer), self.recipe)
        return self.new_model(
            PretrainDecoderForCausalLM, bos_token_id=self.tokenizer.bos_token_id, eos_token_id=self.tokenizer.eos_token_id
        )

    def loss(self, model, batch: dict, items_in_step: torch.Tensor) -> torch.Tensor:
        return model(**batch, **self.forward_options, num_items_in_batch=items_in_step).loss

    def eval_sums(self, model, batch: dict) -> dict[str, torch.Tensor]:
        logits = model(**batch, **self.forward_options).logits[:, :-1]  # (B, L-1, V): position t predicts token t + 1
        targets = batch["labels"][:, 1:]  # (B, L-1)
        valid = targets != IGNORE_INDEX
        return predicted_token_sums(logits[valid], targets[valid])

    def step_flops(self, micro_batches: list[dict]) -> float:
        tokens = sum(self.count_tokens(b) for b in micro_batches)
        length = self.recipe.data.block_size
        if self.own_family:
            return self.model.training_flops(tokens, length)
        return transformers_flops(self.model, tokens, tokens, length)
