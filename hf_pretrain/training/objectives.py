"""Objectives: what the one training loop needs to know about a pretraining objective.

An objective builds (in this order, all before training starts) the tokenizer, the datasets, the model and the
noise collators, and knows how to count a batch's tokens and predicted items, compute eval sums and a step's
FLOPs. The loop stays the same for the masked LM and the denoising autoencoder.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import math
from pathlib import Path

import torch

from ..recipe import Recipe, RecipeError


# ----------------------------------------------------------------------------------------------- model config
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


# ----------------------------------------------------------------------------------------------- text and tokens
def load_text_splits(recipe: Recipe, announce):
    """(train, validation) `datasets.Dataset`s with a `text` column, from the recipe's data section."""
    from ..data.sources import load_text_sources

    data = recipe.data
    validation_files = data.validation_files if data.source == "files" else ()
    sources = load_text_sources(
        train_files=data.train_files if data.source == "files" else (),
        validation_files=validation_files,
        format=data.format,
        text_column=data.text_column,
        hub_dataset=data.hub_dataset if data.source == "hub" else None,
        hub_config=data.hub_config,
        hub_split=data.hub_split,
        builtin=data.source == "builtin",
        validation_fraction=0.0 if validation_files else data.validation_fraction,
        seed=recipe.train.seed,
        max_documents=data.max_documents,
        num_proc=data.num_proc,
        streaming=data.streaming,
    )
    if not data.streaming:  # a stream's cleaning report fills in only as it is read
        announce(f"text: {sources.summary()}")
    if sources.validation is None:
        raise RecipeError(
            "no validation text: set data.validation_fraction > 0 or data.validation_files (eval needs it)."
        )
    return sources.train, sources.validation


# A streamed corpus may be endless: the tokenizer learns from its first documents.
STREAMING_TOKENIZER_DOCUMENTS = 200_000


def texts_for_tokenizer(train_texts, limit: int | None) -> list[str]:
    import datasets

    if isinstance(train_texts, datasets.IterableDataset):
        limit = limit or STREAMING_TOKENIZER_DOCUMENTS
        return [row["text"] for row in itertools.islice(train_texts, limit)]
    texts = train_texts["text"]
    return texts[:limit] if limit else texts


class StreamedBlocks(torch.utils.data.IterableDataset):
    """Packed blocks of a text stream, for corpora larger than memory (the DataLoader iterates it; Accelerate's
    dispatcher reads it on the main process and hands each rank its slice of every global batch, so ranks never
    see the same block). Each pass over the stream is one epoch; the masks still change per epoch."""

    def __init__(self, texts, tokenizer, block_size: int, with_word_starts: bool):
        from ..data.packing import pack_stream

        super().__init__()
        self.blocks = pack_stream(texts, tokenizer, block_size, with_word_starts=with_word_starts)

    def __iter__(self):
        return iter(self.blocks)


def first_blocks(texts, tokenizer, block_size: int, with_word_starts: bool, count: int) -> list[dict]:
    """The first `count` packed blocks of a stream, in memory (a fixed validation set)."""
    from ..data.packing import pack_stream

    return list(itertools.islice(pack_stream(texts, tokenizer, block_size, with_word_starts=with_word_starts), count))


def prepare_splits(prepare, train_texts, eval_texts, tokenizer, accelerator, announce, **settings):
    """Run a data-preparation function (packing or short documents) on both splits and report each; rank 0
    goes first and caches, the other ranks then load the cache. Returns (train, validation) datasets."""
    with accelerator.main_process_first():
        prepared = {
            split: prepare(texts, tokenizer, **settings)
            for split, texts in (("train", train_texts), ("validation", eval_texts))
        }
    for split, result in prepared.items():
        announce(f"{split}: {result.report.summary()}")
    return prepared["train"].dataset, prepared["validation"].dataset


