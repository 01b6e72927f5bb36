"""Numbered documents and a word-level tokenizer for the stream tests: every document is one word repeated, its
own token, so the tokens of any block say which documents it holds and how much of each (the tests count them to
prove every document was read, packed and trained exactly once)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def document_word(number: int, prefix: str = "d") -> str:
    return f"{prefix}{number:05d}"


def repeats(number: int) -> int:
    """Words in document `number`: 3 to 11, so documents of ten consecutive numbers hold 70 words."""
    return 3 + (number % 5) * 2


def numbered_document(number: int, prefix: str = "d") -> str:
    return " ".join([document_word(number, prefix)] * repeats(number))


def word_tokenizer(folder: Path, words: list[str]):
    """A fast word-level tokenizer ([CLS] ... [SEP] around each document) saved to `folder`, loadable by path."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(SPECIAL + sorted(set(words)))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]",
                                        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    tokenizer.save_pretrained(folder)
    return tokenizer


def document_counts(token_ids, tokenizer) -> Counter:
    """How many tokens of each document word the ids hold."""
    ids = np.asarray(token_ids).reshape(-1)
    tokens = tokenizer.convert_ids_to_tokens([int(i) for i in ids if i >= len(SPECIAL)])
    return Counter(tokens)


def expected_counts(numbers, prefix: str = "d", times: int = 1) -> Counter:
    return Counter({document_word(n, prefix): repeats(n) * times for n in numbers})
