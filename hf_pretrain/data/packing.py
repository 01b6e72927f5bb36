"""Pack tokenized documents into fixed-length blocks, cached on disk.

Why not run_mlm.py's `map(tokenize)` + `map(group_texts)`: group_texts concatenates inside each map batch and
drops every batch's remainder (up to block_size-1 tokens per 1,000 documents), and it forgets where documents
began. Here the tokenized documents are read back in order and cut with one remainder carried across chunks, so
only the final partial block is dropped (and counted); every row also gets `position_ids` that restart at 0 at
each document start and at each row start, which is how the model keeps attention inside documents.

Public API
----------
`pack_dataset(dataset, tokenizer, block_size, text_column="text", num_proc=1, with_word_starts=False,
              cache_dir=None, use_cache=True) -> PackedDataset(dataset, report)`
    Rows: `input_ids` and `position_ids` (block_size each, int32), `example_index` (int64, the row number: the
    masking collator derives each row's noise from it), and `word_starts` (int8, 1 where a word begins) when
    asked for (whole-word and span masking). Tokenization (encoding.py) is a batched `datasets.map` over
    `num_proc` processes; the packed result is cached under `cache_dir` keyed by a hash of the dataset's
    fingerprint, the tokenizer and the settings, so a second run with the same inputs loads it without
    tokenizing. Ids do not depend on num_proc. The dataset is returned with the numpy format (rows stack without
    Python loops).
`BlockPacker(block_size, min_document_tokens)`: the cutting itself, shared with streaming.py (`pack_stream`,
    the same packing for data larger than memory).
`PackingReport`: counts (documents, empty, split, dropped tokens) and the share of tokens kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets.arrow_writer import ArrowWriter

from .encoding import DocumentEncoder, minimum_document_tokens, tokenize_dataset

logger = logging.getLogger(__name__)

# Bump when the layout of packed rows changes, so stale caches are not reused.
PACKED_FORMAT_VERSION = 1
# Documents read back per packing step; bounds memory to a few tens of MB whatever the corpus size.
PACK_CHUNK_DOCUMENTS = 20_000


def default_cache_dir() -> Path:
    return Path(os.environ.get("HF_PRETRAIN_CACHE", Path.home() / ".cache" / "hf_pretrain"))


@dataclass
class PackingReport:
    """What packing did with the documents; `summary()` is the line to print."""

    block_size: int
    documents: int = 0
    empty_documents: int = 0  # dropped: nothing left but boundary tokens
    tokens: int = 0  # tokens of the kept documents, boundary tokens included
    blocks: int = 0
    split_documents: int = 0  # documents cut across rows; each piece restarts its positions at 0
    dropped_tokens: int = 0  # the final partial block (shorter than block_size), not padded
    from_cache: bool = False

    @property
    def packed_tokens(self) -> int:
        return self.blocks * self.block_size

    @property
    def kept_fraction(self) -> float:
        """Share of the kept documents' tokens that made it into a block: below 1 by the dropped last partial
        block. (Blocks are never padded, so every slot holds a real token; there is no padding share to report.)"""
        return self.packed_tokens / self.tokens if self.tokens else 0.0

    def summary(self) -> str:
        return (
            f"packed {self.documents:,} documents ({self.tokens:,} tokens) into {self.blocks:,} blocks of "
            f"{self.block_size} (no padding), kept {self.kept_fraction:.2%}; "
            f"{self.split_documents:,} documents split across rows, {self.empty_documents:,} empty documents "
            f"dropped, {self.dropped_tokens:,} tokens of the last partial block dropped"
            + (" [from cache]" if self.from_cache else "")
        )


@dataclass
class PackedBlocks:
    input_ids: np.ndarray  # (n, block_size) int32
    position_ids: np.ndarray  # (n, block_size) int32
    word_starts: np.ndarray | None  # (n, block_size) int8


def drop_empty_documents(report, flat_ids: np.ndarray, lengths: np.ndarray, flat_word_starts, min_tokens: int):
    """(ids, lengths, word starts) without the documents of at most `min_tokens` tokens (only their boundary tokens),
    counted in `report.empty_documents`."""
    keep = lengths > min_tokens
    if keep.all():
        return flat_ids, lengths, flat_word_starts
    report.empty_documents += int((~keep).sum())
    token_keep = np.repeat(keep, lengths)
    return (flat_ids[token_keep], lengths[keep],
            flat_word_starts[token_keep] if flat_word_starts is not None else None)


@dataclass
class BlockPacker:
    """Cuts a stream of tokenized documents into blocks, carrying the remainder from one chunk to the next.

    Vectorized with numpy over whole chunks: a Python loop per token would dominate the run time."""

    block_size: int
    min_document_tokens: int  # documents this short hold only boundary tokens and are dropped
    report: PackingReport = field(init=False)
    _ids: np.ndarray = field(init=False)
    _starts: np.ndarray = field(init=False)  # True at the first token of each document
    _document: np.ndarray = field(init=False)  # running document number of each token
    _word_starts: np.ndarray | None = field(init=False, default=None)
    _documents_seen: int = field(init=False, default=0)
    _last_split_document: int = field(init=False, default=-1)

    def __post_init__(self):
        if not isinstance(self.block_size, int) or self.block_size < 2:
            raise ValueError(f"block_size={self.block_size!r}; allowed: an integer >= 2.")
        self.report = PackingReport(block_size=self.block_size)
        self._ids = np.empty(0, np.int32)
        self._starts = np.empty(0, bool)
        self._document = np.empty(0, np.int64)

    def add(self, flat_ids: np.ndarray, lengths: np.ndarray, flat_word_starts: np.ndarray | None = None) -> PackedBlocks:
        """Append documents (concatenated ids + per-document lengths); return the blocks now complete."""
        lengths = np.asarray(lengths, np.int64)
        self.report.documents += len(lengths)
        flat_ids, lengths, flat_word_starts = drop_empty_documents(
            self.report, flat_ids, lengths, flat_word_starts, self.min_document_tokens)
        self.report.tokens += int(lengths.sum())
        starts = np.zeros(len(flat_ids), bool)
        starts[np.cumsum(lengths) - lengths] = True
        document = self._documents_seen + np.repeat(np.arange(len(lengths)), lengths)
        self._documents_seen += len(lengths)
        self._ids = np.concatenate([self._ids, flat_ids.astype(np.int32, copy=False)])
        self._starts = np.concatenate([self._starts, starts])
        self._document = np.concatenate([self._document, document])
        if flat_word_starts is not None:
            carried = self._word_starts if self._word_starts is not None else np.empty(0, np.int8)
            self._word_starts = np.concatenate([carried, flat_word_starts.astype(np.int8, copy=False)])
        return self._cut_complete_blocks()

    def _cut_complete_blocks(self) -> PackedBlocks:
        size = self.block_size
        rows = len(self._ids) // size
        used = rows * size
        ids = self._ids[:used].reshape(rows, size)
        starts = self._starts[:used].reshape(rows, size).copy()
        self._count_split_documents(starts[:, 0], self._document[:used:size])
        starts[:, 0] = True  # a row that begins mid-document starts a new "document" for attention
        column = np.arange(size)
        last_start = np.maximum.accumulate(np.where(starts, column, 0), axis=1)
        positions = (column - last_start).astype(np.int32)
        word_starts = None
        if self._word_starts is not None:
            word_starts = self._word_starts[:used].reshape(rows, size).copy()
            word_starts[:, 0] = 1
            self._word_starts = self._word_starts[used:]
        self._ids, self._starts, self._document = self._ids[used:], self._starts[used:], self._document[used:]
        self.report.blocks += rows
        return PackedBlocks(ids, positions, word_starts)

    def _count_split_documents(self, row_begins_document: np.ndarray, row_document: np.ndarray) -> None:
        # A document cut at several row boundaries still counts once.
        for document in np.unique(row_document[~row_begins_document]):
            if document != self._last_split_document:
                self.report.split_documents += 1
                self._last_split_document = int(document)

    def finish(self) -> PackingReport:
        """Drop (and count) the last partial block; return the final report."""
        self.report.dropped_tokens = len(self._ids)
        self._ids = self._ids[:0]
        return self.report


def list_column_arrays(table: pa.Table, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(concatenated values, per-row lengths) of a list column, without going through Python lists."""
    array = table[column].combine_chunks()
    return array.flatten().to_numpy(zero_copy_only=False), pc.list_value_length(array).to_numpy(zero_copy_only=False)


