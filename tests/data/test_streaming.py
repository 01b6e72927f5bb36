"""Streaming: the same blocks, positions, word starts and example indices as in-memory packing, whatever
num_proc and batch size."""

from __future__ import annotations

import hashlib

import datasets
import numpy as np

from hf_pretrain.data import packing, streaming

BLOCK = 64


def digest(dataset) -> str:
    hasher = hashlib.sha256()
    for column in ("input_ids", "position_ids", "word_starts"):
        hasher.update(np.ascontiguousarray(np.stack(dataset[column])).tobytes())
    return hasher.hexdigest()


def test_same_ids_whatever_num_proc_and_in_streaming_mode(small_corpus, bpe, tmp_path):
    one, _ = packing.pack_dataset(small_corpus, bpe, BLOCK, with_word_starts=True, cache_dir=tmp_path / "a")
    two, _ = packing.pack_dataset(small_corpus, bpe, BLOCK, num_proc=2, with_word_starts=True,
                                  cache_dir=tmp_path / "b")
    assert digest(one) == digest(two)
    stream = streaming.pack_stream(small_corpus.to_iterable_dataset(), bpe, BLOCK, with_word_starts=True,
                                   batch_size=37)
    rows = list(stream)
    assert stream.report.blocks == len(rows) == len(one)
    streamed = datasets.Dataset.from_list(rows).with_format("numpy")
    assert digest(streamed) == digest(one)
    assert [int(r["example_index"]) for r in rows] == list(range(len(rows)))
