"""Tokenize documents and pack them into fixed-length blocks (or keep them whole, for the autoencoder).

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
    asked for (whole-word and span masking). Tokenization is a batched `datasets.map` over `num_proc`
    processes; the packed result is cached under `cache_dir` keyed by a hash of the dataset's fingerprint, the
    tokenizer and the settings, so a second run with the same inputs loads it without tokenizing. Ids do not
    depend on num_proc. The dataset is returned with the numpy format (rows stack without Python loops).
`pack_stream(texts, tokenizer, block_size, text_column="text", with_word_starts=False, batch_size=1000)
        -> PackedStream`
    The same packing for data larger than memory: `texts` is any iterable of strings or of row dicts (e.g. a
    streaming `datasets.IterableDataset`); the result is an iterable of row dicts with a live `.report`.
    Memory holds one batch of documents plus one partial block. Each batch is encoded by the tokenizers
    library's own thread pool, which uses every core.
`prepare_documents(dataset, tokenizer, max_length, text_column="text", num_proc=1, with_word_starts=False)
        -> PreparedDocuments(dataset, report)`
    Short-document mode: one document per row, truncated to max_length (boundary tokens kept), columns
    `input_ids`, `length`, `example_index` (+ `word_starts`). Batch it with `LengthBucketBatchSampler` and pad
    with `pad_features` (the masking collator pads by itself).
`LengthBucketBatchSampler(lengths, batch_size, seed=0, shuffle=True, drop_last=False, bucket_size_multiplier=50)`
`pad_features(rows, pad_token_id, pad_to_multiple_of=None) -> dict[str, torch.Tensor]`
`PackingReport`, `DocumentsReport`: counts (documents, empty, split/truncated, dropped tokens) + efficiency.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from datasets.arrow_writer import ArrowWriter
from tokenizers import Tokenizer

logger = logging.getLogger(__name__)

# Bump when the layout of packed rows changes, so stale caches are not reused.
PACKED_FORMAT_VERSION = 1
TOKENIZE_BATCH_SIZE = 1000
# Documents read back per packing step; bounds memory to a few tens of MB whatever the corpus size.
PACK_CHUNK_DOCUMENTS = 20_000


def default_cache_dir() -> Path:
    return Path(os.environ.get("HF_PRETRAIN_CACHE", Path.home() / ".cache" / "hf_pretrain"))


# --------------------------------------------------------------------------------------------------- encoding
def boundary_token_ids(tokenizer) -> tuple[int | None, int | None]:
    """The (start, end) ids to add around each document by hand, or (None, None) when the tokenizer's own
    post-processor already adds them (our trained tokenizers do: [CLS] ... [SEP])."""
    if tokenizer.backend_tokenizer.num_special_tokens_to_add(False) > 0:
        return None, None
    for start_role, end_role in (("cls_token_id", "sep_token_id"), ("bos_token_id", "eos_token_id")):
        start, end = getattr(tokenizer, start_role, None), getattr(tokenizer, end_role, None)
        if start is not None and end is not None:
            return start, end
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is not None:
        return None, eos
    raise ValueError(
        f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} neither adds boundary tokens nor has cls/sep or "
        "bos/eos tokens; packed documents would run together. Add e.g. cls_token and sep_token."
    )


def working_tokenizer_json(tokenizer, max_length: int | None) -> str:
    """The backend as JSON, set up for document encoding: no padding, truncation only when asked."""
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    if max_length is None:
        backend.no_truncation()
    else:
        backend.enable_truncation(max_length)
    return backend.to_str()


def word_start_flags(word_ids: list[int | None]) -> list[int]:
    """1 where a new word begins (special tokens count as their own word), from the fast tokenizer's word ids —
    never from "##", so it works for WordPiece, byte-level BPE and Unigram alike."""
    flags = []
    previous = object()
    for word in word_ids:
        flags.append(1 if word is None or word != previous else 0)
        previous = word
    return flags


class DocumentEncoder:
    """Batched `datasets.map` function: texts -> input_ids (+ word_starts, truncation flags). Picklable for
    num_proc: it carries the tokenizer as JSON and rebuilds the backend once per process."""

    def __init__(self, tokenizer, text_column: str, with_word_starts: bool, max_length: int | None = None):
        self.tokenizer_json = working_tokenizer_json(tokenizer, max_length)
        self.start_id, self.end_id = boundary_token_ids(tokenizer)
        self.text_column = text_column
        self.with_word_starts = with_word_starts
        self.max_length = max_length
        self._backend = None

    def __getstate__(self):
        return {**self.__dict__, "_backend": None}

    @property
    def backend(self) -> Tokenizer:
        if self._backend is None:
            self._backend = Tokenizer.from_str(self.tokenizer_json)
            # Special-token strings inside the text (a docstring that mentions "[MASK]") are plain text, not
            # control tokens. The flag is not part of the JSON, so it is set on every rebuilt backend.
            self._backend.encode_special_tokens = True
        return self._backend

    def fingerprint(self) -> str:
        settings = (self.tokenizer_json, self.start_id, self.end_id, self.with_word_starts, self.max_length)
        return hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:16]

    def encode(self, texts: list[str]) -> dict[str, list]:
        # Offsets and word ids cost time; the fast path skips them when no one needs them.
        needs_details = self.with_word_starts or self.max_length is not None
        encodings = self.backend.encode_batch(texts) if needs_details else self.backend.encode_batch_fast(texts)
        wrap = self.start_id is not None or self.end_id is not None
        input_ids, word_starts, truncated = [], [], []
        for encoding in encodings:
            ids = encoding.ids
            if wrap:
                ids = wrap_with_boundaries(ids, self.start_id, self.end_id, self.max_length)
            input_ids.append(ids)
            if self.with_word_starts:
                flags = word_start_flags(encoding.word_ids)
                if wrap:
                    flags = wrap_with_boundaries(flags, 1 if self.start_id is not None else None,
                                                 1 if self.end_id is not None else None, self.max_length)
                word_starts.append(flags)
            if self.max_length is not None:
                truncated.append(bool(encoding.overflowing))
        columns = {"input_ids": input_ids}
        if self.with_word_starts:
            columns["word_starts"] = word_starts
        if self.max_length is not None:
            columns["truncated"] = truncated
        return columns

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        return self.encode([text if isinstance(text, str) else "" for text in batch[self.text_column]])


def wrap_with_boundaries(values: list, start, end, max_length: int | None) -> list:
    inner_room = None if max_length is None else max_length - (start is not None) - (end is not None)
    inner = values if inner_room is None else values[:inner_room]
    return ([start] if start is not None else []) + list(inner) + ([end] if end is not None else [])


def encoded_features(with_word_starts: bool, with_truncation: bool) -> datasets.Features:
    features = {"input_ids": datasets.List(datasets.Value("int32"))}
    if with_word_starts:
        features["word_starts"] = datasets.List(datasets.Value("int8"))
    if with_truncation:
        features["truncated"] = datasets.Value("bool")
    return datasets.Features(features)


def tokenize_dataset(dataset: datasets.Dataset, encoder: DocumentEncoder, num_proc: int) -> datasets.Dataset:
    if encoder.text_column not in dataset.column_names:
        raise ValueError(
            f"text_column={encoder.text_column!r} is not a column of the dataset; columns: {dataset.column_names}."
        )
    if not isinstance(num_proc, int) or num_proc < 1:
        raise ValueError(f"num_proc={num_proc!r}; allowed: an integer >= 1.")
    return dataset.map(
        encoder,
        batched=True,
        batch_size=TOKENIZE_BATCH_SIZE,
        num_proc=num_proc if num_proc > 1 and len(dataset) >= num_proc else None,
        remove_columns=dataset.column_names,
        features=encoded_features(encoder.with_word_starts, encoder.max_length is not None),
        # Our own fingerprint: datasets' hasher cannot hash a tokenizer stably, and this one names what matters.
        new_fingerprint=hashlib.sha256(f"{dataset._fingerprint}-{encoder.fingerprint()}".encode()).hexdigest()[:16],
        desc="Tokenizing",
    )


# --------------------------------------------------------------------------------------------------- packing
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
    def efficiency(self) -> float:
        """Real tokens / slots in the blocks: no padding is ever added, so this is 1.0 when any block exists."""
        return self.packed_tokens / (self.blocks * self.block_size) if self.blocks else 0.0

    @property
    def kept_fraction(self) -> float:
        """Share of all tokens that made it into a block (only the last partial block is lost)."""
        return self.packed_tokens / self.tokens if self.tokens else 0.0

    def summary(self) -> str:
        return (
            f"packed {self.documents:,} documents ({self.tokens:,} tokens) into {self.blocks:,} blocks of "
            f"{self.block_size}: efficiency {self.efficiency:.1%} (real tokens / slots), kept {self.kept_fraction:.2%}; "
            f"{self.split_documents:,} documents split across rows, {self.empty_documents:,} empty documents "
            f"dropped, {self.dropped_tokens:,} tokens of the last partial block dropped"
            + (" [from cache]" if self.from_cache else "")
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "efficiency": self.efficiency, "kept_fraction": self.kept_fraction}


@dataclass
class PackedBlocks:
    input_ids: np.ndarray  # (n, block_size) int32
    position_ids: np.ndarray  # (n, block_size) int32
    word_starts: np.ndarray | None  # (n, block_size) int8


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
        keep = lengths > self.min_document_tokens
        if not keep.all():
            self.report.empty_documents += int((~keep).sum())
            token_keep = np.repeat(keep, lengths)
            flat_ids = flat_ids[token_keep]
            flat_word_starts = flat_word_starts[token_keep] if flat_word_starts is not None else None
            lengths = lengths[keep]
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


def minimum_document_tokens(encoder: DocumentEncoder) -> int:
    """How many tokens an empty document still has (its boundary tokens)."""
    return len(encoder.encode([""])["input_ids"][0])


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
            "(use pack_stream for an IterableDataset or any iterable of texts)."
        )
    encoder = DocumentEncoder(tokenizer, text_column, with_word_starts)
    folder = Path(cache_dir or default_cache_dir()) / "packed" / pack_cache_key(dataset, encoder, block_size)
    if use_cache and (folder / "COMPLETE").exists():
        report = PackingReport(**json.loads((folder / "report.json").read_text()))
        report.from_cache = True
        logger.info(report.summary())
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
    logger.info(report.summary())
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


# --------------------------------------------------------------------------------------------------- streaming
def iter_text_batches(texts: Iterable, text_column: str, batch_size: int) -> Iterator[list[str]]:
    batch = []
    for item in texts:
        text = item[text_column] if isinstance(item, dict) else item
        if not isinstance(text, str):
            raise ValueError(
                f"texts yields {type(text).__name__} values; expected str (or dicts with a {text_column!r} str)."
            )
        batch.append(text)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


class PackedStream:
    """Iterable of packed row dicts (numpy arrays) from a stream of texts; `.report` is updated as it goes and
    final once iteration ends. Each new iteration starts over from the texts."""

    def __init__(self, texts: Iterable, tokenizer, block_size: int, text_column: str = "text",
                 with_word_starts: bool = False, batch_size: int = TOKENIZE_BATCH_SIZE):
        if not isinstance(block_size, int) or block_size < 2:
            raise ValueError(f"block_size={block_size!r}; allowed: an integer >= 2.")
        if isinstance(texts, str):
            raise ValueError("texts is a single string; pass an iterable of documents.")
        self.texts = texts
        self.encoder = DocumentEncoder(tokenizer, text_column, with_word_starts)
        self.block_size = block_size
        self.text_column = text_column
        self.batch_size = batch_size
        self.report = PackingReport(block_size=block_size)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        packer = BlockPacker(self.block_size, min_document_tokens=minimum_document_tokens(self.encoder))
        self.report = packer.report
        index = 0
        for texts in iter_text_batches(self.texts, self.text_column, self.batch_size):
            encoded = self.encoder.encode(texts)
            lengths = np.fromiter((len(ids) for ids in encoded["input_ids"]), np.int64, len(texts))
            ids = np.fromiter((i for ids in encoded["input_ids"] for i in ids), np.int32, int(lengths.sum()))
            word_starts = None
            if self.encoder.with_word_starts:
                word_starts = np.fromiter((f for flags in encoded["word_starts"] for f in flags), np.int8, len(ids))
            blocks = packer.add(ids, lengths, word_starts)
            for row in range(len(blocks.input_ids)):
                item = {"input_ids": blocks.input_ids[row], "position_ids": blocks.position_ids[row],
                        "example_index": np.int64(index)}
                if blocks.word_starts is not None:
                    item["word_starts"] = blocks.word_starts[row]
                index += 1
                yield item
        packer.finish()
        logger.info(self.report.summary())


def pack_stream(texts: Iterable, tokenizer, block_size: int, text_column: str = "text",
                with_word_starts: bool = False, batch_size: int = TOKENIZE_BATCH_SIZE) -> PackedStream:
    """Pack a stream of texts larger than memory (see module doc)."""
    return PackedStream(texts, tokenizer, block_size, text_column, with_word_starts, batch_size)


# --------------------------------------------------------------------------------------------------- documents
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
    logger.info(report.summary())
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


def pad_features(rows: list[dict], pad_token_id: int, pad_to_multiple_of: int | None = None) -> dict[str, torch.Tensor]:
    """Stack rows into (B, L) long tensors, padding on the right. Adds `attention_mask` only when some row was
    padded; padded `position_ids`/`word_starts` get 0, `example_index` is kept as (B,)."""
    if not rows:
        raise ValueError("rows is empty; a batch needs at least one example.")
    if pad_token_id is None:
        raise ValueError("pad_token_id is None; the tokenizer needs a pad token to batch rows of unequal length.")
    lengths = [len(row["input_ids"]) for row in rows]
    longest = max(lengths)
    width = longest if not pad_to_multiple_of else -(-longest // pad_to_multiple_of) * pad_to_multiple_of
    batch: dict[str, torch.Tensor] = {}
    for name in ("input_ids", "position_ids", "word_starts"):
        if name not in rows[0]:
            continue
        fill = pad_token_id if name == "input_ids" else 0
        if all(length == width for length in lengths):
            batch[name] = torch.as_tensor(np.stack([np.asarray(row[name]) for row in rows])).long()
            continue
        stacked = torch.full((len(rows), width), fill, dtype=torch.long)
        for i, row in enumerate(rows):
            stacked[i, : lengths[i]] = torch.as_tensor(np.asarray(row[name]))
        batch[name] = stacked
    if any(length != width for length in lengths):
        batch["attention_mask"] = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
    if "example_index" in rows[0]:
        batch["example_index"] = torch.as_tensor(np.asarray([int(row["example_index"]) for row in rows]))
    return batch
