"""A mixture held in memory: the index of (source, block) per training slot, its share bound over every window of
5,000 trained blocks, per-source passes, and the datasets and batch sampler the objective hands the loop."""

from __future__ import annotations

import contextlib

import datasets
import numpy as np
import pytest
import torch

from hf_pretrain.data import mixing
from hf_pretrain.data.mixture import slot_sources
from hf_pretrain.data.packing import pack_dataset
from hf_pretrain.data.pipeline import TextSplits
from hf_pretrain.data.tokenizer import train_tokenizer

WINDOW = 5000


def trained_sources(sampler, epochs: int) -> np.ndarray:
    """The source of every block the sampler hands out over `epochs` epochs, in order (epoch boundaries included)."""
    rows = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        rows.extend(row for batch in sampler for row in batch)
    return np.searchsorted(np.cumsum(sampler.counts), np.asarray(rows), side="right")


@pytest.mark.parametrize("counts, weights", [
    ([900, 40000, 3000], [0.5, 0.3, 0.2]),  # a small source repeats ~50 times an epoch, a large one reads a part
    ([20000, 20000], [9, 1]),  # weights are normalized
    ([5000, 7000, 300, 12000], [0.05, 0.45, 0.2, 0.3]),
])
def test_every_window_of_5000_trained_blocks_holds_each_source_at_its_weight(counts, weights):
    sampler = mixing.MixtureBatchSampler(counts, weights, batch_size=32, seed=1)
    assert sampler.epoch_slots % 32 == 0 and sum(counts) - sampler.epoch_slots < 32
    sources = trained_sources(sampler, epochs=2)  # windows across the epoch boundary too
    assert len(sources) == 2 * sampler.epoch_slots
    # Asked: within 1 point. The Weyl schedule keeps it under a fifth of one (measured 0.06).
    assert mixing.worst_share_error(sources, weights, WINDOW) < 0.002
    # And the bound does not depend on where the run is: slots far into training keep it.
    far, _ = mixing.mixture_index(counts, weights, 10**9, 10**9 + 3 * WINDOW)
    assert mixing.worst_share_error(far, weights, WINDOW) < 0.002


def test_the_loops_own_shuffle_would_break_the_bound():
    """Why the index is trained in order: DataLoader(shuffle=True) draws an epoch's slots at random, so a window is
    a random sample of the epoch and strays by up to ~2 points at weight 0.5 (the shuffle lives in each source)."""
    counts, weights = [900, 40000, 3000], [0.5, 0.3, 0.2]
    sampler = mixing.MixtureBatchSampler(counts, weights, batch_size=32, seed=1)
    rows = sampler.epoch_rows(0)
    shuffled = rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(0)).numpy()]

    def to_source(rows):
        return np.searchsorted(np.cumsum(counts), rows, side="right")

    assert mixing.worst_share_error(to_source(shuffled), weights, WINDOW) > 0.01
    assert mixing.worst_share_error(to_source(rows), weights, WINDOW) < 0.002


