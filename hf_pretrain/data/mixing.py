"""A mixture of sources held in memory (not streamed): which packed block each training slot reads, in order.

Each source is packed on its own (every block holds one source's text), and the blocks of all sources are
concatenated into one dataset. The order they are trained in is an index of (source, block) pairs: the source of
global slot g is data/mixture.py's `slot_sources` (a Weyl sequence: over any 5,000 consecutive slots each source's
share is within a fraction of a point of its weight), and source s's k-th slot reads block `perm_c[k mod n_s]`,
where c = k div n_s counts s's passes over its n_s blocks and perm_c is a permutation seeded by (seed, s, c). So a
source trained more than its blocks' share of the corpus repeats them, each pass in a new order; one trained less
reads a part of its blocks per epoch and goes on where it stopped in the next. The index is a pure function of
the slot numbers: an epoch is a range of slots, and a resume reaches the same blocks without state.

The index must be trained in order. The loop's own sampler (DataLoader `shuffle=True`) would draw the epoch's
slots in a random order, which makes each 5,000-block window a random sample: its shares then vary by about
sqrt(w(1 - w) / 5000) (0.7 points at w = 0.5), and over an epoch's windows the worst strays by about 2 points
(1.7 measured at weights 0.5/0.3/0.2; tests/data/test_mixing.py). The shuffle is inside each source instead (the per-pass permutations);
`MixtureBatchSampler` hands the loop the index's batches in order, as its `train_batch_sampler`.

Public API
----------
`mixture_index(block_counts, weights, start, stop, seed=0) -> (sources, blocks)`: (stop - start,) int64 arrays,
    the source and the block (within the source) of each slot in [start, stop).
`slot_counts(stop, weights) -> np.ndarray`: how many of the slots [0, stop) each source fills (exact, O(log stop)).
`MixtureBatchSampler(block_counts, weights, batch_size, seed=0)`: batches of row numbers of the concatenated
    blocks (source s's block b is row offsets[s] + b), an epoch at a time (`set_epoch`); an epoch is the corpus's
    number of blocks rounded down to whole batches, the same for any number of processes (a resume on another
    number continues the same sequence). Accelerate deals whole rounds of batches to the processes and drops a
    last partial round (fewer than one batch per process): a window across that gap is two runs of consecutive
    slots, each even by itself, so the share bound holds (tested with 3 processes).
`concatenate_blocks(parts) -> datasets.Dataset`: the sources' packed blocks in one dataset, `example_index`
    renumbered to the row number (noise keys stay unique across sources).
`mixed_validation(parts, weights, seed=0) -> datasets.Dataset`: the sources' validation blocks concatenated and
    ordered by the mixture (the first eval batches hold every source at its weight).
`prepare_mixture(prepare, splits, tokenizer, accelerator, batch_size, seed, **settings)
        -> PreparedMixture`: every source's train and validation packed (rank 0 first), the training dataset and its
    batch sampler, the mixed and the per-source validation datasets.
`mix_documents(parts, weights, seed) -> dataset`: documents of several sources, every document once, interleaved
    with probabilities by weight (a tokenizer's sample; not token-exact).
`SourceReports(reports)`: the cleaning reports of a mixture's sources, summarized per source.
`worst_share_error(sources, weights, window=5000) -> float`: the largest |share - weight| of any source over any
    `window` consecutive slots (what the tests and benchmarks check).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from .mixture import _ALPHA, normalized_weights, slot_sources

logger = logging.getLogger(__name__)

MIXTURE_SALT = 0x6D6978  # "mix": keeps these permutations apart from other draws seeded by train.seed


# ----------------------------------------------------------------------------------------------- the index
def slot_counts(stop: int, weights) -> np.ndarray:
    """(n_sources,) int64: how many of the slots [0, stop) each source fills, exactly, in O(log stop) time.

    Slot g goes to source s when x_g = g * A mod 2**64 lies in [T_{s-1}, T_s), with T_s the fixed-point bound
    that `slot_sources` compares against: a point (x >> 11) * 2**-53 >= b exactly when x >= ceil(b * 2**53) << 11.
    #{g < n : g * A mod M < T} = n - sum_g (floor((g * A + M - T) / M) - floor(g * A / M)), two floor sums (a
    Euclid-like recursion), so a resume a trillion slots in costs nothing; tests/data/test_mixing.py checks it
    against `slot_sources` itself."""
    shares = normalized_weights(weights)
    stop = int(stop)
    if stop < 0:
        raise ValueError(f"stop={stop} is not allowed; slots are numbered from 0.")
    if len(shares) == 1:
        return np.array([stop], dtype=np.int64)
    bounds = np.cumsum(shares)
    bounds[-1] = 1.0
    modulus, step = 1 << 64, int(_ALPHA)
    below = [0]  # slots whose point lies below each bound, from 0 to all of them
    for bound in bounds:
        threshold = math.ceil(float(bound) * 2.0**53) << 11
        at_or_above = floor_sum(stop, modulus, step, modulus - threshold) - floor_sum(stop, modulus, step, 0)
        below.append(stop - at_or_above)
    return np.diff(np.asarray(below, dtype=np.int64))


def floor_sum(n: int, m: int, a: int, b: int) -> int:
    """sum_{i=0}^{n-1} floor((a * i + b) / m) for integers n, m >= 1 and a, b >= 0 (Python ints: no overflow)."""
    total = 0
    while n > 0:
        if a >= m:
            total += n * (n - 1) // 2 * (a // m)
            a %= m
        if b >= m:
            total += n * (b // m)
            b %= m
        top = a * n + b
        if top < m:
            break
        n, b, m, a = top // m, top % m, a, m
    return total


def pass_permutation(seed: int, source: int, cycle: int, blocks: int) -> np.ndarray:
    return np.random.default_rng([seed, MIXTURE_SALT, source, cycle]).permutation(blocks)


def check_block_counts(block_counts, weights) -> np.ndarray:
    counts = np.asarray(list(block_counts), dtype=np.int64)
    shares = normalized_weights(weights)
    if counts.shape != shares.shape:
        raise ValueError(f"{len(counts)} block counts for {len(shares)} weights; give one per source.")
    if (counts < 1).any():
        empty = [int(i) for i in np.flatnonzero(counts < 1)]
        raise ValueError(f"source(s) {empty} have no packed block (their text is shorter than one block); a mixture "
                         "needs at least one block of every source.")
    return counts


def mixture_index(block_counts, weights, start: int, stop: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The (source, block) of each slot in [start, stop) (see the module docstring)."""
    counts = check_block_counts(block_counts, weights)
    if not 0 <= start <= stop:
        raise ValueError(f"slots [{start}, {stop}) are not allowed; need 0 <= start <= stop.")
    sources = slot_sources(np.arange(start, stop, dtype=np.int64), weights)
    used_before = slot_counts(start, weights)
    blocks = np.empty_like(sources)
    for source, blocks_of_source in enumerate(counts):
        where = np.flatnonzero(sources == source)
        if not len(where):
            continue
        # The source's uses number used_before .. used_before + len(where) - 1; use k reads position k mod n of
        # pass k div n. The passes these uses touch, laid end to end, are indexed by k - first pass * n.
        used, size = int(used_before[source]), int(blocks_of_source)
        first, last = used // size, (used + len(where) - 1) // size
        passes = np.concatenate([pass_permutation(seed, source, cycle, size) for cycle in range(first, last + 1)])
        blocks[where] = passes[used - first * size + np.arange(len(where))]
    return sources, blocks