def packed_features(block_size: int, with_word_starts: bool) -> datasets.Features:
    features = {
        "input_ids": datasets.List(datasets.Value("int32"), length=block_size),
        "position_ids": datasets.List(datasets.Value("int32"), length=block_size),
        "example_index": datasets.Value("int64"),
    }
    if with_word_starts:
        features["word_starts"] = datasets.List(datasets.Value("int8"), length=block_size)
    return datasets.Features(features)


def blocks_to_table(blocks: PackedBlocks, first_index: int, features: datasets.Features) -> pa.Table:
    rows, size = blocks.input_ids.shape

    def fixed(values: np.ndarray) -> pa.FixedSizeListArray:
        return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), size)

    columns = {
        "input_ids": fixed(blocks.input_ids),
        "position_ids": fixed(blocks.position_ids),
        "example_index": pa.array(np.arange(first_index, first_index + rows, dtype=np.int64)),
    }
    if blocks.word_starts is not None:
        columns["word_starts"] = fixed(blocks.word_starts)
    return pa.table(columns, schema=features.arrow_schema)


@dataclass
class PackedDataset:
    dataset: datasets.Dataset
    report: PackingReport

    def __iter__(self):  # allows `dataset, report = pack_dataset(...)`
        return iter((self.dataset, self.report))


