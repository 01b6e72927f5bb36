"""Tokenize + pack: document boundaries, position ids, remainder handling, caching, determinism, streaming,
and the short-document mode with length-bucketed batches."""

from __future__ import annotations

import hashlib

import datasets
import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from hf_pretrain.data import packing

BLOCK = 64


def reference_token_stream(dataset, tokenizer) -> list[list[int]]:
    """Each document as the tokenizer encodes it (with its [CLS] ... [SEP]), special strings in text as text."""
    encoder = packing.DocumentEncoder(tokenizer, "text", with_word_starts=False)
    return [ids for ids in encoder.encode(dataset["text"])["input_ids"]]


def expected_positions(row_starts_document: np.ndarray) -> np.ndarray:
    positions, current = [], 0
    for column, starts in enumerate(row_starts_document):
        current = 0 if starts or column == 0 else current + 1
        positions.append(current)
    return np.array(positions)


def test_blocks_hold_every_token_in_order_with_restarting_positions(small_corpus, wordpiece, tmp_path):
    packed, report = packing.pack_dataset(small_corpus, wordpiece, BLOCK, cache_dir=tmp_path)
    documents = reference_token_stream(small_corpus, wordpiece)
    stream = np.concatenate([np.array(ids) for ids in documents])
    starts = np.zeros(len(stream), bool)
    starts[np.cumsum([len(d) for d in documents]) - [len(d) for d in documents]] = True
    ids = np.stack(packed["input_ids"])
    positions = np.stack(packed["position_ids"])
    assert ids.shape == (len(stream) // BLOCK, BLOCK)
    # Nothing lost or reordered: only the final partial block is missing, and it is reported.
    assert np.array_equal(ids.reshape(-1), stream[: ids.size])
    assert report.dropped_tokens == len(stream) - ids.size < BLOCK
    assert report.tokens == len(stream) and report.documents == len(small_corpus)
    assert report.efficiency == 1.0 and report.kept_fraction == ids.size / len(stream)
    # Positions restart at every document start and at every row start (a cut document continues as new).
    for row in range(len(ids)):
        assert np.array_equal(positions[row], expected_positions(starts[row * BLOCK : (row + 1) * BLOCK]))
    # Each document is framed by [CLS] ... [SEP]; positions 0 that are not row starts sit on [CLS].
    inner_starts = positions[:, 1:] == 0
    assert np.all(ids[:, 1:][inner_starts] == wordpiece.cls_token_id)
    assert np.array_equal(np.asarray(packed["example_index"]), np.arange(len(ids)))
    cut_documents = {int(np.searchsorted(np.flatnonzero(starts), row * BLOCK, "right")) for row in range(len(ids))
                     if not starts[row * BLOCK]}
    assert report.split_documents == len(cut_documents) > 0
    assert "efficiency 100.0%" in report.summary()


def test_remainder_is_carried_across_chunks_not_dropped_per_batch(monkeypatch, small_corpus, wordpiece, tmp_path):
    # Tiny chunks: a per-chunk remainder drop (run_mlm's group_texts) would lose far more than one block.
    monkeypatch.setattr(packing, "PACK_CHUNK_DOCUMENTS", 7)
    packed, report = packing.pack_dataset(small_corpus, wordpiece, BLOCK, cache_dir=tmp_path)
    assert report.dropped_tokens < BLOCK
    assert report.blocks == report.tokens // BLOCK == len(packed)


def test_second_run_is_served_from_cache(monkeypatch, small_corpus, wordpiece, tmp_path):
    first, first_report = packing.pack_dataset(small_corpus, wordpiece, BLOCK, cache_dir=tmp_path)
    assert not first_report.from_cache

    def no_work(*args, **kwargs):
        raise AssertionError("tokenized again although inputs and settings are unchanged")

    monkeypatch.setattr(packing.DocumentEncoder, "encode", no_work)
    again, report = packing.pack_dataset(small_corpus, wordpiece, BLOCK, cache_dir=tmp_path)
    assert report.from_cache and report.blocks == first_report.blocks
    assert np.array_equal(np.stack(again["input_ids"]), np.stack(first["input_ids"]))
    # A different setting is a different cache entry (and does the work, which now fails loudly).
    with pytest.raises(AssertionError, match="tokenized again"):
        packing.pack_dataset(small_corpus, wordpiece, BLOCK * 2, cache_dir=tmp_path)


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
    stream = packing.pack_stream(small_corpus.to_iterable_dataset(), bpe, BLOCK, with_word_starts=True,
                                 batch_size=37)
    rows = list(stream)
    assert stream.report.blocks == len(rows) == len(one)
    streamed = datasets.Dataset.from_list(rows).with_format("numpy")
    assert digest(streamed) == digest(one)
    assert [int(r["example_index"]) for r in rows] == list(range(len(rows)))


@pytest.mark.parametrize("kind", ["wordpiece", "bpe", "unigram"])
def test_word_starts_follow_the_tokenizers_words(kind, tokenizers_by_kind):
    tokenizer = tokenizers_by_kind[kind]
    text = "Return the frobnicated value, unchanged."
    encoder = packing.DocumentEncoder(tokenizer, "text", with_word_starts=True)
    encoded = encoder.encode([text])
    word_ids = tokenizer(text).word_ids()
    expected = [1 if w is None or i == 0 or w != word_ids[i - 1] else 0 for i, w in enumerate(word_ids)]
    assert encoded["word_starts"][0] == expected
    assert sum(expected) >= 6  # at least the five words and the comma/period split, plus specials


def test_special_token_strings_in_text_are_encoded_as_text(wordpiece):
    encoder = packing.DocumentEncoder(wordpiece, "text", with_word_starts=False)
    ids = encoder.encode(["write [MASK] here"])["input_ids"][0]
    assert ids[0] == wordpiece.cls_token_id and ids[-1] == wordpiece.sep_token_id
    assert wordpiece.mask_token_id not in ids


def test_empty_documents_are_dropped_and_counted(wordpiece, tmp_path):
    data = datasets.Dataset.from_dict({"text": ["", "one real document here", "\u200b", "another one"] * 20})
    packed, report = packing.pack_dataset(data, wordpiece, 16, cache_dir=tmp_path)
    assert report.empty_documents >= 20  # "" always; the zero-width space normalizes to nothing in WordPiece
    assert report.documents == 80


def test_tokenizer_without_boundary_post_processor_gets_wrapped_by_hand(tmp_path):
    vocab = {"[PAD]": 0, "[UNK]": 1, "<s>": 2, "</s>": 3, "[MASK]": 4, "a": 5, "b": 6}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    plain = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]",
                                    bos_token="<s>", eos_token="</s>", mask_token="[MASK]")
    data = datasets.Dataset.from_dict({"text": ["a b a", "b b", "a"]})
    packed, report = packing.pack_dataset(data, plain, 4, cache_dir=tmp_path)
    assert np.stack(packed["input_ids"]).reshape(-1).tolist() == [2, 5, 6, 5, 3, 2, 6, 6, 3, 2, 5, 3]
    positions = np.stack(packed["position_ids"])
    assert positions.tolist() == [[0, 1, 2, 3], [0, 0, 1, 2], [0, 0, 1, 2]]


