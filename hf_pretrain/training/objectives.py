"""Objectives: what the one training loop needs to know about a pretraining objective.

`Objective` declares every member the loop calls, once, with its shapes; the loop never looks for optional
members. An objective builds, in its constructor and before any training compute, the tokenizer, the datasets,
the model and the collators; it counts a batch's tokens and predicted items, computes the loss of a micro-batch,
the eval sums and a step's FLOPs. `TextObjective` holds what the text objectives share. Adding an objective means
one new class here and one line in `OBJECTIVES`.
"""

from __future__ import annotations

import abc
import dataclasses
import difflib
import json
import math
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch.nn import functional as F

from ..data.collation import IGNORE_INDEX
from ..data.pipeline import (
    DOMAIN_WORDS_FILE,
    StreamedBlocks,
    first_blocks,
    load_text_splits,
    prepare_splits,
    prepare_tokenizer,
)
from ..recipe import Recipe, RecipeError

# Eval batches are corrupted with their own noise stream, drawn once (epoch 0) and never changed, so eval losses of
# different steps compare. Any fixed offset would do; a prime keeps seed s's eval stream from being seed s+1's
# training stream for small seeds.
EVAL_SEED_OFFSET = 7919


# ----------------------------------------------------------------------------------------------- the contract
class Objective(abc.ABC):
    """What the loop reads from an objective. Built by `__init__(recipe, accelerator, run_dir, announce)`.

    Attributes set by the constructor:
      tokenizer          a PreTrainedTokenizerBase, or None (the feature autoencoder reads vectors)
      model              the model to train (a PreTrainedModel; the loop wraps it with Accelerate)
      train_dataset      map-style dataset, or an IterableDataset for a streamed corpus (read in order)
      eval_dataset       map-style dataset of the held-out split
      train_collator     list of examples -> batch dict of tensors; has `set_epoch(epoch)`
      eval_collator      the same for eval batches; fixed noise
      train_batch_sampler  None (the loop batches `train.batch_size` rows, shuffled) or a batch sampler with
                         `set_epoch(epoch)`, e.g. length-bucketed batches of variable-length documents
    """

    name: ClassVar[str]
    config_class: type  # the family config a new model is built from (model.config holds its fields)
    tokenizer = None
    train_batch_sampler = None

    def __init__(self, recipe: Recipe, accelerator, run_dir: Path, announce=print):
        self.recipe = recipe
        self.run_dir = run_dir
        self.announce = announce
        if recipe.model.init_from is None:
            model_config_from_recipe(self.config_class, recipe)  # fail on a bad model config before any work

    def new_model(self, model_class, **config_fields):
        """A randomly initialized model of the family, seeded by train.seed (the same weights on every rank);
        `config_fields` are set from the data and override nothing the recipe may set."""
        torch.manual_seed(self.recipe.train.seed)
        return model_class(model_config_from_recipe(self.config_class, self.recipe, **config_fields))

    @property
    def eval_seed(self) -> int:
        return self.recipe.train.seed + EVAL_SEED_OFFSET

    def set_epoch(self, epoch: int) -> None:
        """Called when an epoch starts (also on resume): noise and batch order are functions of the epoch."""
        self.train_collator.set_epoch(epoch)
        if self.train_batch_sampler is not None:
            self.train_batch_sampler.set_epoch(epoch)

    @abc.abstractmethod
    def count_items(self, batch: dict) -> torch.Tensor:
        """Scalar tensor: the predicted items of a batch the loss averages over (masked tokens, target tokens,
        reconstructed values); or a 1-D tensor, one count per term of a loss whose terms average over different
        items. The loop sums it over a step's micro-batches and ranks and hands the sum to `loss`."""

    @abc.abstractmethod
    def count_tokens(self, batch: dict) -> int:
        """Input tokens of a batch that count toward `train.max_tokens` and tokens/s (padding excluded)."""

    def loss(self, model, batch: dict, items_in_step: torch.Tensor) -> torch.Tensor:
        """Scalar loss of one micro-batch: its summed loss over the whole step's items (`items_in_step`, all
        micro-batches and ranks), so that accumulation and data parallelism give the gradient of one big batch.
        transformers models do this themselves when given `num_items_in_batch`."""
        return model(**batch, num_items_in_batch=items_in_step).loss

    @abc.abstractmethod
    def eval_sums(self, model, batch: dict) -> dict[str, torch.Tensor]:
        """Sums over one eval batch (e.g. summed loss, correct predictions, item count); the loop adds them over
        batches and ranks and hands the totals to `eval_metrics`. No logits are kept across batches."""

    @abc.abstractmethod
    def eval_metrics(self, totals: dict[str, float]) -> dict[str, float]:
        """Eval metrics from the summed totals; always includes `loss`."""

    @staticmethod
    def describe_evals(before: dict, after: dict) -> str | None:
        """The eval line of the CLI's run summary, or None for the default (loss, perplexity, accuracy)."""
        return None

    @abc.abstractmethod
    def step_flops(self, micro_batches: list[dict]) -> float:
        """Useful FLOPs of one optimizer step on this rank (what MFU divides)."""

    def finish_training(self, model) -> None:
        """Runs after the last step, before the last checkpoint and the final folder are written (e.g. corpus
        statistics saved with the model). `model` is the unwrapped model."""

    def final_folders(self, model, weights: dict | None) -> list[tuple[str, object, dict | None]]:
        """The model folders written when training ends, as (folder name in the run folder, model, its weights).
        `weights` is the gathered state of a sharded model (rank 0), None when `model` holds its own weights.
        `final` is the folder finetune, embed and export read."""
        return [("final", model, weights)]


