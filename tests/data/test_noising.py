"""Noise for the denoising autoencoder: rates and span statistics over >= 100k tokens, special tokens untouched,
whole words, permutation keeps the multiset, and noise that depends only on (seed, epoch, example index)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hf_pretrain.data.collation import IGNORE_INDEX
from hf_pretrain.data.noising import (
    BART_NOISE,
    STREAM_INPUT,
    TSDAE_NOISE,
    DenoisingCollator,
    FeatureNoiseCollator,
    sample_span_lengths,
    tokenize_for_denoising,
)
from hf_pretrain.data.randomness import example_generator
from hf_pretrain.recipe import NoiseSection, load_recipe, recipe_from_dict

PAD, UNK, CLS, SEP, MASK, DOT = 0, 1, 2, 3, 4, 5
SPECIALS = (PAD, UNK, CLS, SEP, MASK)
# Every content token of an example gets its own id from [CONTENT_BASE, CONTENT_BASE + 100k), so an output token
# names its source position; the collator's vocabulary (what random insertion draws from) stays below CONTENT_BASE,
# so an inserted token is never mistaken for an original one.
CONTENT_BASE = 1000
VOCAB = CONTENT_BASE


def synthetic_examples(count: int, length: int, seed: int = 0, sentences: bool = False, middle_sep: bool = False):
    """[CLS] content [SEP] with UNIQUE content ids per example (so an output token names its source position),
    random word starts (about 2 tokens per word), optional '.' sentence ends and an inner [SEP] between two runs."""
    rng = np.random.default_rng(seed)
    examples = []
    for index in range(count):
        n = int(rng.integers(length // 2, length * 3 // 2))
        content = (CONTENT_BASE + rng.permutation(100_000)[:n]).tolist()
        word_start = (rng.random(n) < 0.5).astype(int).tolist()
        word_start[0] = 1
        if sentences:
            for position in range(int(rng.integers(6, 12)), n, int(rng.integers(6, 12))):
                content[position - 1] = DOT
                word_start[position - 1] = 1
        if middle_sep:
            content[n // 2] = SEP
            word_start[n // 2] = 0
        examples.append(
            {
                "input_ids": [CLS] + content + [SEP],
                "word_start": [0] + word_start + [0],
                "example_index": index,
            }
        )
    return examples


def only(**rates) -> NoiseSection:
    """These rates and no other noise (the section's own defaults delete 60% of the words, TSDAE's setting)."""
    return NoiseSection(**{"word_delete_rate": 0.0, **rates})


def collator(noise: NoiseSection, seed: int = 0, **kwargs) -> DenoisingCollator:
    return DenoisingCollator(
        mask_token_id=MASK,
        pad_token_id=PAD,
        vocab_size=VOCAB,
        special_token_ids=SPECIALS,
        noise=noise,
        seed=seed,
        sentence_end_ids=[DOT],
        **kwargs,
    )


def corrupt_all(noise: NoiseSection, examples, seed: int = 0):
    noiser = collator(noise, seed)
    return [noiser.corrupt(e["input_ids"], e["example_index"], e["word_start"]) for e in examples]


def content(ids):
    return [token for token in ids if token not in SPECIALS]


# 400 examples x ~300 content tokens = ~120k tokens
@pytest.fixture(scope="module")
def corpus():
    examples = synthetic_examples(400, 300)
    assert sum(len(e["input_ids"]) - 2 for e in examples) >= 100_000
    return examples


def assert_specials_in_place(clean, noisy):
    assert noisy[0] == CLS and noisy[-1] == SEP
    assert [t for t in noisy if t in (CLS, SEP)] == [t for t in clean if t in (CLS, SEP)]


# --------------------------------------------------------------------------------------------------- rates
def test_token_masking_rate(corpus):
    noisy = corrupt_all(only(mask_rate=0.3), corpus)
    total = masked = 0
    for example, out in zip(corpus, noisy):
        clean = example["input_ids"]
        assert len(out) == len(clean)
        assert_specials_in_place(clean, out)
        changed = [(a, b) for a, b in zip(clean, out) if a != b]
        assert all(b == MASK for _, b in changed)
        total += len(clean) - 2
        masked += len(changed)
    assert abs(masked / total - 0.3) < 0.01


def test_token_deletion_rate_and_order(corpus):
    noisy = corrupt_all(only(delete_rate=0.2), corpus)
    total = kept = 0
    for example, out in zip(corpus, noisy):
        clean = example["input_ids"]
        assert_specials_in_place(clean, out)
        positions = [clean.index(token) for token in content(out)]
        assert positions == sorted(positions)  # a subsequence: deletion never reorders
        total += len(clean) - 2
        kept += len(out) - 2
    assert abs(1 - kept / total - 0.2) < 0.01


def test_whole_word_deletion_rate_and_whole_words(corpus):
    noisy = corrupt_all(TSDAE_NOISE, corpus)
    words = deleted = 0
    for example, out in zip(corpus, noisy):
        clean, starts = example["input_ids"], example["word_start"]
        survivors = set(content(out))
        assert set(out) <= set(clean)  # deletion only: nothing masked, inserted or replaced
        word_of = np.cumsum(starts)  # word number per position
        for word in np.unique(word_of[1:-1]):
            members = [clean[p] for p in np.flatnonzero(word_of == word) if clean[p] not in SPECIALS]
            inside = [m in survivors for m in members]
            assert all(inside) or not any(inside), "a word was cut in pieces"
            words += 1
            deleted += not any(inside)
    assert abs(deleted / words - 0.6) < 0.01


def test_word_deletion_without_word_starts_deletes_tokens(corpus):
    noiser = collator(TSDAE_NOISE)
    clean = corpus[0]["input_ids"]
    out = noiser.corrupt(clean, 0, word_start=None)
    assert_specials_in_place(clean, out)
    assert abs((len(clean) - len(out)) / (len(clean) - 2) - 0.6) < 0.15


def test_span_infilling_rate_and_poisson_span_lengths():
    examples = synthetic_examples(200, 600, seed=1)  # long documents: the budget cut of the last span is rare
    noisy = corrupt_all(only(infill_rate=0.3, poisson_lambda=3.0), examples)
    total = removed = masks = 0
    for example, out in zip(examples, noisy):
        clean = example["input_ids"]
        assert_specials_in_place(clean, out)
        kept_positions = [clean.index(t) for t in out if t not in SPECIALS]
        assert kept_positions == sorted(kept_positions)
        # Every gap left by a covered span is marked by at least one mask token right there.
        for before, after in zip(out[:-1], out[1:]):
            if before not in SPECIALS and after not in SPECIALS:
                assert clean.index(after) == clean.index(before) + 1, "tokens vanished without a mask"
        total += len(clean) - 2
        removed += len(clean) - 2 - len(kept_positions)
        masks += out.count(MASK)
    assert abs(removed / total - 0.3) < 0.01
    # Each mask stands for one span (0-length spans included), so covered tokens per mask = mean span length.
    assert abs(removed / masks - 3.0) < 0.15


def test_span_lengths_are_poisson_and_add_up_to_the_budget():
    rng = example_generator(0, 0, 0, STREAM_INPUT)
    lengths = np.concatenate([sample_span_lengths(rng, 300, 3.0)[:-1] for _ in range(300)])  # drop the cut span
    assert lengths.size > 20_000
    assert abs(lengths.mean() - 3.0) < 0.05 and abs(lengths.var() - 3.0) < 0.15
    assert abs((lengths == 0).mean() - math.exp(-3.0)) < 0.01
    for budget in (1, 2, 17, 250):
        assert sample_span_lengths(rng, budget, 3.0).sum() == budget
    assert sample_span_lengths(rng, 0, 3.0).size == 0


def test_zero_length_spans_insert_a_mask():
    examples = synthetic_examples(50, 200, seed=2)
    noisy = corrupt_all(only(infill_rate=0.3, poisson_lambda=0.5), examples)  # P(0) = 61%
    inserted = 0
    for example, out in zip(examples, noisy):
        clean = example["input_ids"]
        for left, middle, right in zip(out, out[1:], out[2:]):
            if middle == MASK and left not in SPECIALS and right not in SPECIALS:
                inserted += clean.index(right) == clean.index(left) + 1  # a mask between neighbours: an insert
    assert inserted > 100


def test_random_insertion_rate_and_inserted_tokens_are_ordinary(corpus):
    noisy = corrupt_all(only(insert_rate=0.1), corpus)
    total = inserted = 0
    for example, out in zip(corpus, noisy):
        clean = example["input_ids"]
        assert_specials_in_place(clean, out)
        new = [t for t in out if t < CONTENT_BASE and t not in SPECIALS]
        assert [t for t in out if t >= CONTENT_BASE or t in SPECIALS] == clean  # originals untouched, in order
        assert len(new) == len(out) - len(clean)  # every added token is an ordinary (non-special) one
        total += len(clean) - 2
        inserted += len(new)
    assert abs(inserted / total - 0.1) < 0.01


def test_sentence_permutation_keeps_the_multiset_and_whole_sentences():
    examples = synthetic_examples(100, 80, seed=3, sentences=True)
    noisy = corrupt_all(only(permute_sentences=1.0), examples)
    reordered = 0
    for example, out in zip(examples, noisy):
        clean = example["input_ids"]
        assert sorted(out) == sorted(clean)
        assert_specials_in_place(clean, out)
        # Each sentence (ending at '.') is still contiguous and in its own order.
        bounds = [0] + [i + 1 for i, t in enumerate(clean[1:-1]) if t == DOT] + [len(clean) - 2]
        for start, end in zip(bounds[:-1], bounds[1:]):
            sentence = clean[1 + start : 1 + end]
            where = out.index(sentence[0]) if sentence[0] != DOT else None
            if where is not None and len(sentence) > 1:
                assert out[where : where + len(sentence)] == sentence
        reordered += out != clean
    assert reordered > 90


def test_document_rotation_rate_and_cyclic_shift(corpus):
    noisy = corrupt_all(only(rotate_rate=0.5), corpus)
    rotated = 0
    for example, out in zip(corpus, noisy):
        clean = example["input_ids"]
        assert_specials_in_place(clean, out)
        body, shifted = clean[1:-1], out[1:-1]
        offset = body.index(shifted[0])
        assert shifted == body[offset:] + body[:offset]
        rotated += offset != 0
    assert abs(rotated / len(corpus) - 0.5) < 0.08  # binomial(400, 0.5): std 0.025


def test_special_tokens_never_corrupted_and_runs_stay_apart():
    examples = synthetic_examples(100, 60, seed=4, sentences=True, middle_sep=True)
    heavy = only(
        mask_rate=0.3,
        delete_rate=0.2,
        word_delete_rate=0.3,
        infill_rate=0.3,
        permute_sentences=1.0,
        rotate_rate=1.0,
        insert_rate=0.2,
    )
    for example, out in zip(examples, corrupt_all(heavy, examples)):
        clean = example["input_ids"]
        assert_specials_in_place(clean, out)
        assert out.count(SEP) == 2
        middle = out.index(SEP)
        first_run = {t for t in clean[1 : clean.index(SEP)] if t >= CONTENT_BASE}
        second_run = {t for t in clean[clean.index(SEP) + 1 : -1] if t >= CONTENT_BASE}
        assert not set(out[1:middle]) & second_run and not set(out[middle + 1 : -1]) & first_run


@pytest.mark.parametrize(
    "noise",
    [
        only(delete_rate=0.95),
        only(word_delete_rate=0.95),
        only(infill_rate=0.95, poisson_lambda=3.0),
    ],
)
def test_at_least_one_token_is_kept(noise):
    examples = synthetic_examples(300, 4, seed=5)  # 2 to 5 content tokens
    for example, out in zip(examples, corrupt_all(noise, examples)):
        assert len([t for t in content(out)]) >= 1
        assert set(content(out)) & set(content(example["input_ids"]))


# --------------------------------------------------------------------------------------------------- determinism
def test_noise_depends_only_on_seed_epoch_and_index(corpus):
    noiser = collator(
        only(mask_rate=0.1, word_delete_rate=0.2, infill_rate=0.3, insert_rate=0.05, rotate_rate=0.5)
    )
    batch = corpus[:6]
    together = noiser(batch)
    reversed_alone = noiser(batch[::-1][:3])  # rows 5, 4, 3 in another batch and order
    for row, example in zip(range(3), batch[::-1][:3]):
        original_row = batch.index(example)
        length = int(together["attention_mask"][original_row].sum())
        assert torch.equal(reversed_alone["input_ids"][row, :length], together["input_ids"][original_row, :length])
    single = noiser([batch[2]])
    assert single["input_ids"][0].tolist() == together["input_ids"][2, : single["input_ids"].shape[1]].tolist()

    noiser.set_epoch(1)
    assert not torch.equal(noiser(batch)["input_ids"], together["input_ids"])
    noiser.set_epoch(0)
    assert torch.equal(noiser(batch)["input_ids"], together["input_ids"])
    other_seed = collator(noiser.noise, seed=1)
    assert not torch.equal(other_seed(batch)["input_ids"], together["input_ids"])
    assert collator(noiser.noise)(batch)["input_ids"].tolist() == together["input_ids"].tolist()  # a new object


def test_batch_layout():
    examples = synthetic_examples(4, 10, seed=6)
    batch = collator(only(delete_rate=0.3), pad_to_multiple_of=8)(examples)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["input_ids"].dtype == torch.long and batch["input_ids"].shape[1] % 8 == 0
    for row, example in enumerate(examples):
        length = len(example["input_ids"])
        assert batch["labels"][row, :length].tolist() == example["input_ids"]
        assert (batch["labels"][row, length:] == IGNORE_INDEX).all()
        real = int(batch["attention_mask"][row].sum())
        assert (batch["input_ids"][row, real:] == PAD).all() and batch["attention_mask"][row, :real].all()


def test_decoder_input_masking_rate_and_layout(corpus):
    start = CLS
    noise = only(word_delete_rate=0.6, decoder_mask_rate=0.3)
    with_decoder = collator(noise, decoder_start_token_id=start)
    without = collator(only(word_delete_rate=0.6))
    hidden = total = 0
    for first in range(0, len(corpus), 50):
        examples = corpus[first : first + 50]
        batch, plain = with_decoder(examples), without(examples)
        # The input noise is drawn from its own stream: identical with and without decoder masking.
        assert torch.equal(batch["input_ids"], plain["input_ids"]) and torch.equal(batch["labels"], plain["labels"])
        decoder = batch["decoder_input_ids"]
        assert decoder.shape == batch["labels"].shape and (decoder[:, 0] == start).all()
        for row, example in enumerate(examples):
            length = len(example["input_ids"])
            shifted = torch.tensor([start] + example["input_ids"][:-1])
            row_ids = decoder[row, :length]
            masked = row_ids == MASK
            assert torch.equal(row_ids[~masked], shifted[~masked])  # every other position is the clean prefix
            assert (decoder[row, length:] == PAD).all()
            hidden += int(masked[1:].sum())
            total += length - 1
    assert total >= 100_000
    assert abs(hidden / total - 0.3) < 0.01
    # Same (seed, epoch, index) -> same decoder mask; a new epoch -> a new one.
    again = collator(noise, decoder_start_token_id=start)(corpus[:8])["decoder_input_ids"]
    assert torch.equal(again, with_decoder(corpus[:8])["decoder_input_ids"])
    with_decoder.set_epoch(1)
    assert not torch.equal(again, with_decoder(corpus[:8])["decoder_input_ids"])
    # Rate 0: no decoder inputs in the batch (the model shifts the labels itself).
    assert "decoder_input_ids" not in without(corpus[:2])
    with pytest.raises(ValueError, match="decoder_mask_rate=0.3 needs decoder_start_token_id"):
        collator(noise)
    with pytest.raises(ValueError, match=r"noise.decoder_mask_rate=1.5 is not allowed"):
        only(decoder_mask_rate=1.5)


def test_bad_settings_and_inputs_fail_clearly():
    # A noise section built in Python gets the checks (and the messages) of a recipe's noise section.
    with pytest.raises(ValueError, match=r"noise.mask_rate=1.5 is not allowed; it must be <= 1.0"):
        only(mask_rate=1.5)
    with pytest.raises(ValueError, match=r"noise.word_delete_rate=1.0 is not allowed; it must be <= 0.99"):
        only(word_delete_rate=1.0)
    with pytest.raises(ValueError, match=r"noise.poisson_lambda=0.0 is not allowed; it must be > 0"):
        only(poisson_lambda=0)
    with pytest.raises(ValueError, match=r"noise.mask_rate=True is not allowed; it must be a number"):
        only(mask_rate=True)
    with pytest.raises(ValueError, match="needs sentence_end_ids"):
        DenoisingCollator(MASK, PAD, VOCAB, SPECIALS, noise=BART_NOISE)
    with pytest.raises(ValueError, match="example_index"):
        collator(only())([{"input_ids": [CLS, 7, SEP]}])
    with pytest.raises(ValueError, match="seed=-1 is not allowed"):
        collator(only(), seed=-1)
    # A mapping means what the same keys mean in a recipe's noise section (its defaults included).
    assert collator({"mask_rate": 0.2}).noise == NoiseSection(mask_rate=0.2)


def test_shipped_recipes_train_with_the_published_noise():
    assert load_recipe("dae-bart").noise == BART_NOISE
    assert load_recipe("dae-sentence").noise == TSDAE_NOISE
    # A dae recipe that names no noise trains a TSDAE.
    assert recipe_from_dict({"objective": "dae", "train": {"max_steps": 1}}).noise == TSDAE_NOISE


def test_bart_noise_infills_and_permutes_without_deleting_words():
    examples = synthetic_examples(200, 300, seed=7, sentences=True)
    noisy = corrupt_all(BART_NOISE, examples)
    total = removed = reordered = 0
    for example, out in zip(examples, noisy):
        clean = example["input_ids"]
        assert_specials_in_place(clean, out)
        assert set(out) <= set(clean) | {MASK}  # nothing inserted or replaced except by the span masks
        kept = [t for t in out if t not in SPECIALS]
        total += len(clean) - 2
        removed += len(clean) - 2 - len(kept)
        reordered += [clean.index(t) for t in kept] != sorted(clean.index(t) for t in kept)
    assert abs(removed / total - 0.3) < 0.01  # the infilled 30% only: a word deletion would remove far more
    assert reordered > 190


# --------------------------------------------------------------------------------------------------- tokenizers
def build_tokenizer(kind: str):
    """A small tokenizer trained here on generated words (no download): WordPiece or byte-level BPE."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    rng = np.random.default_rng(0)
    syllables = ["ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "bra", "ex"]
    words = ["".join(rng.choice(syllables, size=int(rng.integers(1, 5)))) for _ in range(300)]
    texts = [" ".join(rng.choice(words, size=8)) + " ." for _ in range(500)]
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    if kind == "wordpiece":
        backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        backend.pre_tokenizer = pre_tokenizers.Whitespace()
        backend.decoder = decoders.WordPiece(cleanup=False)  # keep " ." a word of its own
        trainer = trainers.WordPieceTrainer(vocab_size=120, special_tokens=specials)
    else:
        backend = Tokenizer(models.BPE())
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        )
    backend.train_from_iterator(texts, trainer)
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    return tokenizer, texts


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_word_starts_come_from_the_tokenizer_words(kind):
    tokenizer, texts = build_tokenizer(kind)
    examples = tokenize_for_denoising(tokenizer, texts[:50], start_index=1000)
    assert [e["example_index"] for e in examples[:3]] == [1000, 1001, 1002]
    for text, example in zip(texts, examples):
        # one start per whitespace word ('.' included), and [CLS], [SEP] count as words of their own
        assert sum(example["word_start"]) == len(text.split()) + 2
        assert example["word_start"][0] == example["word_start"][-1] == 1
    continuations = sum(len(e["word_start"]) - sum(e["word_start"]) for e in examples)
    assert continuations > 50, "expected many words of several tokens"

    # Whole-word deletion on real tokenization: decoded output words are all words of the input.
    noiser = DenoisingCollator.from_tokenizer(tokenizer, TSDAE_NOISE, seed=0)
    batch = noiser(examples)
    # The '.' that ends every text is found, in the form the tokenizer really produces after a space.
    final_dot = examples[0]["input_ids"][-2]
    assert tokenizer.decode([final_dot]).strip() == "." and final_dot in noiser.sentence_end_ids.tolist()
    for row, text in enumerate(texts[:50]):
        decoded = tokenizer.decode(batch["input_ids"][row], skip_special_tokens=True).split()
        assert 1 <= len(decoded) < len(text.split()) and set(decoded) <= set(text.split())


