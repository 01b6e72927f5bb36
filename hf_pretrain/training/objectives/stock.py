"""Transformers models in our loop: a checkpoint continued here (vocabulary grown to the tokenizer's, added domain
words' rows initialized) or a stock architecture trained from scratch (`model.architecture`, its config from
`model.config` and the tokenizer); how their rows are packed, a masked LM's head on the masked positions only, and
their FLOPs. Our own families do each of these in their model classes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch.nn import functional as F

from ...data.collation import IGNORE_INDEX
from ...data.pipeline import DOMAIN_WORDS_FILE
from ...architectures import stock_architecture
from ...recipe import Recipe, RecipeError
from .base import own_family_keys, stock_config_class, vocab_rows

logger = logging.getLogger(__name__)


def init_domain_rows(model, tokenizer_dir: Path) -> None:
    """Start each added word's embedding row (and its output row and bias, where untied) as the mean of the rows
    of the pieces it used to be split into: the model's reading of the word before the vocabulary grew."""
    records = json.loads((tokenizer_dir / DOMAIN_WORDS_FILE).read_text())
    matrices = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and output.weight is not matrices[0]:
        matrices.append(output.weight)
    if output is not None and getattr(output, "bias", None) is not None:
        matrices.append(output.bias)
    with torch.no_grad():
        for matrix in matrices:
            for record in records:
                matrix[record["id"]] = matrix[record["pieces"]].mean(dim=0)


def packing_plan(model) -> tuple[bool, str]:
    """(per-document positions and attention, what the run log says) for a masked LM about to train on packed rows.

    Our family takes per-document `position_ids` and keeps attention inside each document. A transformers family
    continued here gets the rows as run_mlm.py's `group_texts` makes them: no `position_ids`, so its forward makes
    its own positions exactly as in its pretraining (RoBERTa and XLM-R start theirs at padding_idx + 1; given ids
    would be used as they are, shifted by two) and attention spans the whole row. Measured per family by
    tests/training/test_continue_families.py: our loss on a one-document block equals the model's own."""
    from ...models import PretrainEncoderForMaskedLM

    if isinstance(model, PretrainEncoderForMaskedLM):
        within = " and attention within each document" if model.config.attention_within_documents else ""
        return True, f"per-document positions{within} (hf_pretrain encoder)"
    return False, (
        f"{type(model).__name__}: rows of concatenated documents as run_mlm.py makes them (the model's own "
        "positions, attention across the documents of a row)"
    )


class MaskedPositionsHead:
    """Runs a transformers masked LM's prediction head on the masked positions only.

    A transformers masked LM projects every position onto the vocabulary, although the loss reads ~15% of them;
    at a small width that projection is the largest matmul of the step. Every family continued here (BERT,
    RoBERTa, XLM-R, DistilBERT, DeBERTa-v2, ModernBERT) computes `head(base_model(...)[0])`, so a forward hook on
    the base model keeps only the rows of the masked positions: the head then returns (1, N, V) logits and its
    FLOPs fall by the masking rate. The loss is the one the model computes (cross-entropy in fp32, summed, over
    the step's masked tokens); tests/training/test_continue_families.py checks it equals the model's own loss
    for each family. Our own family has sparse prediction built in and does not need this.
    """

    def __init__(self, model):
        self.selected: torch.Tensor | None = None  # (B, L) bool while a forward through `logits` runs
        # Registered once: a hook added and removed per call would make torch.compile retrace every step.
        model.base_model.register_forward_hook(self.keep_selected_rows)

    def keep_selected_rows(self, module, args, output):
        if self.selected is None:  # any other call (a user's fill-mask, a saved model) sees the model unchanged
            return output
        if isinstance(output, tuple):
            return (output[0][self.selected].unsqueeze(0), *output[1:])
        output.last_hidden_state = output.last_hidden_state[self.selected].unsqueeze(0)  # (1, N, C)
        return output

    def logits_and_targets(self, model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, V) logits of the masked positions and their (N,) target ids, in the order of labels[labels != IGNORE_INDEX]."""
        labels = batch["labels"]
        self.selected = labels != IGNORE_INDEX
        try:
            logits = model(**{key: value for key, value in batch.items() if key != "labels"}).logits
        finally:
            self.selected = None
        return logits.reshape(-1, logits.shape[-1]), labels[labels != IGNORE_INDEX]

    def loss(self, model, batch: dict, items_in_step: torch.Tensor) -> torch.Tensor:
        logits, targets = self.logits_and_targets(model, batch)
        return F.cross_entropy(logits.float(), targets, reduction="sum") / items_in_step.to(logits.device)


def transformers_flops(model, tokens: int, predicted: int, sequence_length: int) -> float:
    """Useful FLOPs of a transformers model continued here: 6 per linear weight per token (the body's on every
    token, the head's on the `predicted` ones), attention over the packed row (configs without
    `num_hidden_layers`/`hidden_size` leave attention uncounted)."""
    from ...models.layers import attention_flops, linear_weight_count

    body = linear_weight_count(model.base_model)
    head = linear_weight_count(model, exclude=(model.base_model,))  # everything outside the body: the LM head
    config = model.config
    layers, width = getattr(config, "num_hidden_layers", 0), getattr(config, "hidden_size", 0)
    return float(6 * body * tokens + 6 * head * predicted + attention_flops(layers, sequence_length, width, tokens))


def load_transformers_checkpoint(auto_class, recipe: Recipe, tokenizer):
    """model.init_from through a transformers Auto class, with the recipe's attention implementation where the
    family has it, and the vocabulary grown to the tokenizer's where needed."""
    try:
        model = auto_class.from_pretrained(recipe.model.init_from, attn_implementation=recipe.model.attn_implementation)
    except ValueError as error:  # e.g. DeBERTa-v2 has no SDPA path: use the family's own default
        if "attention implementation" not in str(error) and "attn_implementation" not in str(error):
            raise
        model = auto_class.from_pretrained(recipe.model.init_from)
        logger.info(
            f"model.attn_implementation={recipe.model.attn_implementation!r} is not available for "
            f"{type(model).__name__}; using its default ({model.config._attn_implementation!r})"
        )
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        model.resize_token_embeddings(vocab_rows(tokenizer))
    return model


