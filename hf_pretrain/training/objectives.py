"""Objectives: what the one training loop needs to know about a pretraining objective.

An objective builds (in this order, all before training starts) the tokenizer, the datasets, the model and the
noise collators, and knows how to count a batch's tokens and predicted items, compute eval sums and a step's
FLOPs. The loop stays the same for the masked LM, the denoising autoencoder and the feature autoencoder
(`dae-features`: float vectors, no tokenizer — its `tokenizer` is None; an optional static
`describe_evals(before, after)` gives the eval line of the CLI's run summary, for metrics other than loss,
perplexity and accuracy). An optional `finish_training(model)` runs after the last step, before the last
checkpoint and the final folder are written (the denoising autoencoder sets its sentence-vector centre there).
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import math
from pathlib import Path

import datasets
import numpy as np
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


def apply_embedding_init(model, recipe: Recipe, tokenizer, documents, announce) -> None:
    """model.embedding_init=spectral: token embedding rows from the corpus's TF-IDF SVD (data/spectral.py).
    `documents()` returns an iterator over the training documents as token-id arrays (called only when the
    recipe asks for spectral rows, so a random init reads nothing). Every rank computes the same rows (the SVD
    is seeded), so no broadcast is needed."""
    if recipe.model.embedding_init != "spectral" or recipe.model.init_from:
        return
    from ..data.spectral import default_ignore_ids, initialize_token_embeddings

    report = initialize_token_embeddings(
        model.get_input_embeddings(),
        documents(),
        ignore_ids=default_ignore_ids(tokenizer),
        seed=recipe.train.seed,
        max_segments=recipe.model.embedding_init_max_documents,
        eigenvalue_power=recipe.model.embedding_init_power,
    )
    announce(report.summary())


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
    see the same block). Each pass over the stream is one epoch; the masks still change per epoch.

    DataLoader workers: a `datasets.IterableDataset` read inside worker w of k yields only that worker's shards
    (files) of the corpus, so each worker packs its own documents and block n of worker w gets the noise key
    n * k + w: every block once, keys unique across workers, the same blocks and keys on every pass (exact
    resume, for a fixed train.num_workers). Any other iterable of texts is read whole by every worker, which keeps
    every k-th block under its own global key."""

    def __init__(self, texts, tokenizer, block_size: int, with_word_starts: bool):
        from ..data.streaming import pack_stream

        super().__init__()
        self.shards_per_worker = isinstance(texts, datasets.IterableDataset)
        self.blocks = pack_stream(texts, tokenizer, block_size, with_word_starts=with_word_starts)

    def __iter__(self):
        worker = torch.utils.data.get_worker_info()
        if worker is None:
            yield from self.blocks
        elif self.shards_per_worker:
            for block in self.blocks:
                yield {**block, "example_index": block["example_index"] * worker.num_workers + worker.id}
        else:
            for block in self.blocks:
                if int(block["example_index"]) % worker.num_workers == worker.id:
                    yield block


def first_blocks(texts, tokenizer, block_size: int, with_word_starts: bool, count: int) -> list[dict]:
    """The first `count` packed blocks of a stream, in memory (a fixed validation set)."""
    from ..data.streaming import pack_stream

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
    saved = run_dir / "tokenizer"
    if section.path and section.add_tokens:
        with accelerator.main_process_first():
            if accelerator.is_main_process and not (saved / "tokenizer.json").exists():
                add_domain_words(load_tokenizer(section.path), train_texts, section, saved, announce)
        return load_tokenizer(saved)
    if section.path:
        return load_tokenizer(section.path)
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


DOMAIN_WORDS_FILE = "domain_words.json"  # in the run's tokenizer folder: the added words and their old pieces


