"""Shared fixtures for the data-pipeline tests: the built-in corpus and small tokenizers trained on it."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers/huggingface_hub are imported

import datasets
import pytest

from hf_pretrain.data import builtin, encoding, tokenizer

datasets.disable_progress_bars()


@pytest.fixture(scope="session")
def corpus() -> datasets.Dataset:
    return builtin.load_builtin_corpus()


@pytest.fixture(scope="session")
def small_corpus(corpus) -> datasets.Dataset:
    """About 1,000 documents: enough for tokenizers and packing, fast to run."""
    return corpus.select(range(0, len(corpus), 6))


@pytest.fixture(scope="session")
def wordpiece(corpus):
    return tokenizer.train_tokenizer(corpus, kind="wordpiece", vocab_size=1000)


@pytest.fixture(scope="session")
def bpe(corpus):
    return tokenizer.train_tokenizer(corpus, kind="bpe", vocab_size=1000)


@pytest.fixture(scope="session")
def unigram(corpus):
    # Unigram training is the slow one (EM passes over a large seed vocabulary): ~300 documents keep it to ~1 s.
    return tokenizer.train_tokenizer(corpus.select(range(0, len(corpus), 20)), kind="unigram", vocab_size=512)


@pytest.fixture(scope="session")
def tokenizers_by_kind(wordpiece, bpe, unigram):
    return {"wordpiece": wordpiece, "bpe": bpe, "unigram": unigram}


@pytest.fixture(scope="session")
def encode_documents():
    """Each document of a dataset as the encoder gives it (with its [CLS] ... [SEP], special strings in the text
    as text): the reference that packing and whole-document preparation must keep."""

    def encode(dataset, tokenizer) -> list[list[int]]:
        return encoding.DocumentEncoder(tokenizer, "text", with_word_starts=False).encode(dataset["text"])["input_ids"]

    return encode