def test_bad_arguments_are_named(small_corpus, wordpiece, tmp_path):
    with pytest.raises(ValueError, match="block_size=1"):
        packing.pack_dataset(small_corpus, wordpiece, 1, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="text_column='body'.*columns"):
        packing.pack_dataset(small_corpus, wordpiece, BLOCK, text_column="body", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="num_proc=0"):
        packing.pack_dataset(small_corpus, wordpiece, BLOCK, num_proc=0, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="pack_stream"):
        packing.pack_dataset(small_corpus.to_iterable_dataset(), wordpiece, BLOCK, cache_dir=tmp_path)


# ------------------------------------------------------------------------------------------ short documents
def test_prepare_documents_truncates_keeps_boundaries_and_counts(small_corpus, unigram):
    max_length = 24
    documents, report = packing.prepare_documents(small_corpus, unigram, max_length)
    full = reference_token_stream(small_corpus, unigram)
    assert report.truncated_documents == sum(len(ids) > max_length for ids in full) > 0
    assert report.documents == len(documents) == len(small_corpus)
    for row, ids in zip(documents, full):
        expected = ids if len(ids) <= max_length else ids[: max_length - 1] + [unigram.sep_token_id]
        assert row["input_ids"].tolist() == expected
        assert row["length"] == len(expected)


def test_length_buckets_cover_everything_once_and_reduce_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 200, size=1000)
    sampler = packing.LengthBucketBatchSampler(lengths, batch_size=16, seed=3, bucket_size_multiplier=20)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 63
    assert sorted(i for batch in batches for i in batch) == list(range(1000))
    assert batches == list(sampler), "same epoch, same batches"
    sampler.set_epoch(1)
    assert list(sampler) != batches
    padded = sum(len(b) * lengths[b].max() for b in batches)
    random_padded = sum(16 * lengths[rng.permutation(1000)[:16]].max() for _ in batches)
    assert lengths.sum() / padded > 0.9 > lengths.sum() / random_padded


def test_pad_features_adds_attention_mask_only_when_padding():
    rows = [{"input_ids": np.array([2, 7, 3]), "example_index": 0}, {"input_ids": np.array([2, 3]), "example_index": 1}]
    batch = packing.pad_features(rows, pad_token_id=0, pad_to_multiple_of=4)
    assert batch["input_ids"].tolist() == [[2, 7, 3, 0], [2, 3, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 0, 0]]
    assert batch["input_ids"].dtype == torch.long
    same = packing.pad_features([rows[0], rows[0]], pad_token_id=0)
    assert "attention_mask" not in same


def test_data_shorter_than_one_block_warns(wordpiece, tmp_path):
    with pytest.warns(UserWarning, match="no block.*block_size=64"):
        packed, report = packing.pack_dataset(datasets.Dataset.from_dict({"text": ["tiny"]}), wordpiece, 64,
                                              cache_dir=tmp_path)
    assert len(packed) == 0 and report.dropped_tokens == report.tokens == len(wordpiece("tiny")["input_ids"])