def test_each_source_reads_all_its_blocks_before_repeating_each_pass_in_a_new_order():
    counts, weights = [300, 50000], [0.6, 0.4]
    sources, blocks = mixing.mixture_index(counts, weights, 0, 20000, seed=5)
    small = blocks[sources == 0]
    passes = small[: len(small) // 300 * 300].reshape(-1, 300)
    assert len(passes) >= 30
    assert all(sorted(one) == list(range(300)) for one in passes)  # every block once per pass
    assert len({tuple(one) for one in passes}) == len(passes)  # a new order each pass
    large = blocks[sources == 1]
    assert len(np.unique(large)) == len(large), "a source read less than its blocks' share never repeats a block"
    # The next range of slots goes on where this one stopped (an epoch continues the previous one).
    next_sources, next_blocks = mixing.mixture_index(counts, weights, 20000, 40000, seed=5)
    both = np.concatenate([large, next_blocks[next_sources == 1]])
    assert len(np.unique(both)) == len(both)


def test_slot_counts_are_exact_anywhere_in_a_run():
    for weights in ([0.5, 0.3, 0.2], [1, 2, 1], [0.05, 0.45, 0.2, 0.3], [1e-6, 1]):
        for start in (0, 12345, 10**12):
            sources = slot_sources(np.arange(start, start + 30011), weights)
            counted = mixing.slot_counts(start + 30011, weights) - mixing.slot_counts(start, weights)
            assert list(counted) == list(np.bincount(sources, minlength=len(weights))), (weights, start)


def test_the_index_is_a_pure_function_of_the_slots():
    counts, weights = [700, 2000, 90], [1, 2, 1]
    whole = mixing.mixture_index(counts, weights, 0, 9000, seed=2)
    parts = [mixing.mixture_index(counts, weights, a, b, seed=2) for a, b in ((0, 1234), (1234, 5000), (5000, 9000))]
    for column in (0, 1):
        assert np.array_equal(whole[column], np.concatenate([part[column] for part in parts]))
    other_seed = mixing.mixture_index(counts, weights, 0, 9000, seed=3)
    assert np.array_equal(whole[0], other_seed[0]) and not np.array_equal(whole[1], other_seed[1])
    sampler = mixing.MixtureBatchSampler(counts, weights, batch_size=8, seed=2)
    sampler.set_epoch(1)
    first, again = list(sampler), list(sampler)
    assert first == again and len(first) == len(sampler) == sampler.epoch_slots // 8
    sources, blocks = mixing.mixture_index(counts, weights, sampler.epoch_slots, 2 * sampler.epoch_slots, seed=2)
    assert [row for batch in first for row in batch] == list(sampler.offsets[sources] + blocks)


def test_processes_take_the_batches_in_turn_and_together_train_the_samplers_sequence():
    from accelerate.data_loader import BatchSamplerShard

    sampler = mixing.MixtureBatchSampler([500, 801], [0.5, 0.5], batch_size=4, seed=0)
    assert len(sampler) == 325  # odd: the last batch is no whole round of 2 processes
    shards = [list(BatchSamplerShard(sampler, num_processes=2, process_index=rank)) for rank in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 162, "every process takes as many batches (no hang at epoch end)"
    interleaved = [batch for pair in zip(*shards) for batch in pair]
    assert interleaved == list(sampler)[:324]
    # Three processes: each epoch ends with a round they cannot share, dropped; windows across the gap stay even.
    sampler = mixing.MixtureBatchSampler([3000, 4001], [0.7, 0.3], batch_size=4, seed=0)
    trained = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        shards = [list(BatchSamplerShard(sampler, num_processes=3, process_index=rank)) for rank in range(3)]
        trained += [row for batches in zip(*shards) for batch in batches for row in batch]
    assert len(trained) == 3 * (len(sampler) // 3 * 3 * 4) < 3 * sampler.epoch_slots
    sources = np.searchsorted(np.cumsum(sampler.counts), trained, side="right")
    assert mixing.worst_share_error(sources, [0.7, 0.3], WINDOW) < 0.002


def test_bad_mixtures_are_refused():
    with pytest.raises(ValueError, match=r"source\(s\) \[1\] have no packed block"):
        mixing.MixtureBatchSampler([10, 0], [1, 1], batch_size=2)
    with pytest.raises(ValueError, match="2 block counts for 3 weights"):
        mixing.mixture_index([10, 10], [1, 1, 1], 0, 5)
    with pytest.raises(ValueError, match="fewer than one batch of train.batch_size=8"):
        mixing.MixtureBatchSampler([3, 4], [1, 1], batch_size=8)
    with pytest.raises(ValueError, match=r"source weights \[-1.0\] are not allowed"):
        mixing.MixtureBatchSampler([3, 4], [1, -1], batch_size=1)


class MainProcessFirst:
    @contextlib.contextmanager
    def main_process_first(self):
        yield


def test_prepare_mixture_packs_each_source_apart_and_numbers_the_blocks_once(tmp_path):
    texts = {
        "prose": datasets.Dataset.from_dict({"text": [f"the river {i} runs to the sea past the town" for i in range(300)]}),
        "code": datasets.Dataset.from_dict({"text": [f"def f{i}(x): return x + {i}" for i in range(200)]}),
    }
    wordpiece = train_tokenizer([text for part in texts.values() for text in part["text"]], vocab_size=128)
    splits = TextSplits(
        train=None, validation=None, train_report=None,
        train_by_source=texts,
        validation_by_source={name: part.select(range(40)) for name, part in texts.items()},
        weights={"prose": 0.25, "code": 0.75},
    )
    mixed = mixing.prepare_mixture(pack_dataset, splits, wordpiece, MainProcessFirst(), batch_size=4, seed=0,
                                   block_size=16, cache_dir=str(tmp_path))
    counts = [len(pack_dataset(texts[name], wordpiece, 16, cache_dir=str(tmp_path)).dataset) for name in texts]
    assert list(mixed.batch_sampler.counts) == counts
    assert list(mixed.train["example_index"]) == list(range(sum(counts)))  # noise keys unique across sources
    rows = [row for batch in mixed.batch_sampler for row in batch]
    # Every 16-token block of the prose holds "the"; the code never does.
    is_code = ["the" not in wordpiece.decode(mixed.train[int(row)]["input_ids"]).split() for row in rows]
    from_code = np.asarray(rows) >= counts[0]
    assert is_code == list(from_code), "each row the sampler names holds the text of the source it is counted as"
    assert abs(from_code.mean() - 0.75) < 0.01
    assert set(mixed.validation_by_source) == {"prose", "code"}
    first = np.asarray(mixed.validation["example_index"][:8])
    assert (first >= len(mixed.validation_by_source["prose"])).any() and (first < len(
        mixed.validation_by_source["prose"])).any(), "the first eval batches hold both sources"
    assert set(mixed.reports) == {"prose", "code"} and mixed.reports["code"]["train"].documents == 200