# ----------------------------------------------------------------------------------------------- text objectives
def model_config_from_recipe(config_class, recipe: Recipe, **fixed):
    """The family config from `model.config`, validated with the recipe's key names in the messages."""
    allowed = {f.name for f in dataclasses.fields(config_class)} - {"transformers_version", "architectures"}
    for key in recipe.model.config:
        if key not in allowed:
            hint = difflib.get_close_matches(key, allowed, n=1)
            raise RecipeError(
                f"unknown key 'model.config.{key}'"
                + (f"; did you mean 'model.config.{hint[0]}'?" if hint else "")
                + f" Allowed: {', '.join(sorted(allowed))}."
            )
    settings = {**recipe.model.config, **fixed}
    try:
        return config_class(**settings, attn_implementation=recipe.model.attn_implementation)
    except (ValueError, TypeError) as error:
        raise RecipeError(f"model.config: {error}") from None


def vocab_rows(tokenizer) -> int:
    """Embedding rows: the tokenizer's size rounded up to a multiple of 64 (aligned GEMM tiles)."""
    return int(math.ceil(len(tokenizer) / 64) * 64)


class TextObjective(Objective):
    """Text in, token ids, labels with IGNORE_INDEX where nothing is predicted.

    The constructor reads the text splits and prepares the tokenizer; the subclass then builds its datasets, model
    (`new_model`: vocabulary size and padding id from the tokenizer) and collators.
    """

    tokenizer_objective: ClassVar[str]  # what a tokenizer trained here is for (special tokens, post-processor)

    def __init__(self, recipe: Recipe, accelerator, run_dir: Path, announce=print):
        super().__init__(recipe, accelerator, run_dir, announce)
        self.train_texts, self.eval_texts = load_text_splits(recipe, announce)
        self.tokenizer = prepare_tokenizer(
            recipe, self.train_texts, accelerator, run_dir, self.tokenizer_objective, announce
        )

    def new_model(self, model_class, **config_fields):
        return super().new_model(
            model_class, vocab_size=vocab_rows(self.tokenizer), pad_token_id=self.tokenizer.pad_token_id,
            **config_fields,
        )

    def apply_embedding_init(self, documents) -> None:
        """model.embedding_init=spectral: token embedding rows from the corpus's TF-IDF SVD (data/spectral.py).
        `documents()` returns an iterator over the training documents as token-id arrays (called only when the
        recipe asks for spectral rows, so a random init reads nothing). Every rank computes the same rows (the
        SVD is seeded), so no broadcast is needed."""
        recipe = self.recipe
        if recipe.model.embedding_init != "spectral" or recipe.model.init_from:
            return
        from ..data.spectral import default_ignore_ids, initialize_token_embeddings

        report = initialize_token_embeddings(
            self.model.get_input_embeddings(),
            documents(),
            ignore_ids=default_ignore_ids(self.tokenizer),
            seed=recipe.train.seed,
            max_segments=recipe.model.embedding_init_max_documents,
            eigenvalue_power=recipe.model.embedding_init_power,
        )
        self.announce(report.summary())

    def count_items(self, batch: dict) -> torch.Tensor:
        return (batch["labels"] != IGNORE_INDEX).sum()

    def count_tokens(self, batch: dict) -> int:
        mask = batch.get("attention_mask")
        return int(mask.sum()) if mask is not None else batch["input_ids"].numel()

    def eval_metrics(self, totals: dict) -> dict:
        items = max(totals.get("items", 0), 1)
        loss = totals.get("loss_sum", math.nan) / items
        return {"loss": loss, "perplexity": math.exp(min(loss, 50)), "accuracy": totals.get("correct", 0) / items}


