"""The masked-text objectives: the masked LM (objective `mlm`) and replaced-token detection (`rtd`, ELECTRA), both
on packed blocks masked by the recipe's `masking` section."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from ...architectures import stock_architecture
from ...data.collation import IGNORE_INDEX
from ...models import PretrainEncoderConfig
from ...recipe import Recipe
from .base import PackedTextObjective, model_config_from_recipe, predicted_token_sums, vocab_rows
from .stock import (
    MaskedPositionsHead,
    init_domain_rows,
    load_transformers_checkpoint,
    new_stock_model,
    packing_plan,
    stock_config,
    transformers_flops,
)

logger = logging.getLogger(__name__)


class MaskedTextObjective(PackedTextObjective):
    """Packed blocks masked by the recipe's `masking` section, for an encoder: what the masked LM and replaced-token
    detection share."""

    config_class = PretrainEncoderConfig

    def __init__(self, recipe: Recipe, accelerator, run_dir: Path):
        super().__init__(recipe, accelerator, run_dir)
        self.build_packed_datasets(accelerator, with_word_starts=recipe.masking.whole_word or recipe.masking.span)

    def build_collators(self, collator_class, with_position_ids: bool) -> None:
        """Training and eval collators of `collator_class` (a MaskingCollator) with the recipe's masking."""
        masking = self.recipe.masking
        settings = dict(
            mlm_probability=masking.mlm_probability,
            mask_replace_prob=masking.mask_replace_prob,
            random_replace_prob=masking.random_replace_prob,
            whole_word=masking.whole_word,
            span=masking.span,
            with_position_ids=with_position_ids,
        )
        self.train_collator = collator_class(self.tokenizer, seed=self.recipe.train.seed, **settings)
        self.eval_collator = collator_class(self.tokenizer, seed=self.eval_seed, **settings)


class MaskedLMObjective(MaskedTextObjective):
    """Packed blocks of the corpus, MLM masking; our encoder family (sparse prediction built in), or a transformers
    masked LM continued from `model.init_from` or of a stock architecture (`model.architecture`) trained from
    scratch, its head on the masked positions through `MaskedPositionsHead`."""

    def __init__(self, recipe: Recipe, accelerator, run_dir: Path):
        from ...data.masking import MaskingCollator

        super().__init__(recipe, accelerator, run_dir)
        self.model = self.build_model()
        self.own_family = self.model.config.model_type == "hf_pretrain_encoder"
        self.masked_positions_head = None if self.own_family else MaskedPositionsHead(self.model)
        self.apply_embedding_init(self.training_documents)
        per_document, description = packing_plan(self.model)
        logger.info(f"packing: {description}")
        self.build_collators(MaskingCollator, with_position_ids=per_document)

    def build_model(self):
        from ...models import PretrainEncoderForMaskedLM

        if self.recipe.model.init_from:
            return self.load_checkpoint()
        if stock_architecture(self.recipe.model.architecture):
            from transformers import AutoModelForMaskedLM

            return new_stock_model(AutoModelForMaskedLM, stock_config(self.recipe, self.tokenizer), self.recipe)
        return self.new_model(PretrainEncoderForMaskedLM)

    def load_checkpoint(self):
        """Continued pretraining: any `AutoModelForMaskedLM` checkpoint, its vocabulary grown to the tokenizer's
        (and the added domain words' rows initialized) where needed."""
        from transformers import AutoModelForMaskedLM

        model = load_transformers_checkpoint(AutoModelForMaskedLM, self.recipe, self.tokenizer)
        if self.recipe.tokenizer.add_tokens:  # a resumed run loads its checkpoint's rows over these
            init_domain_rows(model, self.run_dir / "tokenizer")
        return model

    def loss(self, model, batch: dict, items_in_step: torch.Tensor) -> torch.Tensor:
        if self.own_family:
            return super().loss(model, batch, items_in_step)
        return self.masked_positions_head.loss(model, batch, items_in_step)

    def eval_sums(self, model, batch: dict) -> dict[str, torch.Tensor]:
        labels = batch["labels"]
        if not self.own_family:
            return predicted_token_sums(*self.masked_positions_head.logits_and_targets(model, batch))
        logits = model(**batch).logits  # (B, L, V): our family predicts densely in eval mode
        return predicted_token_sums(logits[labels != IGNORE_INDEX], labels[labels != IGNORE_INDEX])

    def step_flops(self, micro_batches: list[dict]) -> float:
        tokens = sum(self.count_tokens(b) for b in micro_batches)
        predicted = sum(int(self.count_items(b)) for b in micro_batches)
        length = self.recipe.data.block_size
        if self.own_family:
            return self.model.training_flops(tokens, predicted, length)
        return transformers_flops(self.model, tokens, predicted, length)


