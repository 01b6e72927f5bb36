"""Tokenizer training (WordPiece, byte-level BPE, Unigram), saving, and loading without hf_pretrain."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from transformers import AutoTokenizer

from hf_pretrain.data import tokenizer as tok

SAMPLES = [
    "Return the number of items in the container.",
    "Ünïcödé text, 日本語のテキスト and مرحبا بالعالم mixed in.",
    "A docstring that mentions [MASK] and [CLS] literally.",
    "  leading spaces,\ttabs\nand newlines  ",
]


@pytest.mark.parametrize("kind", tok.TOKENIZER_KINDS)
def test_each_kind_roundtrips_through_auto_tokenizer(kind, tokenizers_by_kind, tmp_path):
    trained = tokenizers_by_kind[kind]
    assert len(trained) % 64 == 0, "vocabulary rounded up to a multiple of 64"
    # Special tokens take the first ids in role order, the same for every kind.
    assert [trained.pad_token_id, trained.unk_token_id, trained.cls_token_id, trained.sep_token_id,
            trained.mask_token_id] == [0, 1, 2, 3, 4]
    trained.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "TokenizersBackend"
    assert "hf_pretrain" not in (tmp_path / "tokenizer_config.json").read_text()
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    for text in SAMPLES:
        ids = trained(text)["input_ids"]
        assert loaded(text)["input_ids"] == ids
        assert ids[0] == trained.cls_token_id and ids[-1] == trained.sep_token_id
    assert loaded.model_max_length == 512
    assert len(loaded) == len(trained)


def test_byte_level_bpe_never_produces_unknown_tokens(bpe):
    ids = bpe("日本語のテキスト مرحبا 🙂")["input_ids"]
    assert bpe.unk_token_id not in ids
    assert bpe.decode(ids, skip_special_tokens=True).strip() == "日本語のテキスト مرحبا 🙂"


def test_saved_folder_loads_where_hf_pretrain_is_not_installed(wordpiece, tmp_path):
    wordpiece.save_pretrained(tmp_path)
    expected = wordpiece(SAMPLES[1])["input_ids"]
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["hf_pretrain"] = None  # any import of hf_pretrain now fails
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained({str(tmp_path)!r})
        assert tokenizer({SAMPLES[1]!r})["input_ids"] == {expected!r}, tokenizer({SAMPLES[1]!r})["input_ids"]
        print(type(tokenizer).__name__)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "TokenizersBackend"


def test_lowercase_and_cased(small_corpus):
    cased = tok.train_tokenizer(small_corpus, kind="wordpiece", vocab_size=512)
    lower = tok.train_tokenizer(small_corpus, kind="wordpiece", vocab_size=512, lowercase=True)
    assert lower("Return NONE")["input_ids"] == lower("return none")["input_ids"]
    assert cased("Return NONE")["input_ids"] != cased("return none")["input_ids"]
    learned = set(lower.get_vocab()) - set(lower.added_tokens_encoder)
    assert not any(ch.isupper() for token in learned for ch in token)
    assert any(ch.isupper() for token in set(cased.get_vocab()) - set(cased.added_tokens_encoder) for ch in token)


def test_vocabulary_rounding_and_fillers(small_corpus):
    rounded = tok.train_tokenizer(small_corpus, kind="wordpiece", vocab_size=500)
    assert len(rounded) == 512
    exact = tok.train_tokenizer(small_corpus, kind="wordpiece", vocab_size=500, vocab_multiple=None)
    assert len(exact) == 500
    # A corpus too small for the target still ends on a multiple of 64, padded with never-used filler tokens.
    tiny = tok.train_tokenizer(["tiny corpus with few words"] * 3, kind="wordpiece", vocab_size=4096)
    assert len(tiny) % 64 == 0 and len(tiny) < 4096
    fillers = [t for t in tiny.get_vocab() if t.startswith("[unused")]
    assert fillers, "fillers pad the vocabulary"
    assert not set(tiny("tiny corpus")["input_ids"]) & {tiny.convert_tokens_to_ids(t) for t in fillers}


def test_special_token_sets_per_objective(small_corpus):
    dae = tok.train_tokenizer(small_corpus, kind="bpe", vocab_size=512, layout="encoder-decoder")
    assert dae.bos_token == "[BOS]" and dae.eos_token == "[EOS]" and dae.mask_token == "[MASK]"
    custom = tok.train_tokenizer(
        small_corpus.select(range(150)), kind="unigram", vocab_size=256,
        special_tokens={"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"},
    )
    ids = custom("hello")["input_ids"]
    assert custom.convert_ids_to_tokens([ids[0], ids[-1]]) == ["<s>", "</s>"]
    assert custom.mask_token is None


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"kind": "sentencepiece"}, "kind='sentencepiece'.*wordpiece, bpe, unigram"),
        ({"vocab_size": 10}, "vocab_size=10"),
        ({"special_tokens": {"pad_token": "[PAD]", "unk_token": "[UNK]", "start": "<s>"}}, "unknown role"),
        ({"special_tokens": {"unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]"}}, "pad_token"),
        ({"special_tokens": {"pad_token": "[PAD]", "unk_token": "[UNK]"}}, "boundary pair"),
        ({"layout": "rtd"}, "layout='rtd'.*encoder, encoder-decoder, decoder"),
    ],
)
def test_bad_arguments_are_named(arguments, message):
    with pytest.raises(ValueError, match=message):
        tok.train_tokenizer(["some text here"], **arguments)


def test_empty_or_wrong_input_is_refused():
    with pytest.raises(ValueError, match="empty"):
        tok.train_tokenizer([], kind="bpe", vocab_size=256)
    with pytest.raises(ValueError, match="single string"):
        tok.train_tokenizer("just one string", kind="bpe", vocab_size=256)
    with pytest.raises(ValueError, match="must be a str"):
        tok.train_tokenizer(["ok", 3], kind="bpe", vocab_size=256)


def test_load_tokenizer_by_path_and_errors(wordpiece, tmp_path):
    wordpiece.save_pretrained(tmp_path / "tok")
    loaded = tok.load_tokenizer(tmp_path / "tok", required_special_tokens=("mask_token",))
    assert loaded("hello world")["input_ids"] == wordpiece("hello world")["input_ids"]
    with pytest.raises(ValueError, match="bos_token"):
        tok.load_tokenizer(tmp_path / "tok", required_special_tokens=("bos_token",))
    with pytest.raises(ValueError, match="could not be loaded.*HF_HUB_OFFLINE"):
        tok.load_tokenizer("someone/not-a-real-tokenizer")
