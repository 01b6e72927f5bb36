"""Padding rows into batches: one helper for packed rows, whole documents and the denoising collator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_pretrain.data import collation


def test_pad_features_adds_attention_mask_only_when_padding():
    rows = [{"input_ids": np.array([2, 7, 3]), "example_index": 0}, {"input_ids": np.array([2, 3]), "example_index": 1}]
    batch = collation.pad_features(rows, pad_token_id=0, pad_to_multiple_of=4)
    assert batch["input_ids"].tolist() == [[2, 7, 3, 0], [2, 3, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 0, 0]]
    assert batch["input_ids"].dtype == torch.long
    same = collation.pad_features([rows[0], rows[0]], pad_token_id=0)
    assert "attention_mask" not in same


def test_pad_features_pads_positions_and_word_starts_with_zero():
    rows = [
        {"input_ids": [5, 6, 7], "position_ids": [0, 1, 2], "word_starts": [1, 0, 1], "example_index": 4},
        {"input_ids": [5], "position_ids": [0], "word_starts": [1], "example_index": 9},
    ]
    batch = collation.pad_features(rows, pad_token_id=1)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 1, 1]]
    assert batch["position_ids"].tolist() == [[0, 1, 2], [0, 0, 0]]
    assert batch["word_starts"].tolist() == [[1, 0, 1], [1, 0, 0]]
    assert batch["example_index"].tolist() == [4, 9]
    with pytest.raises(ValueError, match="rows is empty"):
        collation.pad_features([], pad_token_id=1)
    with pytest.raises(ValueError, match="pad_token_id is None"):
        collation.pad_features(rows, pad_token_id=None)


def test_pad_rows_and_attention_mask():
    rows = [[4, 5, 6], np.array([7]), torch.tensor([8, 9])]  # lists, arrays and tensors alike
    width = collation.padded_width([len(row) for row in rows], pad_to_multiple_of=8)
    assert width == 8 and collation.padded_width([3, 1], None) == 3 and collation.padded_width([], None) == 0
    padded = collation.pad_rows(rows, collation.IGNORE_INDEX, width)
    assert padded.dtype == torch.long and padded.shape == (3, 8)
    assert padded[1].tolist() == [7] + [collation.IGNORE_INDEX] * 7
    mask = collation.attention_mask([3, 1, 2], width)
    assert mask.sum(dim=1).tolist() == [3, 1, 2] and bool((padded[mask == 0] == collation.IGNORE_INDEX).all())


def test_ignore_index_is_what_the_loss_skips():
    logits = torch.randn(3, 5)
    labels = torch.tensor([1, collation.IGNORE_INDEX, 4])
    # torch's default ignore_index (what every model's loss uses) must be the label the collators write.
    torch.testing.assert_close(torch.nn.functional.cross_entropy(logits, labels),
                               torch.nn.functional.cross_entropy(logits[[0, 2]], labels[[0, 2]]))