class ReplacedTokenDetectionObjective(MaskedTextObjective):
    """Packed blocks of the corpus, masked as for the masked LM; a small generator fills the masked positions with
    its samples and the discriminator (the model of `model.config`) learns at every position whether the token was
    replaced (ELECTRA; hf_pretrain/models/replaced_token_detection.py). loss = generator MLM loss (mean over the
    step's masked tokens) + rtd.detection_weight x detection loss (mean over the step's tokens). Our encoder family
    for both, or a stock architecture (`model.architecture`): ElectraForPreTraining with an ElectraForMaskedLM
    generator that shares its embeddings, or a masked LM and a one-logit token classifier of bert, roberta or
    modernbert (each with its own embeddings, as their widths differ)."""

    def __init__(self, recipe: Recipe, accelerator, run_dir: Path):
        from ...data.masking import ReplacedTokenCollator
        from ...models.replaced_token_detection import ReplacedTokenDetectionPretrainer, generator_config

        super().__init__(recipe, accelerator, run_dir)
        settings = recipe.rtd
        self.own_family = stock_architecture(recipe.model.architecture) is None
        if self.own_family:
            torch.manual_seed(recipe.train.seed)
            discriminator = model_config_from_recipe(
                self.config_class, recipe, vocab_size=vocab_rows(self.tokenizer),
                pad_token_id=self.tokenizer.pad_token_id,
            )
            generator = generator_config(discriminator, settings.generator_width, settings.generator_layers)
            self.model = ReplacedTokenDetectionPretrainer(discriminator, generator, settings.sampling_temperature)
        else:
            self.model = self.stock_pair()
        generator, discriminator = self.model.generator.config, self.model.discriminator.config
        shared = self.model.generator.get_input_embeddings() is self.model.discriminator.get_input_embeddings()
        logger.info(
            f"replaced-token detection: generator {generator.hidden_size} wide x {generator.num_hidden_layers} "
            f"blocks ({self.model.generator.num_parameters():,} parameters"
            f"{' with the shared embeddings' if shared else ''}), discriminator {discriminator.hidden_size} wide x "
            f"{discriminator.num_hidden_layers} blocks ({self.model.discriminator.num_parameters():,})"
        )
        self.apply_embedding_init(self.training_documents)
        # Our family: per-document positions and attention; a stock one: rows of concatenated documents.
        self.build_collators(ReplacedTokenCollator, with_position_ids=self.own_family)

    def stock_pair(self):
        """The stock architecture's discriminator (a one-logit token head) and its narrower masked-LM generator."""
        from transformers import AutoModelForMaskedLM, AutoModelForPreTraining, AutoModelForTokenClassification

        from ...models.replaced_token_detection import ReplacedTokenDetectionPretrainer, generator_size

        recipe, settings = self.recipe, self.recipe.rtd
        config = stock_config(recipe, self.tokenizer)
        if config.model_type == "electra":  # ELECTRA's own discriminator head
            discriminator = new_stock_model(AutoModelForPreTraining, config, recipe)
        else:
            config.num_labels = 1
            discriminator = new_stock_model(AutoModelForTokenClassification, config, recipe)
        hidden, heads, intermediate = generator_size(config.hidden_size, config.num_attention_heads,
                                                     config.intermediate_size, settings.generator_width)
        generator = type(config).from_dict({
            **config.to_dict(), "hidden_size": hidden, "num_attention_heads": heads, "intermediate_size": intermediate,
            "num_hidden_layers": settings.generator_layers or config.num_hidden_layers, "num_labels": 2,
        })
        generator = new_stock_model(AutoModelForMaskedLM, generator, recipe)
        return ReplacedTokenDetectionPretrainer.from_parts(generator, discriminator, settings.sampling_temperature)

    def count_items(self, batch: dict) -> torch.Tensor:
        """(2,): masked tokens (the generator's loss averages over them) and scored tokens (the detector's)."""
        masked = (batch["labels"] != IGNORE_INDEX).sum()
        mask = batch.get("attention_mask")
        scored = mask.sum() if mask is not None else torch.tensor(batch["input_ids"].numel(), device=masked.device)
        return torch.stack([masked, scored.to(masked.dtype)])

    def loss(self, model, batch: dict, items_in_step: torch.Tensor) -> torch.Tensor:
        sums = model(**batch)
        items_in_step = items_in_step.to(sums.generator_loss_sum.device)
        generator_loss = sums.generator_loss_sum / items_in_step[0]
        return generator_loss + self.recipe.rtd.detection_weight * sums.detection_loss_sum / items_in_step[1]

    def eval_sums(self, model, batch: dict) -> dict[str, torch.Tensor]:
        sums = model(**batch)
        return {name: value.detach() for name, value in sums.items()}

    def eval_metrics(self, totals: dict) -> dict:
        masked, scored = max(totals.get("masked", 0), 1), max(totals.get("scored", 0), 1)
        generator_loss = totals.get("generator_loss_sum", math.nan) / masked
        detection_loss = totals.get("detection_loss_sum", math.nan) / scored
        return {
            "loss": generator_loss + self.recipe.rtd.detection_weight * detection_loss,
            "generator_loss": generator_loss,
            "generator_accuracy": totals.get("generator_correct", 0) / masked,
            "detection_loss": detection_loss,
            "detection_accuracy": totals.get("detection_correct", 0) / scored,
            "replaced_share": totals.get("replaced", 0) / scored,
        }

    def step_flops(self, micro_batches: list[dict]) -> float:
        tokens = sum(self.count_tokens(b) for b in micro_batches)
        masked = sum(int(self.count_items(b)[0]) for b in micro_batches)
        length = self.recipe.data.block_size
        if self.own_family:
            return self.model.training_flops(tokens, masked, length)
        # A stock generator predicts every position (its masked rows are taken afterwards).
        return (transformers_flops(self.model.generator, tokens, tokens, length)
                + transformers_flops(self.model.discriminator, tokens, tokens, length))

    def final_folders(self, model, weights: dict | None) -> list[tuple[str, object, dict | None]]:
        """`final`: the discriminator (what fine-tuning, embed and export read); `generator`: the fill-mask model."""
        folders = []
        for name, part, prefix in (("final", model.discriminator, "discriminator."),
                                   ("generator", model.generator, "generator.")):
            part_weights = None if weights is None else {
                key[len(prefix):]: value for key, value in weights.items() if key.startswith(prefix)
            }
            folders.append((name, part, part_weights))
        return folders
