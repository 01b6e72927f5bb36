"""Per-example randomness: the one place that turns (seed, epoch, example_index, stream) into random numbers.

Every noise of the data pipeline (masked-LM masks, denoising corruption, feature noise) is a pure function of
those integers, never of a global RNG: the same example gets the same noise in any batch, in any DataLoader
worker and after a resume, and `set_epoch` gives it new noise. `stream` names one independent decision of a
collator, so adding or changing one decision never shifts the numbers of another.

The coordinates are read in two ways, because the two kinds of noise need different shapes of draws:

* `example_generator(seed, epoch, index, stream)`: a numpy Generator seeded through SeedSequence, for noise whose
  number of draws depends on the data (Poisson span lengths, permutations, choices): the denoising collators,
  one example at a time.
* `example_keys(seed, epoch, indices)` + `uniforms(keys, stream, length, first_position=0)`: (B, length) floats
  from a counter-based hash (SplitMix64) of (key, stream, position), vectorized over a batch and addressable by
  position (span masking reads positions before the row): the masked-LM collator.

The two give different numbers for the same coordinates. Making them one generator would change every mask and
corruption, so the golden losses of both objectives; each keeps its numbers, and the coordinates are defined here.
"""

from __future__ import annotations

import numpy as np

# Streams of the counter-based draws are interleaved per position (position * NUM_STREAMS + stream), so a
# collator may use up to this many.
NUM_STREAMS = 8

_U64 = np.uint64
_GOLDEN_GAMMA = _U64(0x9E3779B97F4A7C15)
_MIX_1 = _U64(0xBF58476D1CE4E5B9)
_MIX_2 = _U64(0x94D049BB133111EB)


# --------------------------------------------------------------------------------------------------- one example
def check_coordinates(seed: int, epoch: int, index: int = 0) -> None:
    """SeedSequence takes only non-negative integers; say which one is wrong before the first batch."""
    for name, value in (("seed", seed), ("epoch", epoch), ("example_index", index)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name}={value!r} is not allowed; it must be a non-negative integer.")


def example_generator(seed: int, epoch: int, index: int, stream: int) -> np.random.Generator:
    """The generator of one example's noise in `stream`. SeedSequence hashes the numbers into a well-mixed state,
    so neighbouring indices or epochs give unrelated streams. Stream 0 is seeded from (seed, epoch, index) alone
    (the numbers the first collators drew, kept), any other stream from (seed, epoch, index, stream)."""
    check_coordinates(seed, epoch, index)
    entropy = [int(seed), int(epoch), int(index)] + ([int(stream)] if stream else [])
    return np.random.default_rng(entropy)


# --------------------------------------------------------------------------------------------------- a batch
def splitmix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer: a bijective 64-bit mix whose outputs pass statistical tests even for counters
    0, 1, 2, ...; numpy uint64 arithmetic wraps modulo 2**64 as the algorithm expects."""
    z = np.asarray(values, dtype=_U64) + _GOLDEN_GAMMA
    z = (z ^ (z >> _U64(30))) * _MIX_1
    z = (z ^ (z >> _U64(27))) * _MIX_2
    return z ^ (z >> _U64(31))


def example_keys(seed: int, epoch: int, example_indices: np.ndarray) -> np.ndarray:
    """(B,) uint64: one key per example, a hash of (seed, epoch, example index)."""
    base = splitmix64(splitmix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], _U64)) ^ np.array([epoch], _U64).astype(_U64))
    return splitmix64(base ^ np.asarray(example_indices, dtype=np.int64).astype(_U64))


def uniforms(keys: np.ndarray, stream: int, length: int, first_position: int = 0) -> np.ndarray:
    """(B, length) floats in [0, 1), a pure function of (key, stream, position)."""
    if not 0 <= stream < NUM_STREAMS:
        raise ValueError(f"stream={stream!r}; allowed: 0 to {NUM_STREAMS - 1}.")
    positions = np.arange(first_position, first_position + length, dtype=np.int64)
    counters = splitmix64((positions * NUM_STREAMS + stream).astype(_U64))
    bits = splitmix64(keys[:, None] ^ counters[None, :])
    return (bits >> _U64(11)).astype(np.float64) * 2.0**-53
