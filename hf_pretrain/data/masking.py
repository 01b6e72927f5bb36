"""Masked-LM noise: which tokens the model must predict, and what it sees in their place.

Why not transformers' DataCollatorForLanguageModeling: it draws from a global RNG (masks change with the number
of DataLoader workers, prefetching and resumes), its random replacements include special tokens, its whole-word
masking needs offset mappings and always uses [MASK], and it has no span masking. This collator keeps its
contract (probability, 0.8/0.1/0.1 split, no special or pad token selected, pad_to_multiple_of) and adds:

- Noise that is a pure function of (seed, epoch, example_index, position): every random number comes from a
  counter-based hash of those integers (randomness.py), vectorized over the batch. The same example gets the same
  mask in any worker, any batch composition, and after a resume; `set_epoch` changes it between epochs.
- Whole-word masking from the `word_starts` flags computed at tokenization time (from the fast tokenizer's word
  ids, so it works for WordPiece, byte-level BPE and Unigram). A word is selected with mlm_probability, so the
  expected share of selected tokens is still mlm_probability.
- Span masking (SpanBERT-style): spans of clipped-geometric length (in words when word_starts are given, else
  tokens) start at each unit with a probability solved so that the expected covered share is mlm_probability.
- The [MASK]/random/keep decision is made once per unit (word, or token) so a masked word is never half-hidden.
- At least one token is selected in every example that has a selectable token, so a batch never yields an
  empty loss (NaN); examples with nothing selectable (only special tokens) simply contribute no labels.

Public API
----------
`MaskingCollator(tokenizer, mlm_probability=0.15, mask_replace_prob=0.8, random_replace_prob=0.1,
                 whole_word=False, span=False, span_geometric_p=0.2, span_max_length=10, seed=0,
                 pad_to_multiple_of=None)`
    `collator(rows) -> {"input_ids", "labels", ["position_ids"], ["attention_mask"]}` (torch.long, (B, L));
    rows are dicts with `input_ids` and `example_index`, optionally `position_ids` and `word_starts`
    (`packing.pack_dataset` / `documents.prepare_documents` make them). `attention_mask` appears only when
    padding was added. `collator.set_epoch(epoch)`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .collation import IGNORE_INDEX, pad_features
from .randomness import example_keys, uniforms

# Independent random streams, one per decision, so changing one rule never shifts the numbers of another.
STREAM_SELECT, STREAM_REPLACE, STREAM_RANDOM_TOKEN, STREAM_SPAN_START, STREAM_SPAN_LENGTH, STREAM_GENERATOR_SAMPLE = (
    range(6)
)


def span_start_probability(target: float, geometric_p: float, max_length: int) -> float:
    """The per-unit span start probability q at which spans cover a `target` share of units.

    A unit is covered unless no span started k units earlier with length > k, for every k < max_length:
    coverage(q) = 1 - prod_k (1 - q * (1 - geometric_p) ** k). It rises from 0 to 1 with q; bisection finds q."""
    survival = [(1.0 - geometric_p) ** k for k in range(max_length)]

    def coverage(q: float) -> float:
        return 1.0 - math.prod(1.0 - q * s for s in survival)

    low, high = 0.0, 1.0
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if coverage(middle) < target else (low, middle)
    return (low + high) / 2


def check_probability(name: str, value: float, low_open: bool = False) -> None:
    inside = (0.0 < value <= 1.0) if low_open else (0.0 <= value <= 1.0)
    if not isinstance(value, (int, float)) or not inside:
        allowed = "(0, 1]" if low_open else "[0, 1]"
        raise ValueError(f"{name}={value!r} is not a probability in {allowed}.")


class MaskingCollator:
    """Batches rows and applies masked-LM noise that depends only on (seed, epoch, example_index)."""

    def __init__(
        self,
        tokenizer,
        mlm_probability: float = 0.15,
        mask_replace_prob: float = 0.8,
        random_replace_prob: float = 0.1,
        whole_word: bool = False,
        span: bool = False,
        span_geometric_p: float = 0.2,
        span_max_length: int = 10,
        seed: int = 0,
        pad_to_multiple_of: int | None = None,
        with_position_ids: bool = True,
    ):
        """`with_position_ids=False` leaves packed rows' per-document `position_ids` out of the batch, for models
        whose forward does not take them as they are (see training/objectives.py `packing_plan`)."""
        check_probability("mlm_probability", mlm_probability, low_open=True)
        check_probability("mask_replace_prob", mask_replace_prob)
        check_probability("random_replace_prob", random_replace_prob)
        if mask_replace_prob + random_replace_prob > 1.0 + 1e-9:
            raise ValueError(
                f"mask_replace_prob + random_replace_prob = {mask_replace_prob + random_replace_prob:g} exceeds 1; "
                "the rest of the selected tokens is kept unchanged, so the two must sum to at most 1."
            )
        check_probability("span_geometric_p", span_geometric_p, low_open=True)
        if not isinstance(span_max_length, int) or span_max_length < 1:
            raise ValueError(f"span_max_length={span_max_length!r}; allowed: an integer >= 1.")
        if pad_to_multiple_of is not None and (not isinstance(pad_to_multiple_of, int) or pad_to_multiple_of < 1):
            raise ValueError(f"pad_to_multiple_of={pad_to_multiple_of!r}; allowed: None or an integer >= 1.")
        if getattr(tokenizer, "mask_token_id", None) is None:
            raise ValueError("tokenizer has no mask_token; masked-LM noise needs one (e.g. '[MASK]').")
        self.mlm_probability = float(mlm_probability)
        self.mask_replace_prob = float(mask_replace_prob)
        self.random_replace_prob = float(random_replace_prob)
        self.whole_word = whole_word
        self.span = span
        self.span_geometric_p = span_geometric_p
        self.span_max_length = span_max_length
        self.span_start_q = span_start_probability(self.mlm_probability, span_geometric_p, span_max_length)
        self.seed = seed
        self.epoch = 0
        self.pad_to_multiple_of = pad_to_multiple_of
        self.with_position_ids = with_position_ids
        self.mask_token_id = tokenizer.mask_token_id
        self.pad_token_id = tokenizer.pad_token_id
        # Special tokens (named ones and added ones such as vocabulary fillers) are never selected and never
        # used as random replacements: the model should not learn to predict [CLS] in the middle of a sentence.
        special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
        self.special_ids = torch.tensor(sorted(special), dtype=torch.long)
        self.replacement_pool = np.array([i for i in range(len(tokenizer)) if i not in special], dtype=np.int64)
        if len(self.replacement_pool) == 0:
            raise ValueError("tokenizer has only special tokens; random replacements need ordinary ones.")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    # ------------------------------------------------------------------------------------------- batching
    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        if rows and "example_index" not in rows[0]:
            raise ValueError(
                f"rows have keys {sorted(rows[0])} but no 'example_index'; the mask is a function of it. "
                "Use packing.pack_dataset / documents.prepare_documents, or add an integer example_index column."
            )
        needs_words = self.whole_word
        if needs_words and "word_starts" not in rows[0]:
            raise ValueError(
                "whole_word=True needs 'word_starts' in every row; pack with with_word_starts=True."
            )
        batch = pad_features(rows, self.pad_token_id, self.pad_to_multiple_of)
        input_ids = batch["input_ids"]
        selectable = ~torch.isin(input_ids, self.special_ids)
        if "attention_mask" in batch:
            selectable &= batch["attention_mask"].bool()
        unit_starts = self.unit_starts(batch, selectable.shape)
        keys = example_keys(self.seed, self.epoch, batch["example_index"].numpy())
        selected = self.select(keys, unit_starts, selectable.numpy())
        labels = torch.where(torch.from_numpy(selected), input_ids, IGNORE_INDEX)
        noisy = self.replace(keys, unit_starts, selected, input_ids)
        out = {"input_ids": noisy, "labels": labels}
        for name in ("position_ids", "attention_mask") if self.with_position_ids else ("attention_mask",):
            if name in batch:
                out[name] = batch[name]
        return out

    def unit_starts(self, batch: dict, shape) -> np.ndarray:
        """(B, L) bool, True where a masking unit begins: words (whole_word, or span with word_starts) or tokens."""
        use_words = "word_starts" in batch and (self.whole_word or self.span)
        if not use_words:
            return np.ones(shape, dtype=bool)
        starts = batch["word_starts"].numpy().astype(bool)
        starts[:, 0] = True
        return starts

    # ------------------------------------------------------------------------------------------- selection
    def select(self, keys: np.ndarray, unit_starts: np.ndarray, selectable: np.ndarray) -> np.ndarray:
        rows, length = selectable.shape
        first_token = first_token_of_unit(unit_starts)
        if self.span:
            selected = self.span_cover(keys, unit_starts) & selectable
        else:
            draw = uniforms(keys, STREAM_SELECT, length)
            # Every token of a unit looks at the draw of the unit's first token: whole words go together.
            selected = (np.take_along_axis(draw, first_token, axis=1) < self.mlm_probability) & selectable
        return self.ensure_one_selected(keys, selected, selectable, first_token)

    def span_cover(self, keys: np.ndarray, unit_starts: np.ndarray) -> np.ndarray:
        """(B, L) bool: tokens covered by spans of units. Spans may also start up to span_max_length units
        before the row (virtual units), so the first positions are covered as often as the rest."""
        rows, length = unit_starts.shape
        unit_of_token = np.cumsum(unit_starts, axis=1) - 1  # (B, L), 0-based unit number
        reach = self.span_max_length
        units = length + reach  # unit numbers shifted by `reach`; a row never has more units than tokens
        starts = uniforms(keys, STREAM_SPAN_START, units, first_position=-reach) < self.span_start_q
        draw = uniforms(keys, STREAM_SPAN_LENGTH, units, first_position=-reach)
        span_length = clipped_geometric(draw, self.span_geometric_p, reach)
        covered_unit = np.zeros((rows, units), dtype=bool)
        for offset in range(reach):
            reaches = starts[:, : units - offset] & (span_length[:, : units - offset] > offset)
            covered_unit[:, offset:] |= reaches
        return np.take_along_axis(covered_unit, unit_of_token + reach, axis=1)

    def ensure_one_selected(self, keys, selected, selectable, first_token) -> np.ndarray:
        """Rows with a selectable token but nothing selected get the unit with the smallest draw selected."""
        empty_rows = np.flatnonzero(~selected.any(axis=1) & selectable.any(axis=1))
        if len(empty_rows) == 0:
            return selected
        draw = uniforms(keys[empty_rows], STREAM_SELECT, selected.shape[1])
        draw = np.where(selectable[empty_rows], draw, np.inf)
        chosen_unit = first_token[empty_rows, np.argmin(draw, axis=1)]
        selected[empty_rows] = (first_token[empty_rows] == chosen_unit[:, None]) & selectable[empty_rows]
        return selected

    # ------------------------------------------------------------------------------------------- replacement
    def replace(self, keys, unit_starts, selected: np.ndarray, input_ids: torch.Tensor) -> torch.Tensor:
        length = selected.shape[1]
        first_token = first_token_of_unit(unit_starts)
        decision = np.take_along_axis(uniforms(keys, STREAM_REPLACE, length), first_token, axis=1)
        to_mask = selected & (decision < self.mask_replace_prob)
        to_random = selected & ~to_mask & (decision < self.mask_replace_prob + self.random_replace_prob)
        token_draw = uniforms(keys, STREAM_RANDOM_TOKEN, length)
        random_ids = self.replacement_pool[(token_draw * len(self.replacement_pool)).astype(np.int64)]
        noisy = input_ids.clone()
        noisy[torch.from_numpy(to_mask)] = self.mask_token_id
        to_random_tensor = torch.from_numpy(to_random)
        noisy[to_random_tensor] = torch.from_numpy(random_ids)[to_random_tensor]
        return noisy


class ReplacedTokenCollator(MaskingCollator):
    """Masked-LM batches plus `sampling_uniforms` (B, L) float32 in [0, 1): the draws with which the replaced-token
    detection generator samples a replacement at each masked position (inverse CDF of its softmax). Drawn here
    from (seed, epoch, example_index) rather than from a global RNG on the device, so one process and two
    processes, and a resumed run, sample the same replacements."""

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        out = super().__call__(rows)
        keys = example_keys(self.seed, self.epoch, np.array([row["example_index"] for row in rows]))
        draws = uniforms(keys, STREAM_GENERATOR_SAMPLE, out["input_ids"].shape[1])
        out["sampling_uniforms"] = torch.from_numpy(draws.astype(np.float32))
        return out


def clipped_geometric(draw: np.ndarray, p: float, max_length: int) -> np.ndarray:
    """Inverse CDF of the geometric distribution on {1, 2, ...} with success probability p, clipped."""
    if p >= 1.0:
        return np.ones_like(draw)
    return np.minimum(1 + np.floor(np.log1p(-draw) / math.log1p(-p)), max_length)


def first_token_of_unit(unit_starts: np.ndarray) -> np.ndarray:
    """(B, L) index of the first token of the unit each token belongs to."""
    columns = np.arange(unit_starts.shape[1])
    return np.maximum.accumulate(np.where(unit_starts, columns, 0), axis=1)