# --------------------------------------------------------------------------------------------------- features
def test_feature_noise_statistics_and_determinism():
    features = np.random.default_rng(0).random((500, 256))
    examples = [{"input_features": row, "example_index": i} for i, row in enumerate(features)]
    noiser = FeatureNoiseCollator(gaussian_std=0.5, mask_rate=0.25, mask_value=-1.0, seed=3)
    batch = noiser(examples)
    assert batch["input_features"].shape == batch["labels"].shape == (500, 256)
    torch.testing.assert_close(batch["labels"], torch.as_tensor(features, dtype=torch.float32))
    masked = batch["input_features"] == -1.0
    assert abs(masked.float().mean().item() - 0.25) < 0.01
    residual = (batch["input_features"] - batch["labels"])[~masked]
    assert abs(residual.std().item() - 0.5) < 0.01 and abs(residual.mean().item()) < 0.01
    again = noiser(examples[::-1][:10])
    assert torch.equal(again["input_features"], batch["input_features"].flip(0)[:10])
    noiser.set_epoch(2)
    assert not torch.equal(noiser(examples[:10])["input_features"], batch["input_features"][:10])
    with pytest.raises(ValueError, match="mask_rate=1.0 is not allowed"):
        FeatureNoiseCollator(mask_rate=1.0)


def test_word_deletion_ignores_the_flags_of_special_tokens(corpus):
    """Packing flags special tokens as word starts, tokenize_for_denoising did not: the corruption is the same, so
    one word_start_flags serves both."""
    noiser = collator(TSDAE_NOISE)
    for example in corpus[:50]:
        flags = list(example["word_start"])
        flagged = [1 if token in SPECIALS else flag for token, flag in zip(example["input_ids"], flags)]
        assert flagged != flags
        index = example["example_index"]
        assert noiser.corrupt(example["input_ids"], index, flagged) == noiser.corrupt(example["input_ids"], index, flags)