def add_domain_words(tokenizer, train_texts, section, saved: Path, announce) -> None:
    """tokenizer.add_tokens: add the corpus's most frequent multi-piece words to a copy of the tokenizer, saved in
    the run folder (a resume reuses it), with the pieces each word replaces (init_domain_rows reads them)."""
    from tokenizers import AddedToken

    from ..data.tokenizer import find_domain_words

    texts = texts_for_tokenizer(train_texts, section.max_train_documents)
    words = find_domain_words(tokenizer, texts, section.add_tokens)
    # single_word: matched only as a whole word; lstrip: the word takes the space before it, so byte-level BPE
    # does not leave a lone space token in front of it.
    tokenizer.add_tokens([AddedToken(word.text, single_word=True, lstrip=True) for word in words])
    tokenizer.save_pretrained(saved)
    records = [{"word": w.text, "id": tokenizer.convert_tokens_to_ids(w.text), "pieces": list(w.pieces),
                "count": w.count} for w in words]
    (saved / DOMAIN_WORDS_FILE).write_text(json.dumps(records, indent=1))
    shown = ", ".join(f"{w.text} ({len(w.pieces)} pieces, {w.count}x)" for w in words[:10])
    announce(f"tokenizer.add_tokens: added {len(words)} domain words to the vocabulary: {shown}"
             + (" ..." if len(words) > 10 else ""))


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


# ----------------------------------------------------------------------------------------------- masked LM
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


