"""Whole documents (no packing), for the denoising autoencoder, and length-bucketed batches of them.

Public API
----------
`prepare_documents(dataset, tokenizer, max_length, text_column="text", num_proc=1, with_word_starts=False)
        -> PreparedDocuments(dataset, report)`
    One document per row, truncated to max_length (boundary tokens kept), columns `input_ids`, `length`,
    `example_index` (+ `word_starts`). Batch it with `LengthBucketBatchSampler`; the collators pad
    (collation.py).
`LengthBucketBatchSampler(lengths, batch_size, seed=0, shuffle=True, drop_last=False, bucket_size_multiplier=50)`
`DocumentsReport`: counts (documents, empty, truncated, tokens).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import datasets
import numpy as np
import pyarrow.compute as pc

from .encoding import DocumentEncoder, minimum_document_tokens, tokenize_dataset

logger = logging.getLogger(__name__)


@dataclass
class DocumentsReport:
    max_length: int
    documents: int = 0
    empty_documents: int = 0
    truncated_documents: int = 0
    tokens: int = 0

    def summary(self) -> str:
        return (
            f"{self.documents:,} documents kept ({self.tokens:,} tokens, max_length {self.max_length}); "
            f"{self.truncated_documents:,} truncated, {self.empty_documents:,} empty dropped"
        )


@dataclass
class PreparedDocuments:
    dataset: datasets.Dataset
    report: DocumentsReport

    def __iter__(self):
        return iter((self.dataset, self.report))


def prepare_documents(dataset: datasets.Dataset, tokenizer, max_length: int, text_column: str = "text",
                      num_proc: int = 1, with_word_starts: bool = False) -> PreparedDocuments:
    """Short-document mode: one truncated document per row (see module doc)."""
    if not isinstance(max_length, int) or max_length < 3:
        raise ValueError(f"max_length={max_length!r}; allowed: an integer >= 3 (room for two boundary tokens).")
    encoder = DocumentEncoder(tokenizer, text_column, with_word_starts, max_length=max_length)
    tokenized = tokenize_dataset(dataset, encoder, num_proc)
    lengths = pc.list_value_length(tokenized.data.column("input_ids")).to_numpy(zero_copy_only=False)
    minimum = minimum_document_tokens(encoder)
    report = DocumentsReport(max_length=max_length, truncated_documents=int(np.sum(tokenized["truncated"])))
    kept = np.flatnonzero(lengths > minimum)
    report.empty_documents = len(lengths) - len(kept)
    report.documents = len(kept)
    report.tokens = int(lengths[kept].sum())
    if len(kept) < len(lengths):
        tokenized = tokenized.select(kept)
        lengths = lengths[kept]
    tokenized = tokenized.remove_columns("truncated")
    tokenized = tokenized.add_column("length", lengths.astype(np.int64).tolist())
    tokenized = tokenized.add_column("example_index", list(range(len(tokenized))))
    logger.debug(report.summary())
    return PreparedDocuments(tokenized.with_format("numpy"), report)


class LengthBucketBatchSampler:
    """Batches of documents with similar lengths, so padding stays small; random but reproducible per epoch.

    Each epoch: shuffle all indices (seeded by (seed, epoch)), cut them into pools of batch_size *
    bucket_size_multiplier, sort each pool by length, split into batches, and shuffle the batch order."""

    def __init__(self, lengths, batch_size: int, seed: int = 0, shuffle: bool = True, drop_last: bool = False,
                 bucket_size_multiplier: int = 50):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}; allowed: an integer >= 1.")
        if bucket_size_multiplier < 1:
            raise ValueError(f"bucket_size_multiplier={bucket_size_multiplier!r}; allowed: an integer >= 1.")
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.pool_size = batch_size * bucket_size_multiplier
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        full, rest = divmod(len(self.lengths), self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths)) if self.shuffle else np.arange(len(self.lengths))
        batches = []
        for start in range(0, len(order), self.pool_size):
            pool = order[start : start + self.pool_size]
            pool = pool[np.argsort(self.lengths[pool], kind="stable")]
            batches.extend(pool[i : i + self.batch_size] for i in range(0, len(pool), self.batch_size))
        if self.drop_last:
            batches = [batch for batch in batches if len(batch) == self.batch_size]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        for batch in batches:
            yield batch.tolist()
