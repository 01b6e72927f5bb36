"""Packing into blocks: document boundaries, position ids, remainder handling, the report, and the on-disk
cache."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from hf_pretrain.data import encoding, packing

BLOCK = 64


def expected_positions(row_starts_document: np.ndarray) -> np.ndarray:
    positions, current = [], 0
    for column, starts in enumerate(row_starts_document):
        current = 0 if starts or column == 0 else current + 1
        positions.append(current)
    return np.array(positions)


def test_blocks_hold_every_token_in_order_with_restarting_positions(small_corpus, wordpiece, encode_documents,
                                                                   tmp_path):
    packed, report = packing.pack_dataset(small_corpus, wordpiece, BLOCK, cache_dir=tmp_path)
    documents = encode_documents(small_corpus, wordpiece)
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
    assert report.kept_fraction == ids.size / len(stream) < 1.0  # the dropped tail is what is not kept
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
    assert f"kept {report.kept_fraction:.2%}" in report.summary() and "(no padding)" in report.summary()


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

    monkeypatch.setattr(encoding.DocumentEncoder, "encode", no_work)
    again, report = packing.pack_dataset(small_corpus, wordpiece, BLOCK, cache_dir=tmp_path)
    assert report.from_cache and report.blocks == first_report.blocks
    assert np.array_equal(np.stack(again["input_ids"]), np.stack(first["input_ids"]))
    # A different setting is a different cache entry (and does the work, which now fails loudly).
    with pytest.raises(AssertionError, match="tokenized again"):
        packing.pack_dataset(small_corpus, wordpiece, BLOCK * 2, cache_dir=tmp_path)


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


def test_data_shorter_than_one_block_warns(wordpiece, tmp_path):
    with pytest.warns(UserWarning, match="no block.*block_size=64"):
        packed, report = packing.pack_dataset(datasets.Dataset.from_dict({"text": ["tiny"]}), wordpiece, 64,
                                              cache_dir=tmp_path)
    assert len(packed) == 0 and report.dropped_tokens == report.tokens == len(wordpiece("tiny")["input_ids"])


def test_report_counts_what_packing_keeps_and_drops():
    # 3 documents of 5, 0 (boundary tokens only) and 6 tokens into blocks of 4: 2 blocks, 3 tokens dropped.
    packer = packing.BlockPacker(4, min_document_tokens=2)
    blocks = packer.add(np.arange(13), np.array([5, 2, 6]))
    report = packer.finish()
    assert len(blocks.input_ids) == report.blocks == 2
    assert (report.documents, report.empty_documents, report.tokens) == (3, 1, 11)
    assert report.dropped_tokens == 3 and report.packed_tokens + report.dropped_tokens == report.tokens
    assert report.kept_fraction == 8 / 11
    assert report.split_documents == 1  # the 5-token document is cut between rows 1 and 2
