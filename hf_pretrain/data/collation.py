"""Rows of unequal length -> padded (B, L) tensors: the one padding helper every collator uses.

Public API
----------
`IGNORE_INDEX`: the label of a position the loss skips (padding, unselected tokens).
`pad_features(rows, pad_token_id, pad_to_multiple_of=None) -> dict[str, torch.Tensor]`: packed rows or documents
    (dicts with `input_ids` and optionally `position_ids`, `word_starts`, `example_index`) as one batch.
`padded_width(lengths, pad_to_multiple_of)`, `pad_rows(rows, fill, width)`, `attention_mask(lengths, width)`: the
    pieces, for collators whose rows are plain id lists (the denoising collator pads inputs and labels apart).
`CausalLMCollator`: packed rows -> next-token batches (the causal LM's collator; it has no noise).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

# torch's cross_entropy skips this label by default, and every Hugging Face model's loss follows it.
IGNORE_INDEX = -100


def padded_width(lengths: Sequence[int], pad_to_multiple_of: int | None) -> int:
    """The longest row, rounded up to a multiple of `pad_to_multiple_of` (tensor cores like multiples of 8)."""
    longest = max(lengths, default=0)
    return -(-longest // pad_to_multiple_of) * pad_to_multiple_of if pad_to_multiple_of else longest


def pad_rows(rows: Sequence, fill: int, width: int) -> torch.Tensor:
    """Right-pad int rows (lists, numpy arrays or tensors) with `fill` to (B, width) int64."""
    if all(len(row) == width for row in rows) and rows:
        return torch.as_tensor(np.stack([np.asarray(row) for row in rows])).long()  # no padding: one copy
    padded = torch.full((len(rows), width), fill, dtype=torch.long)
    for i, row in enumerate(rows):
        padded[i, : len(row)] = torch.as_tensor(np.asarray(row), dtype=torch.long)
    return padded


def attention_mask(lengths: Sequence[int], width: int) -> torch.Tensor:
    """(B, width) int64: 1 on the first `length` positions of each row (the real tokens), 0 on the padding."""
    return (torch.arange(width)[None, :] < torch.tensor(list(lengths))[:, None]).long()


def pad_features(rows: list[dict], pad_token_id: int, pad_to_multiple_of: int | None = None) -> dict[str, torch.Tensor]:
    """Stack rows into (B, L) long tensors, padding on the right. Adds `attention_mask` only when some row was
    padded (packed blocks never are, and the model then skips the mask); padded `position_ids`/`word_starts` get
    0, `example_index` is kept as (B,)."""
    if not rows:
        raise ValueError("rows is empty; a batch needs at least one example.")
    if pad_token_id is None:
        raise ValueError("pad_token_id is None; the tokenizer needs a pad token to batch rows of unequal length.")
    lengths = [len(row["input_ids"]) for row in rows]
    width = padded_width(lengths, pad_to_multiple_of)
    batch: dict[str, torch.Tensor] = {}
    for name in ("input_ids", "position_ids", "word_starts"):
        if name in rows[0]:
            batch[name] = pad_rows([row[name] for row in rows], pad_token_id if name == "input_ids" else 0, width)
    if any(length != width for length in lengths):
        batch["attention_mask"] = attention_mask(lengths, width)
    if "example_index" in rows[0]:
        batch["example_index"] = torch.as_tensor(np.asarray([int(row["example_index"]) for row in rows]))
    return batch


class CausalLMCollator:
    """Packed rows -> a causal-LM batch: `labels` are the input ids (the model shifts them: position t predicts
    token t + 1), IGNORE_INDEX where a token has nothing before it to predict it from — a row's first token and
    each document's first token (position id 0) — so no document is predicted from the end of another.

    `with_position_ids=False` leaves the per-document positions out (a transformers family continued here makes its
    own, as run_clm.py's rows do). No randomness: `set_epoch` exists for the loop's contract only."""

    def __init__(self, pad_token_id: int, with_position_ids: bool = True):
        self.pad_token_id = pad_token_id
        self.with_position_ids = with_position_ids

    def set_epoch(self, epoch: int) -> None:
        pass

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = pad_features(rows, self.pad_token_id)
        input_ids = batch["input_ids"]  # (B, L)
        labels = input_ids.clone()
        labels[:, 0] = IGNORE_INDEX
        if "position_ids" in batch:
            labels[batch["position_ids"] == 0] = IGNORE_INDEX
        if "attention_mask" in batch:
            labels[batch["attention_mask"] == 0] = IGNORE_INDEX
        out = {"input_ids": input_ids, "labels": labels}
        for name in ("position_ids", "attention_mask") if self.with_position_ids else ("attention_mask",):
            if name in batch:
                out[name] = batch[name]
        return out