def predicted_token_sums(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Summed cross-entropy, correct predictions and count of (N, V) logits against (N,) target ids."""
    loss_sum = F.cross_entropy(logits.float(), targets, reduction="sum")
    correct = (logits.argmax(-1) == targets).sum()
    return {"loss_sum": loss_sum.detach(), "correct": correct, "items": torch.tensor(targets.numel())}


# ----------------------------------------------------------------------------------------------- masked LM
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
    from ..models import PretrainEncoderForMaskedLM

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
    from ..models.layers import attention_flops, linear_weight_count

    body = linear_weight_count(model.base_model)
    head = linear_weight_count(model, exclude=(model.base_model,))  # everything outside the body: the LM head
    config = model.config
    layers, width = getattr(config, "num_hidden_layers", 0), getattr(config, "hidden_size", 0)
    return float(6 * body * tokens + 6 * head * predicted + attention_flops(layers, sequence_length, width, tokens))


def load_transformers_checkpoint(auto_class, recipe: Recipe, tokenizer, announce):
    """model.init_from through a transformers Auto class, with the recipe's attention implementation where the
    family has it, and the vocabulary grown to the tokenizer's where needed."""
    try:
        model = auto_class.from_pretrained(recipe.model.init_from, attn_implementation=recipe.model.attn_implementation)
    except ValueError as error:  # e.g. DeBERTa-v2 has no SDPA path: use the family's own default
        if "attention implementation" not in str(error) and "attn_implementation" not in str(error):
            raise
        model = auto_class.from_pretrained(recipe.model.init_from)
        announce(
            f"model.attn_implementation={recipe.model.attn_implementation!r} is not available for "
            f"{type(model).__name__}; using its default ({model.config._attn_implementation!r})"
        )
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        model.resize_token_embeddings(vocab_rows(tokenizer))
    return model


class PackedTextObjective(TextObjective):
    """Text packed into fixed-length blocks of concatenated documents (in memory, cached, or streamed)."""

    def build_packed_datasets(self, accelerator, with_word_starts: bool) -> None:
        recipe, block_size = self.recipe, self.recipe.data.block_size
        self.streaming = recipe.data.streaming
        if self.streaming:
            self.train_dataset = StreamedBlocks(self.train_texts, self.tokenizer, block_size, with_word_starts)
            eval_rows = recipe.train.eval_batches * recipe.train.batch_size * accelerator.num_processes
            self.eval_dataset = first_blocks(self.eval_texts, self.tokenizer, block_size, with_word_starts, eval_rows)
        else:
            from ..data.packing import pack_dataset

            self.train_dataset, self.eval_dataset = prepare_splits(
                pack_dataset, self.train_texts, self.eval_texts, self.tokenizer, accelerator, self.announce,
                block_size=block_size, num_proc=recipe.data.num_proc, with_word_starts=with_word_starts,
            )

    def training_documents(self):
        """The training documents as token-id arrays: the pieces of the packed rows. A streamed corpus is packed
        again from its start by the same packer (the consumer stops after embedding_init_max_documents)."""
        from ..data.spectral import segments_of_packed_rows
        from ..data.streaming import pack_stream

        if self.streaming:
            blocks = pack_stream(self.train_texts, self.tokenizer, self.recipe.data.block_size)
            return (
                segment
                for block in blocks
                for segment in segments_of_packed_rows([block["input_ids"]], [block["position_ids"]])
            )
        return (
            segment
            for chunk in self.train_dataset.with_format("numpy").iter(batch_size=1024)
            for segment in segments_of_packed_rows(chunk["input_ids"], chunk["position_ids"])
        )


class MaskedTextObjective(PackedTextObjective):
    """Packed blocks masked by the recipe's `masking` section, for an encoder: what the masked LM and replaced-token
    detection share."""

    tokenizer_objective = "mlm"

    @property
    def config_class(self):
        from ..models import PretrainEncoderConfig

        return PretrainEncoderConfig

    def __init__(self, recipe: Recipe, accelerator, run_dir: Path, announce=print):
        super().__init__(recipe, accelerator, run_dir, announce)
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
    """Packed blocks of the corpus, MLM masking; our encoder family (sparse prediction built in) or a transformers
    masked LM continued from `model.init_from` (its head on the masked positions through `MaskedPositionsHead`)."""

    name = "mlm"

    def __init__(self, recipe: Recipe, accelerator, run_dir: Path, announce=print):
        from ..data.masking import MaskingCollator

        super().__init__(recipe, accelerator, run_dir, announce)
        self.model = self.build_model()
        self.own_family = self.model.config.model_type == "hf_pretrain_encoder"
        self.masked_positions_head = None if self.own_family else MaskedPositionsHead(self.model)
        self.apply_embedding_init(self.training_documents)
        per_document, description = packing_plan(self.model)
        announce(f"packing: {description}")
        self.build_collators(MaskingCollator, with_position_ids=per_document)

    def build_model(self):
        from ..models import PretrainEncoderForMaskedLM

        if self.recipe.model.init_from:
            return self.load_checkpoint()
        return self.new_model(PretrainEncoderForMaskedLM)

    def load_checkpoint(self):
        """Continued pretraining: any `AutoModelForMaskedLM` checkpoint, its vocabulary grown to the tokenizer's
        (and the added domain words' rows initialized) where needed."""
        from transformers import AutoModelForMaskedLM

        model = load_transformers_checkpoint(AutoModelForMaskedLM, self.recipe, self.tokenizer, self.announce)
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


# ----------------------------------------------------------------------------------------------- replaced tokens
class ReplacedTokenDetectionObjective(MaskedTextObjective):
    """Packed blocks of the corpus, masked as for the masked LM; a small generator fills the masked positions with
    its samples and the discriminator (the model of `model.config`) learns at every position whether the token was
    replaced (ELECTRA; hf_pretrain/models/replaced_token_detection.py). loss = generator MLM loss (mean over the
    step's masked tokens) + rtd.detection_weight x detection loss (mean over the step's tokens)."""

    name = "rtd"

    def __init__(self, recipe: Recipe, accelerator, run_dir: Path, announce=print):
        from ..data.masking import ReplacedTokenCollator
        from ..models.replaced_token_detection import ReplacedTokenDetectionPretrainer, generator_config

        super().__init__(recipe, accelerator, run_dir, announce)
        settings = recipe.rtd
        torch.manual_seed(recipe.train.seed)
        discriminator = model_config_from_recipe(
            self.config_class, recipe, vocab_size=vocab_rows(self.tokenizer), pad_token_id=self.tokenizer.pad_token_id
        )
        generator = generator_config(discriminator, settings.generator_width, settings.generator_layers)
        self.model = ReplacedTokenDetectionPretrainer(discriminator, generator, settings.sampling_temperature)
        announce(
            f"replaced-token detection: generator {generator.hidden_size} wide x {generator.num_hidden_layers} "
            f"blocks ({self.model.generator.num_parameters():,} parameters with the shared embeddings), "
            f"discriminator {discriminator.hidden_size} wide x {discriminator.num_hidden_layers} blocks "
            f"({self.model.discriminator.num_parameters():,})"
        )
        self.apply_embedding_init(self.training_documents)
        self.build_collators(ReplacedTokenCollator, with_position_ids=True)  # our family: per-document attention

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

    @staticmethod
    def describe_evals(before: dict, after: dict) -> str | None:
        def line(metrics: dict) -> str:
            return (
                f"detection accuracy {metrics['detection_accuracy']:.1%} on {metrics['replaced_share']:.1%} replaced"
                f" tokens, generator loss {metrics['generator_loss']:.3f}"
            )

        return f"eval: {line(before)} -> {line(after)}"

    def step_flops(self, micro_batches: list[dict]) -> float:
        tokens = sum(self.count_tokens(b) for b in micro_batches)
        masked = sum(int(self.count_items(b)[0]) for b in micro_batches)
        return self.model.training_flops(tokens, masked, self.recipe.data.block_size)

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


# ----------------------------------------------------------------------------------------------- causal LM
class CausalLMObjective(PackedTextObjective):
    """Packed blocks of the corpus, next-token prediction; our decoder family (per-document positions and
    attention, so no document sees another) or a transformers causal LM continued from `model.init_from` (rows of
    concatenated documents with its own positions, as run_clm.py makes them). Eval: loss, perplexity, next-token
    accuracy on the held-out blocks."""

    name = "clm"
    tokenizer_objective = "clm"

    @property
    def config_class(self):
        from ..models import PretrainDecoderConfig

        return PretrainDecoderConfig

    def __init__(self, recipe: Recipe, accelerator, run_dir: Path, announce=print):
        from ..data.collation import CausalLMCollator

        super().__init__(recipe, accelerator, run_dir, announce)
        self.build_packed_datasets(accelerator, with_word_starts=False)
        self.model = self.build_model()
        self.own_family = self.model.config.model_type == "hf_pretrain_decoder"
        self.apply_embedding_init(self.training_documents)
        if self.own_family:
            announce("packing: per-document positions and attention within each document (hf_pretrain decoder)")
        else:
            announce(f"packing: {type(self.model).__name__}: rows of concatenated documents as run_clm.py makes them "
                     "(the model's own positions, attention across the documents of a row)")
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        self.train_collator = CausalLMCollator(pad, with_position_ids=self.own_family)
        self.eval_collator = self.train_collator  # no noise: eval batches are the same at every eval

    def build_model(self):
        from transformers import AutoModelForCausalLM

        from ..models import PretrainDecoderForCausalLM

        if self.recipe.model.init_from:
            return load_transformers_checkpoint(AutoModelForCausalLM, self.recipe, self.tokenizer, self.announce)
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


# ----------------------------------------------------------------------------------------------- autoencoder
# Clean training documents whose mean sentence vector becomes the model's `pooled_center` (see finish_training).
CENTER_DOCUMENTS = 4096
CENTER_BATCH = 64


class DenoisingObjective(TextObjective):
    """One document per row (length-bucketed batches), corrupted by the noise collator; the denoising
    autoencoder reconstructs the clean document. Eval: reconstruction loss, token accuracy, exact match."""

    name = "dae"
    tokenizer_objective = "dae"

    @property
    def config_class(self):
        from ..models import PretrainDAEConfig

        return PretrainDAEConfig

    def __init__(self, recipe: Recipe, accelerator, run_dir: Path, announce=print):
        from ..data.documents import LengthBucketBatchSampler, prepare_documents
        from ..data.noising import DenoisingCollator

        super().__init__(recipe, accelerator, run_dir, announce)
        noise = recipe.noise
        self.train_dataset, self.eval_dataset = prepare_splits(
            prepare_documents, self.train_texts, self.eval_texts, self.tokenizer, accelerator, announce,
            max_length=recipe.data.block_size, num_proc=recipe.data.num_proc,
            with_word_starts=noise.word_delete_rate > 0,
        )
        # Documents of similar length share a batch, so the padding (wasted FLOPs) stays small.
        self.train_batch_sampler = LengthBucketBatchSampler(
            self.train_dataset["length"], recipe.train.batch_size, seed=recipe.train.seed, shuffle=True, drop_last=True
        )
        self.model = self.build_model()
        self.apply_embedding_init(self.training_documents)
        if self.model.config.sentence_pooling == "weighted_mean":
            from ..data.spectral import smooth_inverse_frequency_weights

            weights = smooth_inverse_frequency_weights(self.training_documents(), self.model.config.vocab_size)
            self.model.base_model.set_token_pooling_weights(weights)
            announce("sentence pooling: token weights a / (a + p(token)) from the training documents")
        start = self.model.config.decoder_start_token_id
        self.train_collator = DenoisingCollator.from_tokenizer(
            self.tokenizer, noise, seed=recipe.train.seed, decoder_start_token_id=start
        )
        # Eval always teacher-forces the clean prefix, so reconstruction metrics compare across settings.
        eval_noise = dataclasses.replace(noise, decoder_mask_rate=0.0)
        self.eval_collator = DenoisingCollator.from_tokenizer(
            self.tokenizer, eval_noise, seed=self.eval_seed, decoder_start_token_id=start
        )

    def build_model(self):
        from ..models import PretrainDAEForDenoising

        if self.recipe.model.init_from:
            return PretrainDAEForDenoising.from_pretrained(self.recipe.model.init_from)
        # The labels are the clean ids as tokenized ([CLS] ... [SEP]); decoding starts from [BOS] (or [CLS]) and
        # stops at [SEP], where the labels end.
        tokenizer = self.tokenizer
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
        return self.new_model(
            PretrainDAEForDenoising, bos_token_id=start, decoder_start_token_id=start, eos_token_id=tokenizer.sep_token_id
        )

    def training_documents(self):
        """The training documents as token-id arrays: one per row, variable lengths, read in chunks (not the
        whole column at once)."""
        return (np.asarray(ids) for chunk in self.train_dataset.iter(batch_size=1024) for ids in chunk["input_ids"])

    def finish_training(self, model) -> None:
        """sentence_pooling="weighted_mean": the model's `pooled_center` becomes the mean sentence vector of (up to
        CENTER_DOCUMENTS) clean training documents (see `PretrainDAEModel.fit_pooled_center`; it raised retrieval
        MAP here: benchmarks/RESULTS.md#dae-sentence). Every process computes the same vector from the same
        documents."""
        base = model.base_model  # the PretrainDAEModel inside PretrainDAEForDenoising
        if base.config.sentence_pooling != "weighted_mean":
            return
        documents = self.train_dataset.select(range(min(CENTER_DOCUMENTS, len(self.train_dataset))))

        def batches():
            for chunk in documents.iter(batch_size=CENTER_BATCH):
                ids = list(chunk["input_ids"])  # (numpy-formatted rows come as one object array)
                padded = self.tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt")
                yield padded["input_ids"], padded["attention_mask"]

        base.fit_pooled_center(batches())

    def eval_sums(self, model, batch: dict) -> dict[str, torch.Tensor]:
        labels = batch["labels"]  # (B, T)
        logits = model(**batch).logits  # (B, T, V), aligned with labels (the model shifts its decoder input)
        valid = labels != IGNORE_INDEX
        right = (logits.argmax(-1) == labels) | ~valid
        return {
            **predicted_token_sums(logits[valid], labels[valid]),
            "exact": right.all(dim=1).sum(),
            "examples": torch.tensor(labels.shape[0]),
        }

    def eval_metrics(self, totals: dict) -> dict:
        metrics = super().eval_metrics(totals)
        metrics["exact_match"] = totals.get("exact", 0) / max(totals.get("examples", 0), 1)
        return metrics

    def step_flops(self, micro_batches: list[dict]) -> float:
        return sum(
            self.model.training_flops(
                int(batch["attention_mask"].sum()), int(self.count_items(batch)),
                batch["input_ids"].shape[1], batch["labels"].shape[1],
            )
            for batch in micro_batches
        )


# ----------------------------------------------------------------------------------------------- feature autoencoder
class FeatureDenoisingObjective(Objective):
    """Float vectors (scikit-learn's digits, or your .npy / csv / parquet / jsonl files), each read as
    `features.feature_tokens` feature tokens, corrupted by `FeatureNoiseCollator` (Gaussian noise + masked values);
    `PretrainDAEForFeatureReconstruction` rebuilds the clean vector and its loss is the mean squared error.

    No tokenizer (`tokenizer` is None). A "token" in the loop's counts and budgets (`train.max_tokens`) is a
    feature token. Eval on the held-out vectors: `loss` (= `mse`), the denoising MSE (noisy input, clean target:
    what training minimizes); `clean_mse`, the reconstruction MSE of uncorrupted inputs; `baseline_mse`,
    predicting the training mean for every vector; `r2` = 1 - mse / baseline_mse."""

    name = "dae-features"

    @property
    def config_class(self):
        from ..models import PretrainDAEFeatureConfig

        return PretrainDAEFeatureConfig

    def __init__(self, recipe: Recipe, accelerator, run_dir: Path, announce=print):
        from ..data.features import FeatureDataset, split_features
        from ..data.noising import FeatureNoiseCollator

        if "feature_size" in recipe.model.config:
            raise RecipeError(
                f"model.config.feature_size={recipe.model.config['feature_size']!r}: it is derived from the data "
                "(values per vector / features.feature_tokens); set features.feature_tokens instead."
            )
        super().__init__(recipe, accelerator, run_dir, announce)
        section = recipe.features
        train, validation, description = self.load_vectors(recipe)
        if validation is None:
            train, validation = split_features(train, section.validation_fraction, recipe.train.seed)
        width = train.shape[1]
        if validation.shape[1] != width:
            raise RecipeError(
                f"features.validation_files hold vectors of {validation.shape[1]} values, the training vectors "
                f"{width}; both must have the same size."
            )
        if width % section.feature_tokens:
            divisors = [d for d in range(1, width + 1) if width % d == 0]
            raise RecipeError(
                f"features.feature_tokens={section.feature_tokens} does not divide the {width} values of each "
                f"vector; choose one of {divisors} (each token holds {width} / feature_tokens values)."
            )
        self.feature_size = width // section.feature_tokens
        announce(
            f"features: {description}; train {len(train):,}, validation {len(validation):,} vectors; "
            f"{section.feature_tokens} feature tokens of {self.feature_size} values; noise: Gaussian std "
            f"{section.gaussian_std}, {section.mask_rate:.0%} of values masked"
        )
        self.train_dataset, self.eval_dataset = FeatureDataset(train), FeatureDataset(validation)
        self.train_mean = torch.from_numpy(train.astype("float64").mean(axis=0)).float()  # (D,), eval's baseline
        self.model = self.build_model()
        noise = dict(gaussian_std=section.gaussian_std, mask_rate=section.mask_rate)
        self.train_collator = FeatureNoiseCollator(**noise, seed=recipe.train.seed)
        self.eval_collator = FeatureNoiseCollator(**noise, seed=self.eval_seed)

    @staticmethod
    def load_vectors(recipe: Recipe):
        """(train, validation or None, description), float32 arrays; data errors become recipe errors that
        name the key."""
        from ..data.features import FeatureDataError, load_digits_features, load_feature_files
        from ..data.sources import resolve_files

        section = recipe.features
        if section.source == "digits":
            try:
                data = load_digits_features()
            except FeatureDataError as error:
                raise RecipeError(f"features.source='digits': {error}") from None
            return data.features, None, data.description
        loaded = []
        for key in ("train_files", "validation_files"):
            patterns = getattr(section, key)
            if not patterns:
                loaded.append(None)
                continue
            try:
                files = resolve_files(patterns)
                data = load_feature_files(files, section.format, section.columns)
            except ValueError as error:  # FeatureDataError, or a pattern that matches no file
                raise RecipeError(f"features.{key}={patterns!r}: {error}") from None
            loaded.append(data)
        train, validation = loaded
        return train.features, validation.features if validation else None, train.description

    def build_model(self):
        from ..models import PretrainDAEForFeatureReconstruction

        recipe, tokens = self.recipe, self.recipe.features.feature_tokens
        if recipe.model.init_from:
            model = PretrainDAEForFeatureReconstruction.from_pretrained(recipe.model.init_from)
            if model.config.feature_size != self.feature_size:
                raise RecipeError(
                    f"model.init_from={recipe.model.init_from!r} reads feature tokens of {model.config.feature_size} "
                    f"values, but features.feature_tokens={tokens} makes tokens of {self.feature_size}; set "
                    f"features.feature_tokens={self.feature_size * tokens // model.config.feature_size} (if it "
                    "divides the vectors) or start from scratch."
                )
        else:
            # One position per feature token plus the summary token, unless the recipe sets it.
            positions = {"max_position_embeddings": tokens + 1}
            if "max_position_embeddings" in recipe.model.config:
                positions = {}
            model = self.new_model(PretrainDAEForFeatureReconstruction, feature_size=self.feature_size, **positions)
        if tokens + 1 > model.config.max_position_embeddings:
            raise RecipeError(
                f"features.feature_tokens={tokens} needs model.config.max_position_embeddings >= {tokens + 1} (one "
                f"position per feature token plus the summary token); it is {model.config.max_position_embeddings}."
            )
        return model

    def count_items(self, batch: dict) -> torch.Tensor:
        """Values reconstructed (the MSE averages over these)."""
        return torch.tensor(batch["labels"].numel())

    def count_tokens(self, batch: dict) -> int:
        return batch["labels"].numel() // self.feature_size

    def loss(self, model, batch: dict, items_in_step: torch.Tensor) -> torch.Tensor:
        """The model's MSE is a mean over its own batch (it ignores `num_items_in_batch`); weighting it by this
        micro-batch's share of the step's values turns it into their mean."""
        loss = model(**batch).loss
        return loss * (self.count_items(batch).to(loss.device) / items_in_step.to(loss.device))

    def eval_sums(self, model, batch: dict) -> dict[str, torch.Tensor]:
        clean = batch["labels"].float()  # (B, D)
        denoised = model(input_features=batch["input_features"]).reconstruction.float()
        rebuilt = model(input_features=batch["labels"]).reconstruction.float()
        mean = self.train_mean.to(clean.device)
        return {
            "squared_error": ((denoised - clean) ** 2).sum(),
            "clean_squared_error": ((rebuilt - clean) ** 2).sum(),
            "baseline_squared_error": ((clean - mean) ** 2).sum(),
            "values": torch.tensor(clean.numel()),
        }

    def eval_metrics(self, totals: dict) -> dict:
        values = max(totals.get("values", 0), 1)
        mse = totals.get("squared_error", math.nan) / values
        baseline = totals.get("baseline_squared_error", math.nan) / values
        return {
            "loss": mse,
            "mse": mse,
            "clean_mse": totals.get("clean_squared_error", math.nan) / values,
            "baseline_mse": baseline,
            "r2": 1.0 - mse / baseline if baseline > 0 else math.nan,
        }

    @staticmethod
    def describe_evals(before: dict, after: dict) -> str:
        return (
            f"eval reconstruction MSE (held-out vectors, noisy input) {before['mse']:.4f} -> {after['mse']:.4f}; "
            f"clean input {before['clean_mse']:.4f} -> {after['clean_mse']:.4f}; predicting the training mean: "
            f"{after['baseline_mse']:.4f} (R^2 {before['r2']:.3f} -> {after['r2']:.3f})"
        )

    def step_flops(self, micro_batches: list[dict]) -> float:
        return sum(
            self.model.training_flops(batch["labels"].shape[0], self.count_tokens(batch) // max(batch["labels"].shape[0], 1))
            for batch in micro_batches
        )


OBJECTIVES: dict[str, type[Objective]] = {
    "mlm": MaskedLMObjective,
    "clm": CausalLMObjective,
    "rtd": ReplacedTokenDetectionObjective,
    "dae": DenoisingObjective,
    "dae-features": FeatureDenoisingObjective,
}


def build_objective(recipe: Recipe, accelerator, run_dir: Path, announce=print) -> Objective:
    return OBJECTIVES[recipe.objective](recipe, accelerator, run_dir, announce)
