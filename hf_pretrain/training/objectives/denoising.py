"""The denoising autoencoder (objective `dae`): one document per row, corrupted by the noise collator and
reconstructed by the decoder.

A streamed corpus (data.streaming=true) is read like the packed objectives' (data/block_stream.py, rows=
"documents"): every process and DataLoader worker reads its own shards, shuffled, its position saved in every
checkpoint and resumed exactly; each row is one document truncated to data.block_size as in memory. Its batches
are not length-bucketed (that needs every document's length up front): a micro-batch is padded to its longest
document, which costs FLOPs on padding (the share is in block_stream.py's docstring). Eval reads the first
validation documents; the corpus statistics (spectral init, pooling weights, pooled center) read the first
training documents of the stream."""

from __future__ import annotations

import dataclasses
import itertools
import logging
from pathlib import Path

import numpy as np
import torch

from ...data.collation import IGNORE_INDEX
from ...data.pipeline import prepare_splits
from ...models import PretrainDAEConfig
from ...recipe import Recipe
from .base import TextObjective, predicted_token_sums

logger = logging.getLogger(__name__)

# Clean training documents whose mean sentence vector becomes the model's `pooled_center` (see finish_training).
CENTER_DOCUMENTS = 4096
CENTER_BATCH = 64
# A streamed corpus may be endless: its token statistics (the weighted-mean pooling weights) read its first
# documents (as many as the tokenizer reads of it, pipeline.STREAMING_TOKENIZER_DOCUMENTS).
STREAMED_STATISTICS_DOCUMENTS = 200_000


class DenoisingObjective(TextObjective):
    """One document per row (length-bucketed batches in memory; unbucketed when streamed), corrupted by the noise
    collator; the denoising autoencoder reconstructs the clean document. Eval: reconstruction loss, token accuracy,
    exact match."""

    config_class = PretrainDAEConfig
    stream_rows = "documents"  # a streamed corpus: one truncated document per row (data/block_stream.py)

    def __init__(self, recipe: Recipe, accelerator, run_dir: Path):
        from ...data.documents import LengthBucketBatchSampler, prepare_documents
        from ...data.noising import DenoisingCollator

        super().__init__(recipe, accelerator, run_dir)
        noise = recipe.noise
        with_word_starts = noise.word_delete_rate > 0
        self.streaming = recipe.data.streaming
        if self.streaming:  # every process and DataLoader worker reads its own shards (module docstring)
            from ...data.block_stream import BlockStream
            from ...data.documents import first_documents

            self.train_dataset = BlockStream(self.stream_plan, self.tokenizer, accelerator.process_index,
                                             with_word_starts)
            eval_rows = recipe.train.eval_batches * recipe.train.batch_size * accelerator.num_processes
            self.eval_dataset = first_documents(self.texts.validation, self.tokenizer, recipe.data.block_size,
                                                with_word_starts, eval_rows)
            if not self.eval_dataset:
                raise ValueError("the validation text holds no document with more than its boundary tokens; raise "
                                 "data.validation_fraction or give data.validation_files.")
        else:
            self.train_dataset, self.eval_dataset = prepare_splits(
                prepare_documents, self.texts, self.tokenizer, accelerator,
                max_length=recipe.data.block_size, num_proc=recipe.data.num_proc,
                with_word_starts=with_word_starts,
            )
            # Documents of similar length share a batch, so the padding (wasted FLOPs) stays small.
            self.train_batch_sampler = LengthBucketBatchSampler(
                self.train_dataset["length"], recipe.train.batch_size, seed=recipe.train.seed, shuffle=True,
                drop_last=True,
            )
        self.model = self.build_model()
        self.apply_embedding_init(self.training_documents)
        if self.model.config.sentence_pooling == "weighted_mean":
            from ...data.spectral import smooth_inverse_frequency_weights

            weights = smooth_inverse_frequency_weights(self.training_documents(), self.model.config.vocab_size)
            self.model.base_model.set_token_pooling_weights(weights)
            logger.info("sentence pooling: token weights a / (a + p(token)) from the training documents")
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
        from ...models import PretrainDAEForDenoising

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
        whole column at once). A streamed corpus: its first STREAMED_STATISTICS_DOCUMENTS documents, in the order
        of its texts, truncated as the readers truncate them."""
        if self.streaming:
            from ...data.documents import stream_documents

            rows = stream_documents(self.texts.train, self.tokenizer, self.recipe.data.block_size)
            return itertools.islice((row["input_ids"] for row in rows), STREAMED_STATISTICS_DOCUMENTS)
        return (np.asarray(ids) for chunk in self.train_dataset.iter(batch_size=1024) for ids in chunk["input_ids"])

    def finish_training(self, model) -> None:
        """sentence_pooling="weighted_mean": the model's `pooled_center` becomes the mean sentence vector of (up to
        CENTER_DOCUMENTS) clean training documents (see `PretrainDAEModel.fit_pooled_center`; it raised retrieval
        MAP here: benchmarks/RESULTS.md#dae-sentence). Every process computes the same vector from the same
        documents."""
        base = model.base_model  # the PretrainDAEModel inside PretrainDAEForDenoising
        if base.config.sentence_pooling != "weighted_mean":
            return
        documents = itertools.islice(self.training_documents(), CENTER_DOCUMENTS)  # in memory or streamed

        def batches():
            while chunk := list(itertools.islice(documents, CENTER_BATCH)):
                padded = self.tokenizer.pad({"input_ids": chunk}, padding=True, return_tensors="pt")
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