def prepare_tokenizer(recipe: Recipe, train_texts, accelerator, run_dir: Path, objective: str, announce):
    """Load the recipe's tokenizer, reuse the run's own (on resume), or train one on the training text."""
    from ..data.tokenizer import load_tokenizer, train_tokenizer

    section = recipe.tokenizer
    if section.path:
        return load_tokenizer(section.path)
    saved = run_dir / "tokenizer"
    with accelerator.main_process_first():
        if accelerator.is_main_process and not (saved / "tokenizer.json").exists():
            texts = texts_for_tokenizer(train_texts, section.max_train_documents)
            announce(f"training a {section.kind} tokenizer ({section.vocab_size} tokens) on {len(texts)} documents")
            tokenizer = train_tokenizer(
                texts,
                kind=section.kind,
                vocab_size=section.vocab_size,
                lowercase=section.lowercase,
                objective=objective,
                model_max_length=recipe.data.block_size,
            )
            tokenizer.save_pretrained(saved)
    return load_tokenizer(saved)


# ----------------------------------------------------------------------------------------------- masked LM
class MaskedLMObjective:
    """Packed blocks of the corpus, MLM masking, the encoder family with sparse prediction."""

    name = "mlm"

    def __init__(self, recipe: Recipe, accelerator, run_dir: Path, announce=print):
        from ..data.masking import MaskingCollator
        from ..models import PretrainEncoderConfig

        self.recipe = recipe
        if recipe.model.init_from is None:
            model_config_from_recipe(PretrainEncoderConfig, recipe)  # fail on a bad model config before any work
        train_texts, eval_texts = load_text_splits(recipe, announce)
        self.tokenizer = prepare_tokenizer(recipe, train_texts, accelerator, run_dir, "mlm", announce)
        word_starts = recipe.masking.whole_word or recipe.masking.span
        self.streaming = recipe.data.streaming
        if self.streaming:
            self.train_dataset = StreamedBlocks(train_texts, self.tokenizer, recipe.data.block_size, word_starts)
            eval_rows = recipe.train.eval_batches * recipe.train.batch_size * accelerator.num_processes
            self.eval_dataset = first_blocks(eval_texts, self.tokenizer, recipe.data.block_size, word_starts, eval_rows)
        else:
            self.train_dataset, self.eval_dataset = self.pack_in_memory(
                recipe, train_texts, eval_texts, word_starts, accelerator, announce
            )
        self.model = self.build_model(PretrainEncoderConfig)
        masking = recipe.masking
        collator_settings = dict(
            mlm_probability=masking.mlm_probability,
            mask_replace_prob=masking.mask_replace_prob,
            random_replace_prob=masking.random_replace_prob,
            whole_word=masking.whole_word,
            span=masking.span,
        )
        self.train_collator = MaskingCollator(self.tokenizer, seed=recipe.train.seed, **collator_settings)
        # Eval masks never change (another seed, epoch 0), so eval losses of different steps compare.
        self.eval_collator = MaskingCollator(self.tokenizer, seed=recipe.train.seed + 7919, **collator_settings)
        self.sequence_length = recipe.data.block_size

    def pack_in_memory(self, recipe, train_texts, eval_texts, word_starts, accelerator, announce):
        from ..data.packing import pack_dataset

        return prepare_splits(
            pack_dataset, train_texts, eval_texts, self.tokenizer, accelerator, announce,
            block_size=recipe.data.block_size, num_proc=recipe.data.num_proc, with_word_starts=word_starts,
        )

    def build_model(self, config_class):
        from transformers import AutoModelForMaskedLM

        recipe = self.recipe
        if recipe.model.init_from:
            model = AutoModelForMaskedLM.from_pretrained(
                recipe.model.init_from, attn_implementation=recipe.model.attn_implementation
            )
            if model.get_input_embeddings().num_embeddings < len(self.tokenizer):
                model.resize_token_embeddings(vocab_rows(self.tokenizer))
            return model
        from ..models import PretrainEncoderForMaskedLM

        torch.manual_seed(recipe.train.seed)
        config = model_config_from_recipe(
            config_class, recipe, vocab_size=vocab_rows(self.tokenizer), pad_token_id=self.tokenizer.pad_token_id
        )
        return PretrainEncoderForMaskedLM(config)

    def set_epoch(self, epoch: int) -> None:
        self.train_collator.set_epoch(epoch)

    @staticmethod
    def count_items(batch: dict) -> torch.Tensor:
        return (batch["labels"] != -100).sum()

    @staticmethod
    def count_tokens(batch: dict) -> int:
        mask = batch.get("attention_mask")
        return int(mask.sum()) if mask is not None else batch["input_ids"].numel()

    @staticmethod
    def eval_sums(model, batch: dict) -> dict[str, torch.Tensor]:
        """Summed cross-entropy and correct predictions over masked tokens (no logits kept across batches)."""
        labels = batch["labels"]
        logits = model(**batch).logits
        targets = labels[labels != -100]
        if logits.dim() == 3:  # a dense model (e.g. continued pretraining of a Hub checkpoint)
            logits = logits[labels != -100]
        loss_sum = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")
        correct = (logits.argmax(-1) == targets).sum()
        return {"loss_sum": loss_sum.detach(), "correct": correct, "items": torch.tensor(targets.numel())}

    @staticmethod
    def eval_metrics(totals: dict) -> dict:
        items = max(totals.get("items", 0), 1)
        loss = totals.get("loss_sum", math.nan) / items
        return {"loss": loss, "perplexity": math.exp(min(loss, 50)), "accuracy": totals.get("correct", 0) / items}

    def step_flops(self, micro_batches: list[dict]) -> float:
        from .metrics import encoder_step_flops, linear_parameters

        model = self.model
        config = model.config
        head_modules = tuple(m for m in (getattr(model, "head", None), model.get_output_embeddings()) if m is not None)
        if not hasattr(self, "_linear_params"):
            self._linear_params = (
                linear_parameters(model, exclude=head_modules),
                sum(linear_parameters(m) for m in head_modules),
            )
        body, head = self._linear_params
        tokens = sum(self.count_tokens(b) for b in micro_batches)
        predicted = sum(int(self.count_items(b)) for b in micro_batches)
        flops = encoder_step_flops(
            body, head, config.num_hidden_layers, config.hidden_size, tokens, self.sequence_length,
            predicted if getattr(config, "sparse_prediction", False) else tokens,  # dense heads project every position
        )
        if getattr(config, "sparse_prediction", False) and hasattr(model, "model") and hasattr(model.model, "layers"):
            # Our last block runs its output projection and MLP on the predicted rows only (not counted as done).
            last = model.model.layers[-1]
            skipped_params = linear_parameters(last.mlp) + last.attn.o_proj.weight.numel()
            flops -= 6 * skipped_params * (tokens - predicted)
        return flops


