"""The data pipeline: text sources -> tokenizer -> packed blocks (or whole documents) -> masked-LM noise.

    sources.load_text_sources(...)        files / Hub dataset / built-in corpus, cleaned, with a validation split
    readers.read_rows(...)                tolerant JSON Lines / CSV readers (malformed rows marked, not fatal)
    cleaning.clean_dataset(...)           dirty input made harmless and counted (CleaningReport)
    builtin.load_builtin_corpus()         standard-library docstrings (offline, deterministic)
    builtin.load_builtin_task()           labeled task derived from it (train/test; test held out of the corpus)
    tokenizer.train_tokenizer(...)        WordPiece / byte-level BPE / Unigram, saved folders load with AutoTokenizer
    tokenizer.load_tokenizer(path_or_id)
    encoding.DocumentEncoder(...)         texts -> input_ids (+ word starts), the one encoder of the modules below
    packing.pack_dataset(...)             batched, cached, multi-process tokenization + packing into blocks
    streaming.pack_stream(...)            the same for data larger than memory
    documents.prepare_documents(...)      one document per row (denoising autoencoder), LengthBucketBatchSampler
    collation.pad_features(...)           rows -> padded tensors (IGNORE_INDEX: the label the loss skips)
    masking.MaskingCollator(...)          MLM noise as a pure function of (seed, epoch, example_index)
    noising.DenoisingCollator(...)        denoising-autoencoder noise, the same way (randomness.py: the seeding)
    features.load_feature_files(...)      float vectors (.npy, csv, parquet, jsonl) for the feature autoencoder;
    features.load_digits_features()       scikit-learn's digits (optional dependency), split_features, FeatureDataset

Each module's docstring documents its public API.
"""

from .builtin import builtin_task_test_texts, load_builtin_corpus, load_builtin_task
from .collation import IGNORE_INDEX, pad_features
from .documents import DocumentsReport, LengthBucketBatchSampler, PreparedDocuments, prepare_documents
from .masking import MaskingCollator
from .packing import PackedDataset, PackingReport, pack_dataset
from .cleaning import CleaningReport
from .sources import TextSources, load_text_sources, resolve_files
from .streaming import PackedStream, pack_stream
from .tokenizer import (
    DAE_SPECIAL_TOKENS,
    MLM_SPECIAL_TOKENS,
    TOKENIZER_KINDS,
    load_tokenizer,
    special_tokens_for,
    train_tokenizer,
)

__all__ = [
    "CleaningReport",
    "DAE_SPECIAL_TOKENS",
    "DocumentsReport",
    "IGNORE_INDEX",
    "LengthBucketBatchSampler",
    "MLM_SPECIAL_TOKENS",
    "MaskingCollator",
    "PackedDataset",
    "PackedStream",
    "PackingReport",
    "PreparedDocuments",
    "TOKENIZER_KINDS",
    "TextSources",
    "builtin_task_test_texts",
    "load_builtin_corpus",
    "load_builtin_task",
    "load_text_sources",
    "load_tokenizer",
    "pack_dataset",
    "pack_stream",
    "pad_features",
    "prepare_documents",
    "resolve_files",
    "special_tokens_for",
    "train_tokenizer",
]