def pack_cache_key(dataset: datasets.Dataset, encoder: DocumentEncoder, block_size: int) -> str:
    parts = [PACKED_FORMAT_VERSION, dataset._fingerprint, encoder.fingerprint(), block_size]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


def write_packed_blocks(tokenized: datasets.Dataset, encoder: DocumentEncoder, block_size: int, path: Path) -> PackingReport:
    packer = BlockPacker(block_size, min_document_tokens=minimum_document_tokens(encoder))
    features = packed_features(block_size, encoder.with_word_starts)
    written = 0
    with ArrowWriter(features=features, path=str(path)) as writer:
        for table in tokenized.with_format("arrow").iter(batch_size=PACK_CHUNK_DOCUMENTS):
            ids, lengths = list_column_arrays(table, "input_ids")
            word_starts = list_column_arrays(table, "word_starts")[0] if encoder.with_word_starts else None
            blocks = packer.add(ids, lengths, word_starts)
            if len(blocks.input_ids):
                writer.write_table(blocks_to_table(blocks, written, features))
                written += len(blocks.input_ids)
        writer.finalize()
    return packer.finish()

def pack_dataset(
    dataset: datasets.Dataset,
    tokenizer,
    block_size: int,
    text_column: str = "text",
    num_proc: int = 1,
    with_word_starts: bool = False,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> PackedDataset:
    """Tokenize (batched, num_proc processes) and pack into blocks; cached by inputs+settings (module doc)."""
    if not isinstance(block_size, int) or block_size < 2:
        raise ValueError(f"block_size={block_size!r}; allowed: an integer >= 2.")
    if not isinstance(dataset, datasets.Dataset):
        raise ValueError(
            f"dataset is a {type(dataset).__name__}; pack_dataset takes a datasets.Dataset "
            "(use streaming.pack_stream for an IterableDataset or any iterable of texts)."
        )
    encoder = DocumentEncoder(tokenizer, text_column, with_word_starts)
    folder = Path(cache_dir or default_cache_dir()) / "packed" / pack_cache_key(dataset, encoder, block_size)
    if use_cache and (folder / "COMPLETE").exists():
        report = PackingReport(**json.loads((folder / "report.json").read_text()))
        report.from_cache = True
        logger.debug(report.summary())
        return PackedDataset(load_packed_file(folder / "blocks.arrow"), report)
    tokenized = tokenize_dataset(dataset, encoder, num_proc)
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Written to a temporary folder then renamed: an interrupted run never leaves a half cache that looks whole.
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    report = write_packed_blocks(tokenized, encoder, block_size, staging / "blocks.arrow")
    (staging / "report.json").write_text(json.dumps(asdict(report)))
    (staging / "COMPLETE").touch()
    if folder.exists():
        shutil.rmtree(folder)
    staging.rename(folder)
    logger.debug(report.summary())
    warn_if_no_blocks(report)
    return PackedDataset(load_packed_file(folder / "blocks.arrow"), report)


def warn_if_no_blocks(report: PackingReport) -> None:
    if report.blocks == 0:
        warnings.warn(
            f"packing produced no block: the data holds {report.tokens:,} tokens, fewer than block_size="
            f"{report.block_size}; add text or lower block_size.",
            stacklevel=3,
        )


def load_packed_file(path: Path) -> datasets.Dataset:
    return datasets.Dataset.from_file(str(path)).with_format("numpy")
