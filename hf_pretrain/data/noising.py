"""Noise for the denoising autoencoder: corrupt the input, keep the clean text as the labels.

The noise of an example is a pure function of (seed, epoch, example index): every example gets its own random
generator, seeded from those three numbers (randomness.py). The same example therefore gets the same corruption
whatever batch it lands in, in whatever order, in whichever DataLoader worker, and after a resume — and a new
epoch (`set_epoch`) gives it new noise.

Operations (each with its own rate; they compose, and run in this order). The rates live in the recipe's
`NoiseSection` (hf_pretrain/recipe.py), the one noise dataclass; its defaults are TSDAE's (word deletion 0.6):

====================  ====================================================================================
`permute_sentences`   fraction of the sentences (split after `sentence_end_ids`) shuffled among themselves
`word_delete_rate`    each word (a word-start token and the tokens that continue it) deleted with this prob.
`delete_rate`         each token deleted with this probability
`infill_rate`         text infilling: this fraction of the tokens is covered by spans whose lengths are drawn
                      from Poisson(`poisson_lambda`); each span becomes ONE mask token, a 0-length span
                      inserts a mask token
`mask_rate`           each token replaced by the mask token with this probability
`insert_rate`         random (non-special) tokens inserted, this many per token
`rotate_rate`         probability that the document is rotated to start at a random token
`decoder_mask_rate`   (decoder side, training only) each teacher-forced decoder input token replaced by the
                      mask token with this probability; the batch then carries `decoder_input_ids`
====================  ====================================================================================

Rates count the tokens that are eligible when the operation runs: special tokens ([CLS], [SEP], ...) are never
corrupted, deleted or moved, and tokens added by an earlier operation (mask tokens, inserted tokens) are not
picked again. Sentence permutation and rotation act inside each run of non-special tokens, so [CLS] stays first
and [SEP] last. Deletions always keep at least one of an example's tokens.

Published defaults (the recipes use these):

* BART (Lewis et al. 2019, "BART: Denoising Sequence-to-Sequence Pre-training for Natural Language Generation,
  Translation, and Comprehension", arXiv:1910.13461): text infilling — spans with Poisson(lambda=3) lengths, each
  replaced by a single [MASK], 0-length spans insert one (section 2.2) — on 30% of the tokens, plus permutation of
  all sentences (section 5.1, the large-scale model). `BART_NOISE` below.
* TSDAE (Wang, Reimers and Gurevych 2021, "TSDAE: Using Transformer-based Sequential Denoising Auto-Encoder for
  Unsupervised Sentence Embedding Learning", Findings of EMNLP 2021, arXiv:2104.06979): word deletion with ratio
  0.6, the best of the noise types and ratios the paper compares. `TSDAE_NOISE` below.

Decoder-input masking ("word dropout" on the decoder side, Bowman et al. 2016, "Generating Sentences from a
Continuous Space", arXiv:1511.06349, section 3.3): with a pooled bottleneck, a teacher-forced decoder can predict
most of the next tokens from the clean prefix alone and learns to ignore the one sentence vector, which then gets
almost no gradient and collapses (every document maps to nearly the same vector). Hiding part of the prefix makes
the bottleneck the only source for those tokens. Off in BART_NOISE and TSDAE_NOISE (the papers do not use it).

Public API
----------
`BART_NOISE`, `TSDAE_NOISE`: the published settings as `hf_pretrain.recipe.NoiseSection`s.
`DenoisingCollator(mask_token_id, pad_token_id, vocab_size, special_token_ids, noise, seed=0,
                   sentence_end_ids=(), pad_to_multiple_of=None)` and `DenoisingCollator.from_tokenizer(tokenizer,
                   noise, seed=0, sentence_end_tokens=(".", "!", "?"))`; `.set_epoch(epoch)`;
    `collator(examples)` with examples {"input_ids": [int], "example_index": int, optional "word_starts": [0/1]
    (or "word_start")} -> {"input_ids", "attention_mask"} (corrupted, right-padded with pad_token_id) and
    "labels" (the clean ids, padded with collation.IGNORE_INDEX), all (B, L) int64 tensors.
`sentence_end_token_ids(tokenizer, ends=(".", "!", "?"))`: the ids of sentence-final punctuation.
`tokenize_for_denoising(tokenizer, texts, start_index=0, max_length=None)`: examples with the three keys.
`FeatureNoiseCollator(gaussian_std=0, mask_rate=0, mask_value=0, seed=0)`: the same for float features,
    examples {"input_features": [float] or array, "example_index": int} -> {"input_features", "labels"}.
`sample_span_lengths(rng, budget, poisson_lambda)`: a building block.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..recipe import NoiseSection
from .collation import IGNORE_INDEX, attention_mask, pad_rows, padded_width
from .encoding import word_start_flags
from .randomness import check_coordinates, example_generator

# BART (Lewis et al. 2019): text infilling of 30% of the tokens with Poisson(3) spans + permute every sentence.
BART_NOISE = NoiseSection(word_delete_rate=0.0, infill_rate=0.3, poisson_lambda=3.0, permute_sentences=1.0)
# TSDAE (Wang et al. 2021): delete 60% of the words.
TSDAE_NOISE = NoiseSection(word_delete_rate=0.6)

# Random streams (randomness.py) of one example: the input corruption, and the decoder inputs apart from it so
# the input noise is the same with and without decoder masking.
STREAM_INPUT, STREAM_DECODER_INPUT = 0, 1


def stochastic_round(rng: np.random.Generator, value: float) -> int:
    """floor(value) or ceil(value), with the expectation equal to value (an unbiased count of tokens)."""
    whole = int(np.floor(value))
    return whole + int(rng.random() < value - whole)


def sample_span_lengths(rng: np.random.Generator, budget: int, poisson_lambda: float) -> np.ndarray:
    """Poisson span lengths whose sum is exactly `budget` (BART): draw until the budget is covered, then cut the
    last span down to what is left. Zero-length spans are kept (each inserts a mask token)."""
    if budget <= 0:
        return np.zeros(0, dtype=np.int64)
    lengths = rng.poisson(poisson_lambda, size=budget)
    while lengths.sum() < budget:
        lengths = np.concatenate((lengths, rng.poisson(poisson_lambda, size=budget)))
    cumulative = np.cumsum(lengths)
    last = int(np.searchsorted(cumulative, budget))  # first span whose cumulative length reaches the budget
    lengths = lengths[: last + 1].copy()
    lengths[last] = budget - (cumulative[last - 1] if last > 0 else 0)
    return lengths.astype(np.int64)


# --------------------------------------------------------------------------------------------------- one example
@dataclass
class Tokens:
    """One example during corruption: parallel arrays of length L.

    ids: token ids; special: never touched or moved, and separates runs; fresh: added by an earlier operation
    (not eligible again); word_start: the token starts a word.
    """

    ids: np.ndarray
    special: np.ndarray
    fresh: np.ndarray
    word_start: np.ndarray

    def take(self, order: np.ndarray) -> "Tokens":
        return Tokens(self.ids[order], self.special[order], self.fresh[order], self.word_start[order])

    def keep(self, kept: np.ndarray) -> "Tokens":
        return self.take(np.flatnonzero(kept))

    @property
    def eligible(self) -> np.ndarray:
        return ~self.special & ~self.fresh

    def runs(self) -> list[tuple[int, int]]:
        """[start, end) of every maximal run of non-special tokens."""
        inside = np.concatenate(([False], ~self.special, [False])).astype(np.int8)
        edges = np.diff(inside)
        return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def concat(pieces: Sequence[Tokens]) -> Tokens:
    return Tokens(
        *(np.concatenate([getattr(p, name) for p in pieces]) for name in ("ids", "special", "fresh", "word_start"))
    )


def make_tokens(
    ids: np.ndarray, special: np.ndarray, fresh: bool = False, word_start: np.ndarray | None = None
) -> Tokens:
    n = len(ids)
    return Tokens(
        np.asarray(ids, dtype=np.int64),
        np.asarray(special, dtype=bool),
        np.full(n, fresh, dtype=bool),
        np.ones(n, dtype=bool) if word_start is None else np.asarray(word_start, dtype=bool),
    )


def keep_at_least_one(rng: np.random.Generator, kept: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """If every candidate was dropped, bring one (uniformly chosen) back. kept/candidates: (L,) bool."""
    if candidates.any() and not (kept & candidates).any():
        kept = kept.copy()
        kept[rng.choice(np.flatnonzero(candidates))] = True
    return kept


def delete_tokens(tokens: Tokens, rng: np.random.Generator, rate: float) -> Tokens:
    eligible = tokens.eligible
    dropped = eligible & (rng.random(len(tokens.ids)) < rate)
    return tokens.keep(keep_at_least_one(rng, ~dropped, eligible))


def delete_words(tokens: Tokens, rng: np.random.Generator, rate: float) -> Tokens:
    """A word = a word-start token and the following non-start tokens of the same run; one coin per word."""
    eligible = tokens.eligible
    starts_word = eligible & (tokens.word_start | np.concatenate(([True], tokens.special[:-1])))
    word_index = np.cumsum(starts_word) - 1  # (L,) word number of each token (valid where eligible)
    drop_word = rng.random(int(starts_word.sum())) < rate
    dropped = eligible & drop_word[np.clip(word_index, 0, None)] if drop_word.size else np.zeros_like(eligible)
    kept = ~dropped
    if eligible.any() and not (kept & eligible).any():
        survivor = rng.integers(drop_word.size)
        kept = kept | (eligible & (word_index == survivor))
    return tokens.keep(kept)


def mask_tokens(tokens: Tokens, rng: np.random.Generator, rate: float, mask_token_id: int) -> Tokens:
    chosen = tokens.eligible & (rng.random(len(tokens.ids)) < rate)
    ids = np.where(chosen, mask_token_id, tokens.ids)
    return Tokens(ids, tokens.special, tokens.fresh | chosen, tokens.word_start)


def infill_run(run: Tokens, rng: np.random.Generator, rate: float, poisson_lambda: float, mask_token_id: int) -> Tokens:
    """Text infilling inside one run of non-special tokens.

    budget = rate x eligible tokens (stochastically rounded, at most all but one); span lengths from
    `sample_span_lengths`; spans are placed without overlap: the arrangement of k spans among the n - budget kept
    tokens is drawn uniformly (choose which k of the n - budget + k slots are spans). Only eligible tokens are
    covered; tokens added earlier stay in place.
    """
    eligible = np.flatnonzero(run.eligible)
    n = eligible.size
    budget = min(stochastic_round(rng, rate * n), max(n - 1, 0))
    lengths = sample_span_lengths(rng, budget, poisson_lambda)
    if lengths.size == 0:
        return run
    slots = n - budget + lengths.size
    is_span = np.zeros(slots, dtype=bool)
    is_span[rng.choice(slots, size=lengths.size, replace=False)] = True

    # A kept slot consumes one eligible token, a span slot `length` of them: where each span starts, in eligible
    # tokens, is the cumulative consumption of the slots before it.
    consumed = np.ones(slots, dtype=np.int64)
    consumed[is_span] = lengths
    span_starts = (np.cumsum(consumed) - consumed)[is_span]  # (k,)
    offsets = np.arange(budget) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    covered = np.zeros(len(run.ids), dtype=bool)
    covered[eligible[np.repeat(span_starts, lengths) + offsets]] = True
    # Each span's mask goes just before the first token it covers (or the token after a 0-length span; the end).
    mask_at = np.where(span_starts < n, eligible[np.minimum(span_starts, n - 1)], len(run.ids))

    masks = make_tokens(np.full(lengths.size, mask_token_id), np.zeros(lengths.size, dtype=bool), fresh=True)
    keys = np.concatenate((np.flatnonzero(~covered), mask_at - 0.5))
    return concat([run.keep(~covered), masks]).take(np.argsort(keys, kind="stable"))


def insert_random(run: Tokens, rng: np.random.Generator, rate: float, vocabulary: np.ndarray) -> Tokens:
    """Insert rate x (eligible tokens) random tokens at uniformly drawn gaps of the run."""
    count = stochastic_round(rng, rate * int(run.eligible.sum()))
    if count == 0:
        return run
    gaps = np.sort(rng.integers(0, len(run.ids) + 1, size=count))
    new = make_tokens(rng.choice(vocabulary, size=count), np.zeros(count, dtype=bool), fresh=True)
    order = np.argsort(np.concatenate((np.arange(len(run.ids)), gaps - 0.5)), kind="stable")
    return concat([run, new]).take(order)


def permute_sentences(run: Tokens, rng: np.random.Generator, fraction: float, sentence_ends: np.ndarray) -> Tokens:
    """Split after each sentence-end token; shuffle a `fraction` of the sentences among their own places."""
    ends = np.flatnonzero(np.isin(run.ids, sentence_ends)) + 1
    bounds = np.unique(np.concatenate(([0], ends, [len(run.ids)])))
    sentences = [np.arange(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    count = min(stochastic_round(rng, fraction * len(sentences)), len(sentences))
    if count < 2:
        return run
    chosen = np.sort(rng.choice(len(sentences), size=count, replace=False))
    order = list(range(len(sentences)))
    for place, source in zip(chosen, rng.permutation(chosen)):
        order[place] = int(source)
    return run.take(np.concatenate([sentences[i] for i in order]))


def rotate(run: Tokens, rng: np.random.Generator) -> Tokens:
    """Start the run at a random token other than its first (BART's document rotation)."""
    if len(run.ids) < 2:
        return run
    offset = int(rng.integers(1, len(run.ids)))
    return run.take(np.roll(np.arange(len(run.ids)), -offset))


def per_run(tokens: Tokens, operation) -> Tokens:
    """Apply `operation(run)` to every run of non-special tokens; special tokens stay where they are."""
    pieces, cursor = [], 0
    for start, end in tokens.runs():
        pieces.append(tokens.take(np.arange(cursor, start)))
        pieces.append(operation(tokens.take(np.arange(start, end))))
        cursor = end
    pieces.append(tokens.take(np.arange(cursor, len(tokens.ids))))
    return concat(pieces)


# --------------------------------------------------------------------------------------------------- collator
class DenoisingCollator:
    """Corrupt token-id examples for the denoising autoencoder and pad them into a batch (see module docstring)."""

    def __init__(
        self,
        mask_token_id: int,
        pad_token_id: int,
        vocab_size: int,
        special_token_ids: Iterable[int],
        noise: NoiseSection | Mapping,
        seed: int = 0,
        sentence_end_ids: Iterable[int] = (),
        pad_to_multiple_of: int | None = None,
        decoder_start_token_id: int | None = None,
    ):
        # No default: the section's defaults are TSDAE's, so a caller says which noise it wants. A mapping means
        # what the same keys mean in a recipe's noise section.
        self.noise = NoiseSection(**noise) if isinstance(noise, Mapping) else noise
        self.mask_token_id = int(mask_token_id)
        self.pad_token_id = int(pad_token_id)
        self.special_ids = np.array(
            sorted({int(i) for i in special_token_ids} | {self.mask_token_id, self.pad_token_id})
        )
        self.sentence_end_ids = np.array(sorted({int(i) for i in sentence_end_ids}), dtype=np.int64)
        # Inserted tokens are drawn from the ordinary vocabulary only.
        self.vocabulary = np.setdiff1d(np.arange(vocab_size), self.special_ids)
        if self.noise.insert_rate > 0 and self.vocabulary.size == 0:
            raise ValueError("insert_rate > 0 needs at least one non-special token in the vocabulary.")
        if self.noise.permute_sentences > 0 and self.sentence_end_ids.size == 0:
            raise ValueError(
                f"permute_sentences={self.noise.permute_sentences} needs sentence_end_ids (the ids of '.', '!', ...) "
                "to find sentence boundaries."
            )
        if self.noise.decoder_mask_rate > 0 and decoder_start_token_id is None:
            raise ValueError(
                f"decoder_mask_rate={self.noise.decoder_mask_rate} needs decoder_start_token_id (the model config's) "
                "to build the decoder inputs."
            )
        self.decoder_start_token_id = decoder_start_token_id
        self.seed = seed
        self.epoch = 0
        self.pad_to_multiple_of = pad_to_multiple_of
        check_coordinates(seed, 0)  # the seed fails now rather than at the first batch

    @classmethod
    def from_tokenizer(
        cls,
        tokenizer,
        noise: NoiseSection | Mapping,
        seed: int = 0,
        sentence_end_tokens: Iterable[str] = (".", "!", "?"),
        pad_to_multiple_of: int | None = None,
        decoder_start_token_id: int | None = None,
    ) -> "DenoisingCollator":
        """Special/mask/pad ids and the vocabulary from a (fast) tokenizer; sentence ends from
        `sentence_end_token_ids`."""
        if tokenizer.mask_token_id is None or tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer needs a mask_token and a pad_token for denoising.")
        return cls(
            mask_token_id=tokenizer.mask_token_id,
            pad_token_id=tokenizer.pad_token_id,
            vocab_size=len(tokenizer),
            special_token_ids=tokenizer.all_special_ids,
            noise=noise,
            seed=seed,
            sentence_end_ids=sentence_end_token_ids(tokenizer, sentence_end_tokens),
            pad_to_multiple_of=pad_to_multiple_of,
            decoder_start_token_id=decoder_start_token_id,
        )

    def set_epoch(self, epoch: int) -> None:
        """New noise for every example from now on (call at the start of each epoch)."""
        check_coordinates(self.seed, epoch)
        self.epoch = int(epoch)

    def corrupt(
        self, input_ids: Sequence[int], example_index: int, word_start: Sequence[int] | None = None
    ) -> list[int]:
        """The corrupted ids of one example: a pure function of (seed, epoch, example_index, input)."""
        rng = example_generator(self.seed, self.epoch, example_index, STREAM_INPUT)
        ids = np.asarray(input_ids, dtype=np.int64)
        if word_start is not None and len(word_start) != len(ids):
            raise ValueError(
                f"word_start has {len(word_start)} flags for {len(ids)} input_ids (example {example_index})."
            )
        tokens = make_tokens(ids, np.isin(ids, self.special_ids), word_start=word_start)
        noise = self.noise
        if noise.permute_sentences > 0:
            tokens = per_run(
                tokens, lambda run: permute_sentences(run, rng, noise.permute_sentences, self.sentence_end_ids)
            )
        if noise.word_delete_rate > 0:
            tokens = delete_words(tokens, rng, noise.word_delete_rate)
        if noise.delete_rate > 0:
            tokens = delete_tokens(tokens, rng, noise.delete_rate)
        if noise.infill_rate > 0:
            tokens = per_run(
                tokens, lambda run: infill_run(run, rng, noise.infill_rate, noise.poisson_lambda, self.mask_token_id)
            )
        if noise.mask_rate > 0:
            tokens = mask_tokens(tokens, rng, noise.mask_rate, self.mask_token_id)
        if noise.insert_rate > 0:
            tokens = per_run(tokens, lambda run: insert_random(run, rng, noise.insert_rate, self.vocabulary))
        if noise.rotate_rate > 0 and rng.random() < noise.rotate_rate:
            tokens = per_run(tokens, lambda run: rotate(run, rng))
        return tokens.ids.tolist()

    def decoder_inputs(self, input_ids: Sequence[int], example_index: int) -> list[int]:
        """Teacher-forced decoder inputs of one example: the start token, then the clean ids shifted right, with
        `decoder_mask_rate` of them (never the start token) replaced by the mask token. Its own random stream, so
        the input noise is the same with and without decoder masking."""
        rng = example_generator(self.seed, self.epoch, example_index, STREAM_DECODER_INPUT)
        shifted = np.concatenate([[self.decoder_start_token_id], np.asarray(input_ids, dtype=np.int64)[:-1]])
        hidden = rng.random(len(shifted)) < self.noise.decoder_mask_rate
        hidden[0] = False
        shifted[hidden] = self.mask_token_id
        return shifted.tolist()

    def __call__(self, examples: Sequence[Mapping]) -> dict[str, torch.Tensor]:
        corrupted, clean = [], []
        for example in examples:
            if "example_index" not in example:
                raise ValueError(
                    "each example needs an 'example_index' (its position in the dataset): the noise is a function "
                    "of (seed, epoch, example_index)."
                )
            clean.append(np.asarray(example["input_ids"]).tolist())  # lists, numpy arrays or tensors
            corrupted.append(
                self.corrupt(example["input_ids"], int(example["example_index"]), word_starts_of(example))
            )
        # Corrupted inputs and clean labels differ in length, so each is padded to its own width; the inputs
        # always carry an attention_mask (deletions make their rows unequal).
        lengths = [len(row) for row in corrupted]
        width = padded_width(lengths, self.pad_to_multiple_of)
        label_width = padded_width([len(row) for row in clean], self.pad_to_multiple_of)
        batch = {
            "input_ids": pad_rows(corrupted, self.pad_token_id, width),
            "attention_mask": attention_mask(lengths, width),
            "labels": pad_rows(clean, IGNORE_INDEX, label_width),
        }
        if self.noise.decoder_mask_rate > 0:
            rows = [
                self.decoder_inputs(np.asarray(example["input_ids"]), int(example["example_index"]))
                for example in examples
            ]
            batch["decoder_input_ids"] = pad_rows(rows, self.pad_token_id, label_width)
        return batch


def word_starts_of(example: Mapping):
    """Word-start flags under either name: `word_starts` (documents.prepare_documents) or `word_start`."""
    flags = example.get("word_starts")
    return example.get("word_start") if flags is None else flags


def sentence_end_token_ids(tokenizer, ends: Iterable[str] = (".", "!", "?")) -> list[int]:
    """The ids a tokenizer gives to sentence-final punctuation, glued to a word ("x.") and after a space ("x .").

    Asking the tokenizer instead of looking the strings up in its vocabulary also finds the spaced forms
    (byte-level BPE's "Ġ.", Unigram's "▁.").
    """
    found = set()
    for end in ends:
        for text in (f"x{end}", f"x {end}"):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if ids and tokenizer.decode(ids[-1:]).strip() == end:
                found.add(int(ids[-1]))
    return sorted(found)


def tokenize_for_denoising(
    tokenizer, texts: Sequence[str], start_index: int = 0, max_length: int | None = None
) -> list[dict]:
    """Examples ready for `DenoisingCollator`: input_ids (with the tokenizer's special tokens), word_start and
    example_index = start_index + position."""
    encoding = tokenizer(list(texts), truncation=max_length is not None, max_length=max_length)
    return [
        {
            "input_ids": encoding["input_ids"][row],
            "word_start": word_start_flags(encoding.word_ids(row)),
            "example_index": start_index + row,
        }
        for row in range(len(texts))
    ]


# --------------------------------------------------------------------------------------------------- features
class FeatureNoiseCollator:
    """Noise for float feature vectors (the continuous autoencoder): x~ = m * (x + s * e) + (1 - m) * mask_value,
    with m ~ Bernoulli(1 - mask_rate) per value and e ~ N(0, 1); `labels` are the clean x. Pure in
    (seed, epoch, example_index), like `DenoisingCollator`."""

    def __init__(self, gaussian_std: float = 0.0, mask_rate: float = 0.0, mask_value: float = 0.0, seed: int = 0):
        if isinstance(gaussian_std, bool) or not isinstance(gaussian_std, (int, float)) or gaussian_std < 0:
            raise ValueError(f"gaussian_std={gaussian_std!r} is not allowed; it must be a number >= 0.")
        if isinstance(mask_rate, bool) or not isinstance(mask_rate, (int, float)) or not 0.0 <= mask_rate < 1.0:
            raise ValueError(f"mask_rate={mask_rate!r} is not allowed; it must be a probability in [0, 1).")
        check_coordinates(seed, 0)
        self.gaussian_std, self.mask_rate, self.mask_value = float(gaussian_std), float(mask_rate), float(mask_value)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        check_coordinates(self.seed, epoch)
        self.epoch = int(epoch)

    def corrupt(self, features: np.ndarray, example_index: int) -> np.ndarray:
        rng = example_generator(self.seed, self.epoch, example_index, STREAM_INPUT)
        noisy = features + self.gaussian_std * rng.standard_normal(features.shape)
        kept = rng.random(features.shape) >= self.mask_rate
        return np.where(kept, noisy, self.mask_value)

    def __call__(self, examples: Sequence[Mapping]) -> dict[str, torch.Tensor]:
        clean = [np.asarray(example["input_features"], dtype=np.float64) for example in examples]
        noisy = [self.corrupt(x, int(example["example_index"])) for x, example in zip(clean, examples)]
        return {
            "input_features": torch.as_tensor(np.stack(noisy), dtype=torch.float32),
            "labels": torch.as_tensor(np.stack(clean), dtype=torch.float32),
        }


__all__ = [
    "BART_NOISE",
    "TSDAE_NOISE",
    "DenoisingCollator",
    "FeatureNoiseCollator",
    "sample_span_lengths",
    "tokenize_for_denoising",
    "sentence_end_token_ids",
]