class MaskedLMObjective:
    """Packed blocks of the corpus, MLM masking, the encoder family with sparse prediction."""

    name = "mlm"

    def __init__(self, recipe: Recipe, accelerator, run_dir: Path, announce=print):
        from ..data.masking import MaskingCollator
        from ..models import PretrainEncoderConfig

        self.recipe = recipe
        self.announce = announce
        self.run_dir = run_dir
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
        apply_embedding_init(
            self.model, recipe, self.tokenizer, lambda: self.training_documents(train_texts), announce
        )
        per_document, description = packing_plan(self.model)
        announce(f"packing: {description}")
        masking = recipe.masking
        collator_settings = dict(
            mlm_probability=masking.mlm_probability,
            mask_replace_prob=masking.mask_replace_prob,
            random_replace_prob=masking.random_replace_prob,
            whole_word=masking.whole_word,
            span=masking.span,
            with_position_ids=per_document,
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

    def training_documents(self, train_texts):
        """The training documents as token-id arrays: the pieces of the packed rows. A streamed corpus is packed
        again from its start by the same packer (the consumer stops after embedding_init_max_documents)."""
        from ..data.spectral import segments_of_packed_rows
        from ..data.streaming import pack_stream

        if self.streaming:
            blocks = pack_stream(train_texts, self.tokenizer, self.recipe.data.block_size)
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

    def build_model(self, config_class):
        from transformers import AutoModelForMaskedLM

        recipe = self.recipe
        if recipe.model.init_from:
            try:
                model = AutoModelForMaskedLM.from_pretrained(
                    recipe.model.init_from, attn_implementation=recipe.model.attn_implementation
                )
            except ValueError as error:  # e.g. DeBERTa-v2 has no SDPA path: use the family's own default
                if "attention implementation" not in str(error) and "attn_implementation" not in str(error):
                    raise
                model = AutoModelForMaskedLM.from_pretrained(recipe.model.init_from)
                self.announce(
                    f"model.attn_implementation={recipe.model.attn_implementation!r} is not available for "
                    f"{type(model).__name__}; using its default ({model.config._attn_implementation!r})"
                )
            if model.get_input_embeddings().num_embeddings < len(self.tokenizer):
                model.resize_token_embeddings(vocab_rows(self.tokenizer))
            if recipe.tokenizer.add_tokens:  # a resumed run loads its checkpoint's rows over these
                init_domain_rows(model, self.run_dir / "tokenizer")
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
# Clean training documents whose mean sentence vector becomes the model's `pooled_center` (see finish_training).
CENTER_DOCUMENTS = 4096
CENTER_BATCH = 64


class DenoisingObjective:
    """One document per row (length-bucketed batches), corrupted by the noise collator; the denoising
    autoencoder reconstructs the clean document. Eval: reconstruction loss, token accuracy, exact match."""

    name = "dae"

    def __init__(self, recipe: Recipe, accelerator, run_dir: Path, announce=print):
        from ..data.documents import LengthBucketBatchSampler, prepare_documents
        from ..data.noising import DenoisingCollator
        from ..models import PretrainDAEConfig
        from ..recipe import NoiseSection as NoiseSettings  # the one noise dataclass (issue 14)

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
        apply_embedding_init(self.model, recipe, self.tokenizer, self.training_documents, announce)
        if self.model.config.sentence_pooling == "weighted_mean":
            from ..data.spectral import smooth_inverse_frequency_weights

            weights = smooth_inverse_frequency_weights(self.training_documents(), self.model.config.vocab_size)
            self.model.base_model.token_pooling_weights.copy_(weights)
            announce("sentence pooling: token weights a / (a + p(token)) from the training documents")
        start = self.model.config.decoder_start_token_id
        self.train_collator = DenoisingCollator.from_tokenizer(
            self.tokenizer, noise, seed=recipe.train.seed, decoder_start_token_id=start
        )
        # Eval always teacher-forces the clean prefix, so reconstruction metrics compare across settings.
        eval_noise = dataclasses.replace(noise, decoder_mask_rate=0.0)
        self.eval_collator = DenoisingCollator.from_tokenizer(
            self.tokenizer, eval_noise, seed=recipe.train.seed + 7919, decoder_start_token_id=start
        )

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

    def training_documents(self):
        """The training documents as token-id arrays: one per row, variable lengths, read in chunks (not the
        whole column at once)."""
        return (np.asarray(ids) for chunk in self.train_dataset.iter(batch_size=1024) for ids in chunk["input_ids"])

    def set_epoch(self, epoch: int) -> None:
        self.train_collator.set_epoch(epoch)
        self.train_batch_sampler.set_epoch(epoch)

    def finish_training(self, model) -> None:
        """sentence_pooling="weighted_mean": set the model's `pooled_center` to the mean sentence vector of (up to
        CENTER_DOCUMENTS) clean training documents. Sentence vectors of one corpus share a large common
        component that cosine similarity then mostly measures; removing the mean (as in BERT-whitening, Su et al.
        2021, without its rotation) raised retrieval MAP from 0.21 to 0.27 here (benchmarks/README.md). Every
        process computes the same vector from the same documents."""
        base = model.base_model  # the PretrainDAEModel inside PretrainDAEForDenoising
        if base.config.sentence_pooling != "weighted_mean":
            return
        was_training = model.training
        model.eval()
        base.pooled_center.zero_()
        documents = self.train_dataset.select(range(min(CENTER_DOCUMENTS, len(self.train_dataset))))
        total = torch.zeros_like(base.pooled_center, dtype=torch.float64)
        with torch.no_grad():
            for chunk in documents.iter(batch_size=CENTER_BATCH):
                ids = list(chunk["input_ids"])  # (numpy-formatted rows come as one object array)
                batch = self.tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt")
                batch = batch.to(base.pooled_center.device)
                vectors = base(batch["input_ids"], attention_mask=batch["attention_mask"]).pooler_output
                total += vectors.double().sum(dim=0)
        base.pooled_center.copy_((total / len(documents)).to(base.pooled_center.dtype))
        model.train(was_training)

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
        config = self.model.config
        encoder_params, decoder_params = encoder_decoder_linear_parameters(self)
        flops = 0.0
        for batch in micro_batches:
            source = int(batch["attention_mask"].sum())
            target = int((batch["labels"] != -100).sum())
            source_len, target_len = batch["input_ids"].shape[1], batch["labels"].shape[1]
            flops += 6 * encoder_params * source + 6 * decoder_params * target
            flops += 12 * config.num_hidden_layers * source_len * config.hidden_size * source
            flops += 12 * config.decoder_layers * target_len * config.hidden_size * target
        return flops


# ----------------------------------------------------------------------------------------------- feature autoencoder
class FeatureDenoisingObjective:
    """Float vectors (scikit-learn's digits, or your .npy / csv / parquet / jsonl files), each read as
    `features.feature_tokens` feature tokens, corrupted by `FeatureNoiseCollator` (Gaussian noise + masked values);
    `PretrainDAEForFeatureReconstruction` rebuilds the clean vector and its loss is the mean squared error.

    No tokenizer (`tokenizer` is None). A "token" in the loop's counts and budgets (`train.max_tokens`) is a
    feature token. Eval on the held-out vectors: `loss` (= `mse`), the denoising MSE (noisy input, clean target:
    what training minimizes); `clean_mse`, the reconstruction MSE of uncorrupted inputs; `baseline_mse`,
    predicting the training mean for every vector; `r2` = 1 - mse / baseline_mse."""

    name = "dae-features"

    def __init__(self, recipe: Recipe, accelerator, run_dir: Path, announce=print):
        from ..data.features import FeatureDataset, split_features
        from ..data.noising import FeatureNoiseCollator
        from ..models import PretrainDAEFeatureConfig

        self.recipe = recipe
        section = recipe.features
        if "feature_size" in recipe.model.config:
            raise RecipeError(
                f"model.config.feature_size={recipe.model.config['feature_size']!r}: it is derived from the data "
                "(values per vector / features.feature_tokens); set features.feature_tokens instead."
            )
        if recipe.model.init_from is None:
            model_config_from_recipe(PretrainDAEFeatureConfig, recipe)  # fail on a bad model config before any work
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
        self.tokenizer = None
        self.train_dataset, self.eval_dataset = FeatureDataset(train), FeatureDataset(validation)
        self.train_mean = torch.from_numpy(train.astype("float64").mean(axis=0)).float()  # (D,), eval's baseline
        self.model = self.build_model(PretrainDAEFeatureConfig)
        noise = dict(gaussian_std=section.gaussian_std, mask_rate=section.mask_rate)
        self.train_collator = FeatureNoiseCollator(**noise, seed=recipe.train.seed)
        # Eval noise never changes (another seed, epoch 0), so eval losses of different steps compare.
        self.eval_collator = FeatureNoiseCollator(**noise, seed=recipe.train.seed + 7919)

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

    def build_model(self, config_class):
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
            torch.manual_seed(recipe.train.seed)
            # One position per feature token plus the summary token, unless the recipe sets it.
            positions = {"max_position_embeddings": tokens + 1}
            if "max_position_embeddings" in recipe.model.config:
                positions = {}
            config = model_config_from_recipe(config_class, recipe, feature_size=self.feature_size, **positions)
            model = PretrainDAEForFeatureReconstruction(config)
        if tokens + 1 > model.config.max_position_embeddings:
            raise RecipeError(
                f"features.feature_tokens={tokens} needs model.config.max_position_embeddings >= {tokens + 1} (one "
                f"position per feature token plus the summary token); it is {model.config.max_position_embeddings}."
            )
        return model

    def set_epoch(self, epoch: int) -> None:
        self.train_collator.set_epoch(epoch)

    @staticmethod
    def count_items(batch: dict) -> torch.Tensor:
        """Values reconstructed (the MSE averages over these)."""
        return torch.tensor(batch["labels"].numel())

    def count_tokens(self, batch: dict) -> int:
        return batch["labels"].numel() // self.feature_size

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

    @staticmethod
    def eval_metrics(totals: dict) -> dict:
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
        """Encoder linears on the feature tokens plus the summary token, decoder linears on one query per feature
        token, self-attention in both (cross-attention to one vector is negligible)."""
        config = self.model.config
        encoder_params, decoder_params = encoder_decoder_linear_parameters(self)
        flops = 0.0
        for batch in micro_batches:
            rows, tokens = batch["labels"].shape[0], self.count_tokens(batch)
            per_row = tokens // max(rows, 1)
            source = tokens + rows
            flops += 6 * encoder_params * source + 6 * decoder_params * tokens
            flops += 12 * config.num_hidden_layers * (per_row + 1) * config.hidden_size * source
            flops += 12 * config.decoder_layers * per_row * config.hidden_size * tokens
        return flops


def encoder_decoder_linear_parameters(objective) -> tuple[int, int]:
    """(weights of the encoder's linear layers, weights of all other linear layers) of the objective's model: the
    6 * N FLOPs per token of each half. Counted once per objective (the shapes never change during a run)."""
    from .metrics import linear_parameters

    if not hasattr(objective, "_linear_params"):
        encoder_params = linear_parameters(objective.model.get_encoder())
        objective._linear_params = (encoder_params, linear_parameters(objective.model) - encoder_params)
    return objective._linear_params


OBJECTIVES = {"mlm": MaskedLMObjective, "dae": DenoisingObjective, "dae-features": FeatureDenoisingObjective}


def build_objective(recipe: Recipe, accelerator, run_dir: Path, announce=print):
    return OBJECTIVES[recipe.objective](recipe, accelerator, run_dir, announce)
