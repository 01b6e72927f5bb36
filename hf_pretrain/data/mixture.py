"""Mixtures of text sources by weight: which source fills each block slot, and what a source is.

A mixture is mixed per block, not per document: every packed block holds `block_size` tokens of one source (each
source has its own packer), so a source's share of the trained tokens is its share of the blocks. Mixing per
document cannot hold a share to a point when one document is a sizeable part of a window (a 200,000-token
document is 8% of 5,000 blocks of 512).

Which source fills global block slot g is a pure function of g: `source(g) = F^-1(frac(g * alpha))`, with alpha
the golden ratio's fractional part in 64-bit fixed point (a Weyl sequence) and F the cumulative weights. The
points frac(g * alpha) are spread evenly over [0, 1) in every window of consecutive slots (three-distance theorem),
so over any 5,000 consecutive slots each source's share is within a fraction of a point of its weight — for any
weights and any starting slot, with no state to save (a resume recomputes it). A per-reader deficit schedule
(Megatron's blending index) would also be exact for one sequence, but readers that each run a copy stay in phase
and their errors add up.

Public API
----------
`slot_sources(slots, weights) -> np.ndarray`: (n,) int source index of each global slot number.
`normalized_weights(weights) -> np.ndarray`: weights as shares summing to 1 (ValueError naming a bad one).
`TextSource`: one source of a mixture (its name, weight and where its documents are).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# frac((sqrt(5) - 1) / 2) * 2**64, rounded to odd: the 64-bit Weyl increment.
_ALPHA = np.uint64(0x9E3779B97F4A7C15)


def normalized_weights(weights) -> np.ndarray:
    values = np.asarray(list(weights), dtype=np.float64)
    if values.size == 0:
        raise ValueError("a mixture needs at least one source.")
    bad = [float(w) for w in values if not np.isfinite(w) or w <= 0]
    if bad:
        raise ValueError(f"source weights {bad} are not allowed; a weight must be a positive finite number.")
    return values / values.sum()


def slot_sources(slots, weights) -> np.ndarray:
    """(n,) source index for each global block slot in `slots` (non-negative integers)."""
    shares = normalized_weights(weights)
    slots = np.asarray(slots, dtype=np.int64)
    if len(shares) == 1:
        return np.zeros(slots.shape, dtype=np.int64)
    # uint64 multiplication wraps modulo 2**64: the fractional part of g * alpha in fixed point.
    points = (slots.astype(np.uint64) * _ALPHA) >> np.uint64(11)
    fractions = points.astype(np.float64) * 2.0**-53
    bounds = np.cumsum(shares)
    bounds[-1] = 1.0  # rounding: every point falls into some source
    return np.searchsorted(bounds, fractions, side="right").astype(np.int64)


@dataclass
class TextSource:
    """One source of a (possibly one-source) corpus, as the readers see it.

    name         unique within the recipe; names the source in reports, metrics and stream states
    weight       its share of the trained tokens (normalized over the sources)
    files        local paths or fsspec URLs (hf://datasets/...@<commit>/...), sorted; empty for `texts`
    format       text, paragraphs, jsonl, csv or parquet (never auto: resolved by whoever builds the source)
    text_column  the column or key holding the text (jsonl, csv, parquet)
    texts        documents held in memory (the built-in corpus), instead of files
    revision     the commit the files were resolved at (Hub sources), recorded in stream states
    """

    name: str
    weight: float = 1.0
    files: list[str] = field(default_factory=list)
    format: str = "text"
    text_column: str = "text"
    texts: list[str] | None = None
    revision: str | None = None