class MixtureBatchSampler:
    """Batches of concatenated-row numbers in mixture order; the loop's `train_batch_sampler` (see module doc).

    `batch_size` and `drop_last` are read by Accelerate's BatchSamplerShard, which deals the batches to the
    processes in turn: the trained sequence of blocks is this sampler's, whatever the number of processes."""

    drop_last = True

    def __init__(self, block_counts, weights, batch_size: int, seed: int = 0):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}; allowed: an integer >= 1.")
        self.counts = check_block_counts(block_counts, weights)
        self.weights = list(normalized_weights(weights))
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)[:-1]])
        self.batch_size, self.seed = batch_size, seed
        self.epoch_slots = int(self.counts.sum()) // batch_size * batch_size
        if self.epoch_slots == 0:
            raise ValueError(f"the sources hold {int(self.counts.sum())} blocks together, fewer than one batch of "
                             f"train.batch_size={batch_size}; lower it or add data.")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.epoch_slots // self.batch_size

    def epoch_rows(self, epoch: int) -> np.ndarray:
        """Row numbers of one epoch's slots, in training order."""
        start = epoch * self.epoch_slots
        sources, blocks = mixture_index(self.counts, self.weights, start, start + self.epoch_slots, self.seed)
        return self.offsets[sources] + blocks

    def __iter__(self):
        rows = self.epoch_rows(self.epoch)
        for first in range(0, len(rows), self.batch_size):
            yield rows[first : first + self.batch_size].tolist()


def worst_share_error(sources, weights, window: int = 5000) -> float:
    """max over sources and over every `window` consecutive slots of |share in the window - weight|."""
    sources = np.asarray(sources, dtype=np.int64)
    shares = normalized_weights(weights)
    if len(sources) < window:
        raise ValueError(f"{len(sources)} slots hold no window of {window}.")
    worst = 0.0
    for source, share in enumerate(shares):
        running = np.concatenate([[0], np.cumsum(sources == source)])
        in_window = running[window:] - running[:-window]
        worst = max(worst, float(np.abs(in_window / window - share).max()))
    return worst


