"""Document encoding: word starts from the tokenizer's words (special tokens are words of their own), and
special-token strings inside the text stay text."""

from __future__ import annotations

import pytest

from hf_pretrain.data import encoding


def test_word_start_flags_mark_each_new_word_and_each_special_token():
    # word ids as a fast tokenizer gives them: None for [CLS]/[SEP], a word split into pieces repeats its id.
    assert encoding.word_start_flags([None, 0, 0, 1, 2, 2, None]) == [1, 1, 0, 1, 1, 0, 1]
    # Two special tokens in a row (a [SEP] [CLS] document boundary) are two words; so is a word right after one.
    assert encoding.word_start_flags([None, None, 0, 0]) == [1, 1, 1, 0]


@pytest.mark.parametrize("kind", ["wordpiece", "bpe", "unigram"])
def test_word_starts_follow_the_tokenizers_words(kind, tokenizers_by_kind):
    tokenizer = tokenizers_by_kind[kind]
    text = "Return the frobnicated value, unchanged."
    encoder = encoding.DocumentEncoder(tokenizer, "text", with_word_starts=True)
    encoded = encoder.encode([text])
    word_ids = tokenizer(text).word_ids()
    expected = [1 if w is None or i == 0 or w != word_ids[i - 1] else 0 for i, w in enumerate(word_ids)]
    assert encoded["word_starts"][0] == expected
    assert sum(expected) >= 6  # at least the five words and the comma/period split, plus specials


def test_special_token_strings_in_text_are_encoded_as_text(wordpiece):
    encoder = encoding.DocumentEncoder(wordpiece, "text", with_word_starts=False)
    ids = encoder.encode(["write [MASK] here"])["input_ids"][0]
    assert ids[0] == wordpiece.cls_token_id and ids[-1] == wordpiece.sep_token_id
    assert wordpiece.mask_token_id not in ids


def test_truncation_keeps_the_boundary_tokens_and_is_flagged(wordpiece):
    encoder = encoding.DocumentEncoder(wordpiece, "text", with_word_starts=True, max_length=5)
    encoded = encoder.encode(["one two three four five six", "short"])
    long_ids, short_ids = encoded["input_ids"]
    assert len(long_ids) == 5 and long_ids[0] == wordpiece.cls_token_id and long_ids[-1] == wordpiece.sep_token_id
    assert encoded["truncated"] == [True, False]
    assert [len(flags) for flags in encoded["word_starts"]] == [len(long_ids), len(short_ids)]
    assert encoding.minimum_document_tokens(encoder) == 2  # an empty document keeps [CLS] [SEP]