# ------------------------------------------------------------------------------------------------ from scratch
def stock_config(recipe: Recipe, tokenizer, **fixed):
    """The stock architecture's config: model.config, with the vocabulary and the special tokens' ids from the
    tokenizer and a position table that holds a block (RoBERTa's starts after the padding id)."""
    architecture = stock_architecture(recipe.model.architecture)
    config_class = stock_config_class(architecture)
    left_out = own_family_keys(recipe)
    if left_out:
        logger.warning(
            f"model.architecture={architecture.name!r}: {', '.join(f'model.config.{k}' for k in left_out)} "
            f"configure{'s' if len(left_out) == 1 else ''} hf_pretrain's own family, not {config_class.__name__}; "
            "left out")
    settings = {**architecture.config_defaults,
                **{key: value for key, value in recipe.model.config.items() if key not in left_out}}
    needed = recipe.data.block_size + (tokenizer.pad_token_id + 1 if architecture.positions_after_padding else 0)
    default = getattr(config_class(), "max_position_embeddings", None)  # GPT-2 names it n_positions
    if default is not None:
        settings.setdefault("max_position_embeddings", max(default, needed))
        if settings["max_position_embeddings"] < needed:
            raise RecipeError(
                f"model.config.max_position_embeddings={settings['max_position_embeddings']} is too small for "
                f"data.block_size={recipe.data.block_size} with model.architecture={architecture.name!r}: it needs "
                f">= {needed}."
            )
    settings.update(vocab_size=vocab_rows(tokenizer), **fixed)
    for field_name, role in architecture.token_ids.items():
        settings[field_name] = tokenizer.convert_tokens_to_ids(getattr(tokenizer, role))
    try:
        return config_class(**settings)
    except (ValueError, TypeError) as error:
        raise RecipeError(f"model.config ({config_class.__name__}): {error}") from None


def new_stock_model(auto_class, config, recipe: Recipe, **options):
    """A freshly initialized stock model, seeded by train.seed (the same weights on every rank), with the recipe's
    attention implementation where the family has it."""
    torch.manual_seed(recipe.train.seed)
    try:
        return auto_class.from_config(config, attn_implementation=recipe.model.attn_implementation, **options)
    except ValueError as error:  # a family without that implementation: its own default
        if "attention implementation" not in str(error) and "attn_implementation" not in str(error):
            raise
        torch.manual_seed(recipe.train.seed)
        model = auto_class.from_config(config, **options)
        logger.info(f"model.attn_implementation={recipe.model.attn_implementation!r} is not available for "
                    f"{type(model).__name__}; using its default ({model.config._attn_implementation!r})")
        return model