# ----------------------------------------------------------------------------------------------- datasets
def concatenate_blocks(parts):
    """One dataset of the sources' packed blocks, in source order, `example_index` = row number."""
    import datasets

    joined = datasets.concatenate_datasets(list(parts))
    if "example_index" in joined.column_names:
        joined = joined.remove_columns("example_index")
    return joined.add_column("example_index", np.arange(len(joined), dtype=np.int64))


def mixed_validation(parts, weights, seed: int = 0):
    """The validation blocks of every source in one dataset, as many rows as they hold together, in mixture order
    (a source whose validation is small for its weight repeats blocks)."""
    parts = list(parts)
    counts = [len(part) for part in parts]
    joined = concatenate_blocks(parts)
    sources, blocks = mixture_index(counts, weights, 0, sum(counts), seed)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return joined.select(offsets[sources] + blocks)


@dataclass
class PreparedMixture:
    """A mixture's packed blocks: what the objective sets as train_dataset, train_batch_sampler and eval_dataset,
    and the per-source validation sets (eval per source)."""

    train: object
    batch_sampler: MixtureBatchSampler
    validation: object
    validation_by_source: dict = field(default_factory=dict)
    reports: dict = field(default_factory=dict)  # name -> {"train": PackingReport, "validation": PackingReport}


def prepare_mixture(prepare, splits, tokenizer, accelerator, batch_size: int, seed: int,
                    **settings) -> PreparedMixture:
    """Pack every source's train and validation text with `prepare` (e.g. packing.pack_dataset; rank 0 first, so
    the other ranks load its cache) and build the mixture over them (`splits`: pipeline.TextSplits)."""
    names = list(splits.weights)
    with accelerator.main_process_first():
        train = {name: prepare(splits.train_by_source[name], tokenizer, **settings) for name in names}
        validation = {name: prepare(splits.validation_by_source[name], tokenizer, **settings) for name in names}
    for name in names:
        logger.info(f"source {name} ({splits.weights[name]:.1%} of the trained tokens): train: "
                    f"{train[name].report.summary()}; validation: {validation[name].report.summary()}")
    # A source with no block would stop the index (check_block_counts) with only its position to go by: name it,
    # its split and what it packed here, where the recipe's names are known.
    for index, name in enumerate(names):
        for split, prepared in (("train", train[name]), ("validation", validation[name])):
            if len(prepared.dataset) == 0:
                raise ValueError(
                    f"data.sources[{index}] ({name!r}): its {split} text packs into no block of "
                    f"{settings.get('block_size', 'data.block_size')} tokens ({prepared.report.summary()}); a "
                    f"mixture needs at least one {split} block of every source. Add text to it"
                    + (" (validation_files, or a larger data.validation_fraction)" if split == "validation" else "")
                    + ", lower data.block_size, or remove the source.")
    counts = [len(train[name].dataset) for name in names]
    weights = [splits.weights[name] for name in names]
    try:
        sampler = MixtureBatchSampler(counts, weights, batch_size, seed=seed)
    except ValueError as error:
        raise ValueError(f"data.sources {names}: {error}") from error
    return PreparedMixture(
        train=concatenate_blocks(train[name].dataset for name in names),
        batch_sampler=sampler,
        validation=mixed_validation([validation[name].dataset for name in names], weights, seed),
        validation_by_source={name: validation[name].dataset for name in names},
        reports={name: {"train": train[name].report, "validation": validation[name].report} for name in names},
    )


# ----------------------------------------------------------------------------------------------- documents
def mix_documents(parts, weights, seed: int):
    """Every document of every part once, interleaved at random with probabilities by weight (Datasets or
    IterableDatasets alike); one part is returned as it is."""
    import datasets

    parts = list(parts)
    if len(parts) == 1:
        return parts[0]
    return datasets.interleave_datasets(parts, probabilities=list(normalized_weights(weights)), seed=seed,
                                        stopping_strategy="all_exhausted_without_replacement")


class SourceReports:
    """The cleaning reports of a mixture's training text, one per source (a stream's fill in as it is read)."""

    def __init__(self, reports: dict):
        self.reports = reports

    def total(self):
        from .cleaning import CleaningReport

        total = CleaningReport()
        for report in self.reports.values():
            total.add(report)
        return total

    def summary(self) -> str:
        return "; ".join(f"{name}: {report.summary()}" for name, report in self.reports.items())

    def to_dict(self) -> dict:
        return {name: report.to_dict() for name, report in self.reports.items()}
