"""data/pipeline.py: a streamed corpus read by several DataLoader workers."""

from __future__ import annotations

import datasets
import pytest
import torch

from hf_pretrain.data.builtin import load_builtin_corpus
from hf_pretrain.data.tokenizer import train_tokenizer
from hf_pretrain.data.pipeline import StreamedBlocks

BLOCK = 32


@pytest.fixture(scope="module")
def texts_and_tokenizer():
    texts = load_builtin_corpus()["text"][:160]
    return texts, train_tokenizer(texts, kind="wordpiece", vocab_size=300)


def read(blocks, workers: int) -> list[tuple[int, tuple]]:
    if workers == 0:
        return [(int(b["example_index"]), tuple(b["input_ids"].tolist())) for b in blocks]
    loader = torch.utils.data.DataLoader(blocks, batch_size=None, num_workers=workers)
    return [(int(b["example_index"]), tuple(b["input_ids"].tolist())) for b in loader]


def real_tokens(read_blocks) -> int:
    return sum(len(ids) for _, ids in read_blocks)


@pytest.mark.parametrize("source", ["sharded datasets stream", "plain list"])
def test_streamed_blocks_are_read_once_across_workers_with_unique_keys(texts_and_tokenizer, source):
    texts, tokenizer = texts_and_tokenizer

    def make():
        stream = (datasets.Dataset.from_dict({"text": texts}).to_iterable_dataset(num_shards=4)
                  if source == "sharded datasets stream" else [{"text": t} for t in texts])
        return StreamedBlocks(stream, tokenizer, block_size=BLOCK, with_word_starts=False)

    alone = read(make(), workers=0)
    two = read(make(), workers=2)
    keys = [key for key, _ in two]
    assert len(keys) == len(set(keys)), "a noise key was used twice"
    assert two == read(make(), workers=2), "not the same blocks and keys on the next pass"
    if source == "plain list":  # every worker reads it whole and keeps its share: exactly the blocks of one reader
        assert sorted(two) == sorted(alone)
    else:  # each worker packs its own shards: every document once (a doubled shard would add a quarter of
        # the tokens), up to one partial block dropped per worker
        assert sorted({k % 2 for k in keys}) == [0, 1], "both workers read"
        assert real_tokens(alone) - 2 * BLOCK < real_tokens(two) <= real_tokens(alone) + BLOCK
