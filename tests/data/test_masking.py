"""The masked-LM collator: statistics over >= 100k tokens, whole words, spans, purity in (seed, epoch, index),
DataLoader workers and resume, padding, and finite losses when nothing would be masked."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset
from transformers import DataCollatorForLanguageModeling

from hf_pretrain import PretrainEncoderConfig, PretrainEncoderForMaskedLM
from hf_pretrain.data import documents, masking, packing
from hf_pretrain.data.collation import IGNORE_INDEX

BLOCK = 128
ROWS = 1000  # 128,000 tokens


@pytest.fixture(scope="module")
def packed(corpus, wordpiece, tmp_path_factory):
    dataset, _ = packing.pack_dataset(corpus, wordpiece, BLOCK, with_word_starts=True,
                                      cache_dir=tmp_path_factory.mktemp("packed"))
    return dataset


@pytest.fixture(scope="module")
def rows(packed):
    return [packed[i] for i in range(ROWS)]


def special_ids(tokenizer) -> torch.Tensor:
    return torch.tensor(sorted(set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)))


def collate_all(collator, rows, batch_size=50) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(original ids, noisy ids, labels) for all rows, stacked."""
    noisy, labels = [], []
    for start in range(0, len(rows), batch_size):
        batch = collator(rows[start : start + batch_size])
        noisy.append(batch["input_ids"])
        labels.append(batch["labels"])
    original = torch.as_tensor(np.stack([row["input_ids"] for row in rows])).long()
    return original, torch.cat(noisy), torch.cat(labels)


def noise_statistics(original, noisy, selected, tokenizer) -> dict[str, float]:
    specials = special_ids(tokenizer)
    candidates = ~torch.isin(original, specials) & (original != tokenizer.pad_token_id)
    chosen = noisy[selected]
    masked = chosen == tokenizer.mask_token_id
    kept = chosen == original[selected]
    return {
        "candidates": int(candidates.sum()),
        "rate": float(selected.sum() / candidates.sum()),
        "mask": float(masked.float().mean()),
        "random": float((~masked & ~kept).float().mean()),
        "keep": float(kept.float().mean()),
        "special_selected": int(torch.isin(original[selected], specials).sum()),
    }


@pytest.mark.parametrize("options", [{}, {"whole_word": True}, {"span": True}], ids=["token", "whole_word", "span"])
def test_selection_rate_and_replacement_shares(options, rows, wordpiece):
    collator = masking.MaskingCollator(wordpiece, **options)
    original, noisy, labels = collate_all(collator, rows)
    selected = labels != IGNORE_INDEX
    stats = noise_statistics(original, noisy, selected, wordpiece)
    assert stats["candidates"] >= 100_000
    assert abs(stats["rate"] - 0.15) <= 0.005, stats
    assert abs(stats["mask"] - 0.8) <= 0.01, stats
    assert abs(stats["random"] - 0.1) <= 0.01, stats
    assert abs(stats["keep"] - 0.1) <= 0.01, stats
    assert stats["special_selected"] == 0
    assert torch.equal(labels[selected], original[selected]), "labels hold the original ids"
    # Random replacements come from ordinary tokens only.
    replaced = selected & (noisy != original) & (noisy != wordpiece.mask_token_id)
    assert not torch.isin(noisy[replaced], special_ids(wordpiece)).any()


def test_same_statistics_as_transformers_collator(rows, wordpiece):
    ours = noise_statistics(*selected_view(masking.MaskingCollator(wordpiece, seed=1), rows), wordpiece)
    torch.manual_seed(1)
    reference = DataCollatorForLanguageModeling(wordpiece, mlm_probability=0.15)
    features = [{"input_ids": row["input_ids"].tolist()} for row in rows]
    noisy, labels = [], []
    for start in range(0, len(features), 50):
        batch = reference(features[start : start + 50])
        noisy.append(batch["input_ids"])
        labels.append(batch["labels"])
    original = torch.as_tensor(np.stack([row["input_ids"] for row in rows])).long()
    noisy, labels = torch.cat(noisy), torch.cat(labels)
    theirs = noise_statistics(original, noisy, labels != IGNORE_INDEX, wordpiece)
    assert theirs["special_selected"] == ours["special_selected"] == 0
    assert abs(ours["rate"] - theirs["rate"]) <= 0.006, (ours, theirs)
    for share in ("mask", "random", "keep"):
        assert abs(ours[share] - theirs[share]) <= 0.015, (share, ours, theirs)