# ----------------------------------------------------------------------------------------------- autoencoder
class DenoisingObjective:
    """One document per row (length-bucketed batches), corrupted by the noise collator; the denoising
    autoencoder reconstructs the clean document. Eval: reconstruction loss, token accuracy, exact match."""

    name = "dae"

    def __init__(self, recipe: Recipe, accelerator, run_dir: Path, announce=print):
        from ..data.noising import DenoisingCollator, NoiseSettings
        from ..data.packing import LengthBucketBatchSampler, prepare_documents
        from ..models import PretrainDAEConfig

        self.recipe = recipe
        if recipe.model.init_from is None:
            model_config_from_recipe(PretrainDAEConfig, recipe)  # fail on a bad model config before any work
        noise = NoiseSettings(**dataclasses.asdict(recipe.noise))
        train_texts, eval_texts = load_text_splits(recipe, announce)
        self.tokenizer = prepare_tokenizer(recipe, train_texts, accelerator, run_dir, "dae", announce)
        needs_words = noise.word_delete_rate > 0
        self.train_dataset, self.eval_dataset = prepare_splits(
            prepare_documents, train_texts, eval_texts, self.tokenizer, accelerator, announce,
            max_length=recipe.data.block_size, num_proc=recipe.data.num_proc, with_word_starts=needs_words,
        )
        # Documents of similar length share a batch, so the padding (wasted FLOPs) stays small.
        self.train_batch_sampler = LengthBucketBatchSampler(
            self.train_dataset["length"], recipe.train.batch_size, seed=recipe.train.seed, shuffle=True, drop_last=True
        )
        self.model = self.build_model(PretrainDAEConfig)
        self.train_collator = DenoisingCollator.from_tokenizer(self.tokenizer, noise, seed=recipe.train.seed)
        self.eval_collator = DenoisingCollator.from_tokenizer(self.tokenizer, noise, seed=recipe.train.seed + 7919)

    def build_model(self, config_class):
        from ..models import PretrainDAEForDenoising

        recipe, tokenizer = self.recipe, self.tokenizer
        if recipe.model.init_from:
            return PretrainDAEForDenoising.from_pretrained(recipe.model.init_from)
        torch.manual_seed(recipe.train.seed)
        # The labels are the clean ids as tokenized ([CLS] ... [SEP]); decoding starts from [BOS] (or [CLS]) and
        # stops at [SEP], where the labels end.
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
        config = model_config_from_recipe(
            config_class,
            recipe,
            vocab_size=vocab_rows(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=start,
            decoder_start_token_id=start,
            eos_token_id=tokenizer.sep_token_id,
        )
        return PretrainDAEForDenoising(config)

    def set_epoch(self, epoch: int) -> None:
        self.train_collator.set_epoch(epoch)
        self.train_batch_sampler.set_epoch(epoch)

    count_items = staticmethod(MaskedLMObjective.count_items)

    @staticmethod
    def count_tokens(batch: dict) -> int:
        return int(batch["attention_mask"].sum())

    @staticmethod
    def eval_sums(model, batch: dict) -> dict[str, torch.Tensor]:
        labels = batch["labels"]  # (B, T)
        logits = model(**batch).logits  # (B, T, V), aligned with labels (the model shifts its decoder input)
        valid = labels != -100
        loss_sum = torch.nn.functional.cross_entropy(logits[valid].float(), labels[valid], reduction="sum")
        right = (logits.argmax(-1) == labels) | ~valid
        return {
            "loss_sum": loss_sum.detach(),
            "correct": (right & valid).sum(),
            "items": valid.sum(),
            "exact": right.all(dim=1).sum(),
            "examples": torch.tensor(labels.shape[0]),
        }

    @staticmethod
    def eval_metrics(totals: dict) -> dict:
        metrics = MaskedLMObjective.eval_metrics(totals)
        metrics["exact_match"] = totals.get("exact", 0) / max(totals.get("examples", 0), 1)
        return metrics

    def step_flops(self, micro_batches: list[dict]) -> float:
        """Encoder linears on source tokens, decoder linears and the vocabulary projection on target tokens,
        self-attention at the batch's padded lengths (cross-attention to one vector is negligible)."""
        from .metrics import linear_parameters

        model, config = self.model, self.model.config
        if not hasattr(self, "_linear_params"):
            encoder = model.get_encoder()
            self._linear_params = (linear_parameters(encoder), linear_parameters(model) - linear_parameters(encoder))
        encoder_params, decoder_params = self._linear_params
        flops = 0.0
        for batch in micro_batches:
            source = int(batch["attention_mask"].sum())
            target = int((batch["labels"] != -100).sum())
            source_len, target_len = batch["input_ids"].shape[1], batch["labels"].shape[1]
            flops += 6 * encoder_params * source + 6 * decoder_params * target
            flops += 12 * config.num_hidden_layers * source_len * config.hidden_size * source
            flops += 12 * config.decoder_layers * target_len * config.hidden_size * target
        return flops


OBJECTIVES = {"mlm": MaskedLMObjective, "dae": DenoisingObjective}


def build_objective(recipe: Recipe, accelerator, run_dir: Path, announce=print):
    return OBJECTIVES[recipe.objective](recipe, accelerator, run_dir, announce)
