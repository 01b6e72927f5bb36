"""Whole documents for the denoising autoencoder: truncation that keeps the boundary tokens, counts, and
length-bucketed batches."""

from __future__ import annotations

import numpy as np

from hf_pretrain.data import documents

def test_prepare_documents_truncates_keeps_boundaries_and_counts(small_corpus, unigram, encode_documents):
    max_length = 24
    prepared, report = documents.prepare_documents(small_corpus, unigram, max_length)
    full = encode_documents(small_corpus, unigram)
    assert report.truncated_documents == sum(len(ids) > max_length for ids in full) > 0
    assert report.documents == len(prepared) == len(small_corpus)
    for row, ids in zip(prepared, full):
        expected = ids if len(ids) <= max_length else ids[: max_length - 1] + [unigram.sep_token_id]
        assert row["input_ids"].tolist() == expected
        assert row["length"] == len(expected)


def test_length_buckets_cover_everything_once_and_reduce_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 200, size=1000)
    sampler = documents.LengthBucketBatchSampler(lengths, batch_size=16, seed=3, bucket_size_multiplier=20)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 63
    assert sorted(i for batch in batches for i in batch) == list(range(1000))
    assert batches == list(sampler), "same epoch, same batches"
    sampler.set_epoch(1)
    assert list(sampler) != batches
    padded = sum(len(b) * lengths[b].max() for b in batches)
    random_padded = sum(16 * lengths[rng.permutation(1000)[:16]].max() for _ in batches)
    assert lengths.sum() / padded > 0.9 > lengths.sum() / random_padded
