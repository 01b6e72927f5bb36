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

A streamed corpus (data.streaming=true) has the same rows without a dataset:
`DocumentRows(block_size, min_document_tokens)`: what a stream reader (data/block_stream.py) puts where a lane's
    BlockPacker goes for whole-document rows: the packer's interface and state, one row per document.
`stream_documents(texts, tokenizer, max_length, with_word_starts=False)`: prepare_documents' rows (input_ids,
    length, example_index, + word_starts) of any iterable of texts, one at a time (example_index from 0).
`first_documents(texts, tokenizer, max_length, with_word_starts, count) -> list[dict]`: the first `count` of them
    (a streamed run's fixed validation set).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import datasets
import numpy as np
import pyarrow.compute as pc

from .encoding import TOKENIZE_BATCH_SIZE, DocumentEncoder, minimum_document_tokens, tokenize_dataset
from .packing import PackedBlocks, PackingReport, drop_empty_documents

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


# --------------------------------------------------------------------------------------------------- streamed
class DocumentRows:
    """Whole-document rows for a stream reader, in place of its lane's BlockPacker (data/block_stream.py): the
    same `add(flat_ids, lengths, flat_word_starts) -> PackedBlocks`, `report` and private fields, so the reader's
    shuffle buffer, keys, mixture slots and saved state work unchanged.

    The documents come from a DocumentEncoder with max_length=block_size (the encoder prepare_documents uses), so
    they are already truncated as prepare_documents truncates them (boundary tokens kept); each kept document (more
    than its boundary tokens) becomes one row and nothing is carried to the next call (the remainder fields stay
    empty). Rows are returned padded to block_size (ids 0, position_ids -1 past the document's end, word starts 0)
    so that the shuffle buffer and its saved arrays keep a fixed width; the reader cuts each row back to its length
    when it emits it. In the report, `blocks` counts rows and `split_documents` the documents truncated at
    block_size (`count_truncated`)."""

    def __init__(self, block_size: int, min_document_tokens: int):
        if not isinstance(block_size, int) or block_size < 3:
            raise ValueError(f"block_size={block_size!r}; allowed: an integer >= 3 (room for two boundary tokens).")
        self.block_size, self.min_document_tokens = block_size, min_document_tokens
        self.report = PackingReport(block_size=block_size)
        # A BlockPacker's remainder and counters (saved and restored by the reader): always empty / unused here.
        self._ids = np.empty(0, np.int32)
        self._starts = np.empty(0, bool)
        self._document = np.empty(0, np.int64)
        self._word_starts = None
        self._documents_seen = 0
        self._last_split_document = -1

    def add(self, flat_ids: np.ndarray, lengths: np.ndarray,
            flat_word_starts: np.ndarray | None = None) -> PackedBlocks:
        """Documents (concatenated ids + per-document lengths, each at most block_size) -> one padded row each."""
        lengths = np.asarray(lengths, np.int64)
        size = self.block_size
        if len(lengths) and lengths.max() > size:
            raise ValueError(f"a document of {int(lengths.max())} tokens is longer than block_size={size}: encode the "
                             "documents with DocumentEncoder(max_length=block_size).")
        self.report.documents += len(lengths)
        flat_ids, lengths, flat_word_starts = drop_empty_documents(
            self.report, flat_ids, lengths, flat_word_starts, self.min_document_tokens)
        rows = len(lengths)
        self.report.tokens += int(lengths.sum())
        self.report.blocks += rows
        self._documents_seen += rows
        column = np.arange(size)
        inside = column < lengths[:, None]  # (rows, size): row-major order is the documents' concatenation
        ids = np.zeros((rows, size), np.int32)
        ids[inside] = flat_ids
        positions = np.where(inside, column, -1).astype(np.int32)
        word_starts = None
        if flat_word_starts is not None:
            word_starts = np.zeros((rows, size), np.int8)
            word_starts[inside] = flat_word_starts
        return PackedBlocks(ids, positions, word_starts)

    def count_truncated(self, truncated) -> None:
        """The encoder's `truncated` flags of the documents just added: counted as `split_documents`."""
        self.report.split_documents += int(np.sum(truncated))

    def finish(self) -> PackingReport:
        return self.report


def stream_documents(texts, tokenizer, max_length: int, with_word_starts: bool = False,
                     batch_size: int = TOKENIZE_BATCH_SIZE) -> Iterator[dict]:
    """prepare_documents' rows of an iterable of texts (strings or rows with a `text` column), one at a time: the
    same encoder, truncation and dropping of empty documents; example_index counts the kept rows from 0."""
    from .tokenizer import iter_text_batches

    if not isinstance(max_length, int) or max_length < 3:
        raise ValueError(f"max_length={max_length!r}; allowed: an integer >= 3 (room for two boundary tokens).")
    encoder = DocumentEncoder(tokenizer, "text", with_word_starts, max_length=max_length)
    minimum = minimum_document_tokens(encoder)
    index = 0
    for batch in iter_text_batches(texts, "text", batch_size):
        encoded = encoder.encode(batch)
        for row, ids in enumerate(encoded["input_ids"]):
            if len(ids) <= minimum:
                continue
            item = {"input_ids": np.asarray(ids, np.int32), "length": np.int64(len(ids)),
                    "example_index": np.int64(index)}
            if with_word_starts:
                item["word_starts"] = np.asarray(encoded["word_starts"][row], np.int8)
            index += 1
            yield item


def first_documents(texts, tokenizer, max_length: int, with_word_starts: bool, count: int) -> list[dict]:
    """The first `count` documents of a stream as prepare_documents' rows, in memory (a fixed validation set)."""
    import itertools

    rows = list(itertools.islice(stream_documents(texts, tokenizer, max_length, with_word_starts), count))
    logger.info(f"validation: the first {len(rows):,} documents of the validation stream (truncated to {max_length} "
                "tokens)")
    return rows