def selected_view(collator, rows):
    original, noisy, labels = collate_all(collator, rows)
    return original, noisy, labels != IGNORE_INDEX


def word_ids_of(row) -> np.ndarray:
    starts = row["word_starts"].astype(bool).copy()
    starts[0] = True
    return np.cumsum(starts)


def test_whole_words_are_masked_and_replaced_together(rows, wordpiece):
    collator = masking.MaskingCollator(wordpiece, whole_word=True)
    original, noisy, labels = collate_all(collator, rows[:300])
    specials = special_ids(wordpiece)
    multi_token_words_selected = 0
    for row_number, row in enumerate(rows[:300]):
        words = word_ids_of(row)
        ordinary = ~torch.isin(original[row_number], specials).numpy()
        selected = (labels[row_number] != IGNORE_INDEX).numpy()
        as_mask = (noisy[row_number] == wordpiece.mask_token_id).numpy()
        for word in np.unique(words[ordinary]):
            members = (words == word) & ordinary
            assert selected[members].all() or not selected[members].any(), "a word is selected whole or not at all"
            if selected[members].all():
                assert as_mask[members].all() or not as_mask[members].any(), "one replacement decision per word"
                multi_token_words_selected += members.sum() > 1
    assert multi_token_words_selected > 100


def masked_runs(selected: torch.Tensor) -> list[int]:
    runs = []
    for row in selected.numpy():
        edges = np.diff(np.concatenate([[0], row.astype(int), [0]]))
        runs.extend((np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).tolist())
    return runs


def test_span_masking_makes_contiguous_spans(rows, wordpiece):
    token_rows = [{k: v for k, v in row.items() if k != "word_starts"} for row in rows]
    spans = masked_runs(selected_view(masking.MaskingCollator(wordpiece, span=True), token_rows)[2])
    singles = masked_runs(selected_view(masking.MaskingCollator(wordpiece), token_rows)[2])
    # Clipped geometric(0.2) spans average ~3.4 tokens (less where spans merge or hit special tokens);
    # independent token selection averages ~1.2.
    assert np.mean(spans) > 2.5 > 1.3 > np.mean(singles)
    assert max(spans) >= 10


def test_mask_is_a_pure_function_of_seed_epoch_and_example_index(rows, wordpiece):
    collator = masking.MaskingCollator(wordpiece, whole_word=True, seed=7)
    together = collator(rows[:32])
    order = [5, 31, 0, 17, 2, 9, 30, 1]
    apart = collator([rows[i] for i in order])
    for position, i in enumerate(order):
        assert torch.equal(apart["input_ids"][position], together["input_ids"][i])
        assert torch.equal(apart["labels"][position], together["labels"][i])
    assert torch.equal(masking.MaskingCollator(wordpiece, whole_word=True, seed=7)(rows[:32])["labels"],
                       together["labels"])
    assert not torch.equal(masking.MaskingCollator(wordpiece, whole_word=True, seed=8)(rows[:32])["labels"],
                           together["labels"])
    collator.set_epoch(1)
    next_epoch = collator(rows[:32])
    assert not torch.equal(next_epoch["labels"], together["labels"])
    collator.set_epoch(0)
    assert torch.equal(collator(rows[:32])["labels"], together["labels"])


def test_identical_across_dataloader_workers_and_after_resume(packed, wordpiece):
    subset = Subset(packed, range(96))
    collator = masking.MaskingCollator(wordpiece, seed=3)

    def run(dataset, workers):
        loader = DataLoader(dataset, batch_size=8, collate_fn=collator, num_workers=workers)
        return torch.cat([batch["input_ids"] for batch in loader]), torch.cat([batch["labels"] for batch in loader])

    single = run(subset, 0)
    multi = run(subset, 2)
    assert torch.equal(single[0], multi[0]) and torch.equal(single[1], multi[1])
    # Resume after 5 batches: a fresh loader over the remaining rows gives the same noise for them.
    resumed = run(Subset(packed, range(40, 96)), 0)
    assert torch.equal(resumed[1], single[1][40:]) and torch.equal(resumed[0], single[0][40:])


def tiny_model(vocab_size: int) -> PretrainEncoderForMaskedLM:
    torch.manual_seed(0)
    config = PretrainEncoderConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=1,
                                   num_attention_heads=4, intermediate_size=48, max_position_embeddings=BLOCK)
    return PretrainEncoderForMaskedLM(config).eval()


def test_rows_where_nothing_was_drawn_still_give_a_finite_loss(rows, wordpiece):
    collator = masking.MaskingCollator(wordpiece, mlm_probability=1e-9)
    batch = collator(rows[:4])
    per_row = (batch["labels"] != IGNORE_INDEX).sum(dim=1)
    assert per_row.tolist() == [1, 1, 1, 1], "exactly one forced selection per example"
    model = tiny_model(len(wordpiece))
    with torch.no_grad():
        loss = model(**batch).loss
    assert torch.isfinite(loss) and loss > 0
    # Nothing selectable at all (only special tokens, then padding): no labels, and a loss of 0, not NaN.
    only_specials = [{"input_ids": np.array([wordpiece.cls_token_id, wordpiece.sep_token_id]), "example_index": 0},
                     {"input_ids": np.array([wordpiece.cls_token_id]), "example_index": 1}]
    empty = collator(only_specials)
    assert (empty["labels"] == IGNORE_INDEX).all()
    with torch.no_grad():
        loss = model(**empty).loss
    assert torch.isfinite(loss) and loss.item() == 0.0


def test_output_batch_matches_what_the_model_consumes(rows, small_corpus, wordpiece):
    packed_batch = masking.MaskingCollator(wordpiece)(rows[:4])
    assert set(packed_batch) == {"input_ids", "labels", "position_ids"}
    for value in packed_batch.values():
        assert value.dtype == torch.long and value.shape == (4, BLOCK)
    whole_documents, _ = documents.prepare_documents(small_corpus, wordpiece, 40)
    padded = masking.MaskingCollator(wordpiece, pad_to_multiple_of=16)([whole_documents[i] for i in range(8)])
    assert set(padded) == {"input_ids", "labels", "attention_mask"}
    assert padded["input_ids"].shape[1] % 16 == 0
    pads = padded["attention_mask"] == 0
    assert pads.any() and (padded["labels"][pads] == IGNORE_INDEX).all()
    assert (padded["input_ids"][pads] == wordpiece.pad_token_id).all()
    with torch.no_grad():
        assert torch.isfinite(tiny_model(len(wordpiece))(**padded_batch_for_model(padded)).loss)


def padded_batch_for_model(batch):
    return {key: batch[key] for key in ("input_ids", "attention_mask", "labels")}


@pytest.mark.parametrize(
    "options, message",
    [
        ({"mlm_probability": 0.0}, r"mlm_probability=0.0 .*\(0, 1\]"),
        ({"mlm_probability": 1.5}, "mlm_probability=1.5"),
        ({"mask_replace_prob": 0.8, "random_replace_prob": 0.3}, "exceeds 1"),
        ({"span_max_length": 0}, "span_max_length=0"),
        ({"pad_to_multiple_of": 0}, "pad_to_multiple_of=0"),
    ],
)
def test_bad_settings_are_named(options, message, wordpiece):
    with pytest.raises(ValueError, match=message):
        masking.MaskingCollator(wordpiece, **options)


def test_missing_columns_are_explained(rows, wordpiece):
    with pytest.raises(ValueError, match="example_index"):
        masking.MaskingCollator(wordpiece)([{"input_ids": rows[0]["input_ids"]}])
    with pytest.raises(ValueError, match="with_word_starts=True"):
        masking.MaskingCollator(wordpiece, whole_word=True)(
            [{"input_ids": rows[0]["input_ids"], "example_index": 0}]
        )


def test_span_start_probability_hits_the_target_coverage():
    q = masking.span_start_probability(0.15, 0.2, 10)
    survival = [(0.8) ** k for k in range(10)]
    assert abs((1 - np.prod([1 - q * s for s in survival])) - 0.15) < 1e-9
