"""Train a tokenizer on the user's text, or load an existing one.

`tokenizers` does the training; this module only assembles each kind's pipeline (normalizer, pre-tokenizer,
model, decoder, post-processor) and wraps the result so that `save_pretrained` writes a folder which
`transformers.AutoTokenizer.from_pretrained` loads with identical ids on a machine without hf_pretrain
(`tokenizer_class` stays "TokenizersBackend": relabelling it as e.g. BertTokenizer would rebuild the pipeline
from that class's defaults).

Public API
----------
`train_tokenizer(texts, kind="wordpiece", vocab_size=8192, lowercase=False, special_tokens=None,
                 layout="encoder", model_max_length=512, vocab_multiple=64, min_frequency=2, progress=None)
                 -> PreTrainedTokenizerFast`
    `texts`: an iterable of strings, or a `datasets.Dataset` with a "text" column.
    `kind`: "wordpiece" | "bpe" (byte-level) | "unigram".
    `layout`: what the model reads, from TOKENIZER_LAYOUTS: "encoder" ([CLS] text [SEP], with [MASK]),
    "encoder-decoder" (adds [BOS]/[EOS] for the decoder) or "decoder" ([BOS] text; the packer adds [EOS]).
    `special_tokens`: {role: string} with roles from SPECIAL_TOKEN_ROLES; None means the layout's default.
    `vocab_multiple`: the vocabulary is rounded up to a multiple of this (None or 1: no rounding).
    `progress`: called with the number of documents of each batch read (a progress bar's update).
`load_tokenizer(path_or_id, required_special_tokens=()) -> PreTrainedTokenizerFast`
    A folder or Hub id; fails with a clear error when it cannot be found (offline), is not a fast
    tokenizer, or lacks a special token the objective needs.
`special_tokens_for(layout) -> dict[str, str]`
`round_up(value, multiple) -> int`
`find_domain_words(tokenizer, texts, count, min_frequency=3) -> list[DomainWord]`
    The most frequent words of the texts that the tokenizer splits into several pieces (for
    `tokenizer.add_tokens`: continued pretraining with a domain vocabulary).

Every document is wrapped as `[CLS] text [SEP]` (or `bos text eos` when there is no cls/sep) by the
tokenizer's post-processor, so packed blocks show the model where documents begin and end.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from ..offline import hub_offline

TOKENIZER_KINDS = ("wordpiece", "bpe", "unigram")
# Roles are the keyword names PreTrainedTokenizerFast takes, so they pass straight through.
SPECIAL_TOKEN_ROLES = ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token", "bos_token", "eos_token")
MLM_SPECIAL_TOKENS = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}
# The denoising decoder starts from bos and learns to stop at eos; the encoder still reads [CLS] text [SEP].
DAE_SPECIAL_TOKENS = {**MLM_SPECIAL_TOKENS, "bos_token": "[BOS]", "eos_token": "[EOS]"}
# A causal LM reads [BOS] text and predicts up to [EOS]; it has no [CLS]/[SEP]/[MASK].
CLM_SPECIAL_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "bos_token": "[BOS]", "eos_token": "[EOS]"}
# What a model of each layout reads (an objective names its layout in hf_pretrain/objectives.py).
TOKENIZER_LAYOUTS = {"encoder": MLM_SPECIAL_TOKENS, "encoder-decoder": DAE_SPECIAL_TOKENS, "decoder": CLM_SPECIAL_TOKENS}
FILLER_TOKEN_FORMAT = "[unused{}]"
TRAINING_BATCH_SIZE = 1000


def special_tokens_for(layout: str) -> dict[str, str]:
    if layout not in TOKENIZER_LAYOUTS:
        raise ValueError(f"layout={layout!r} is not a tokenizer layout; allowed: {', '.join(TOKENIZER_LAYOUTS)}.")
    return dict(TOKENIZER_LAYOUTS[layout])


def round_up(value: int, multiple: int | None) -> int:
    if not multiple or multiple <= 1:
        return value
    return -(-value // multiple) * multiple


def validate_special_tokens(special_tokens: Mapping[str, str], kind: str) -> dict[str, str]:
    unknown = sorted(set(special_tokens) - set(SPECIAL_TOKEN_ROLES))
    if unknown:
        raise ValueError(
            f"special_tokens has unknown role(s) {unknown}; allowed roles: {', '.join(SPECIAL_TOKEN_ROLES)}."
        )
    for role, token in special_tokens.items():
        if not isinstance(token, str) or not token.strip():
            raise ValueError(f"special_tokens[{role!r}]={token!r} must be a non-empty string.")
    # RoBERTa's convention: <s> is both cls and bos, </s> both sep and eos. Any other shared string is a mistake.
    shared = {frozenset(roles) for roles in ({"cls_token", "bos_token"}, {"sep_token", "eos_token"})}
    by_token: dict[str, set] = {}
    for role, token in special_tokens.items():
        by_token.setdefault(token, set()).add(role)
    if any(len(roles) > 1 and frozenset(roles) not in shared for roles in by_token.values()):
        raise ValueError(f"special_tokens={dict(special_tokens)} uses one string for two roles; give each its own "
                         "(only cls/bos and sep/eos may share one, as RoBERTa's <s> and </s> do).")
    if "pad_token" not in special_tokens:
        raise ValueError("special_tokens has no 'pad_token'; batching needs one (e.g. '[PAD]').")
    if kind in ("wordpiece", "unigram") and "unk_token" not in special_tokens:
        raise ValueError(f"special_tokens has no 'unk_token', which kind={kind!r} needs (e.g. '[UNK]').")
    has_cls_sep = "cls_token" in special_tokens and "sep_token" in special_tokens
    has_bos_eos = "bos_token" in special_tokens and "eos_token" in special_tokens
    if not (has_cls_sep or has_bos_eos):
        raise ValueError(
            "special_tokens needs a boundary pair, cls_token+sep_token or bos_token+eos_token, to mark documents."
        )
    return dict(special_tokens)


def build_untrained_pipeline(kind: str, vocab_size: int, lowercase: bool, special_tokens: list[str],
                             unk_token: str | None, min_frequency: int) -> tuple[Tokenizer, trainers.Trainer]:
    """The tokenizer skeleton and trainer of one kind; special tokens take the first ids, in the given order."""
    if kind == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token=unk_token, continuing_subword_prefix="##"))
        # BERT's normalizer: cleans control characters and spaces out CJK ideographs (one word each).
        tokenizer.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
        )
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece(prefix="##")
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=special_tokens,
            continuing_subword_prefix="##",
            # A corpus with many scripts would otherwise spend a small vocabulary on rare single characters.
            limit_alphabet=max(100, vocab_size // 4),
            show_progress=False,
        )
    elif kind == "bpe":
        tokenizer = Tokenizer(models.BPE())
        tokenizer.normalizer = normalizers.Sequence([normalizers.NFC()] + ([normalizers.Lowercase()] if lowercase else []))
        # A prefix space makes a document's first word tokenize like the same word anywhere else.
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=special_tokens,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: nothing is ever unknown
            show_progress=False,
        )
    elif kind == "unigram":
        tokenizer = Tokenizer(models.Unigram())
        tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else []))
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
        tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size,
            special_tokens=special_tokens,
            unk_token=unk_token,
            max_piece_length=16,
            show_progress=False,
        )
    else:
        raise ValueError(f"kind={kind!r} is not a tokenizer kind; allowed: {', '.join(TOKENIZER_KINDS)}.")
    return tokenizer, trainer


def boundary_post_processor(tokenizer: Tokenizer, special_tokens: Mapping[str, str],
                            layout: str = "encoder") -> processors.TemplateProcessing:
    """[CLS] $A [SEP] (pairs: [CLS] $A [SEP] $B [SEP]), or the same with bos/eos when cls/sep are absent. For a
    causal LM only [BOS] $A: a prompt must not end with [EOS] (the packer ends each training document with it)."""
    if layout == "decoder":
        start = special_tokens["bos_token"]
        return processors.TemplateProcessing(
            single=f"{start} $A", pair=f"{start} $A $B:1", special_tokens=[(start, tokenizer.token_to_id(start))]
        )
    if "cls_token" in special_tokens and "sep_token" in special_tokens:
        start, end = special_tokens["cls_token"], special_tokens["sep_token"]
    else:
        start, end = special_tokens["bos_token"], special_tokens["eos_token"]
    return processors.TemplateProcessing(
        single=f"{start} $A {end}",
        pair=f"{start} $A {end} $B:1 {end}:1",
        special_tokens=[(start, tokenizer.token_to_id(start)), (end, tokenizer.token_to_id(end))],
    )


def batches_of_text(texts, batch_size: int = TRAINING_BATCH_SIZE) -> Iterator[list[str]]:
    """Yield lists of strings from a Dataset ("text" column) or any iterable of strings."""
    if hasattr(texts, "column_names") and hasattr(texts, "iter"):
        if "text" not in (texts.column_names or []):
            raise ValueError(f"texts is a dataset with columns {texts.column_names}; it needs a 'text' column.")
        for batch in texts.iter(batch_size=batch_size):
            yield batch["text"]
        return
    if isinstance(texts, str):
        raise ValueError("texts is a single string; pass a list or iterable of documents (e.g. [text]).")
    batch = []
    for text in texts:
        if not isinstance(text, str):
            raise ValueError(f"texts yields a {type(text).__name__} ({text!r:.40}); every document must be a str.")
        batch.append(text)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def iter_text_batches(texts, text_column: str, batch_size: int) -> Iterator[list[str]]:
    """Lists of `batch_size` strings from an iterable of strings or of dicts holding one under `text_column`."""
    return batches_of_text((item[text_column] if isinstance(item, dict) else item for item in texts), batch_size)


def canonical_vocabulary_order(tokenizer: Tokenizer, special_tokens: list[str]) -> Tokenizer:
    """The same tokenizer with its ids in an order that does not depend on the process.

    The WordPiece and Unigram trainers of `tokenizers` hand out some ids in hash-map order, which is random per
    process: two trainings on the same text learn the same tokens under different ids, and a pretraining run
    would not repeat. Special tokens keep the first ids; WordPiece's other tokens follow in sorted order,
    Unigram's by descending score (its segmentation only reads the scores). BPE is already deterministic (its
    merges refer to tokens by string, and its ids follow the merge order). Unigram stays reproducible only up to
    the last digits of its scores: its EM sums floats in a thread-dependent order, so near-ties can swap. And
    the WordPiece trainer breaks ties between equally frequent pairs by ids it hands out in hash-map order, so
    two trainings can learn a few different rare tokens; byte-level BPE ("bpe") is fully reproducible, which
    is why the shipped recipes use it.
    """
    state = json.loads(tokenizer.to_str())
    model = state["model"]
    if model["type"] == "WordPiece":
        ordinary = sorted(token for token in model["vocab"] if token not in special_tokens)
        model["vocab"] = {token: index for index, token in enumerate(special_tokens + ordinary)}
    elif model["type"] == "Unigram":
        unk = model["vocab"][model["unk_id"]][0] if model.get("unk_id") is not None else None
        specials = sorted((p for p in model["vocab"] if p[0] in special_tokens), key=lambda p: special_tokens.index(p[0]))
        ordinary = sorted((p for p in model["vocab"] if p[0] not in special_tokens), key=lambda p: (-p[1], p[0]))
        model["vocab"] = specials + ordinary
        if unk is not None:
            model["unk_id"] = [piece for piece, _ in model["vocab"]].index(unk)
    else:
        return tokenizer
    vocab_ids = model["vocab"] if isinstance(model["vocab"], dict) else {p[0]: i for i, p in enumerate(model["vocab"])}
    for added in state.get("added_tokens", []):
        added["id"] = vocab_ids[added["content"]]
    return Tokenizer.from_str(json.dumps(state))


def add_filler_tokens(tokenizer: Tokenizer, target_size: int) -> None:
    """Pad the vocabulary with never-matching-in-practice special tokens up to target_size (as BERT's [unusedN])."""
    missing = target_size - tokenizer.get_vocab_size(with_added_tokens=True)
    fillers = [AddedToken(FILLER_TOKEN_FORMAT.format(i), special=True, normalized=False) for i in range(missing)]
    if fillers:
        tokenizer.add_special_tokens(fillers)


def train_tokenizer(
    texts: Iterable[str],
    kind: str = "wordpiece",
    vocab_size: int = 8192,
    lowercase: bool = False,
    special_tokens: Mapping[str, str] | None = None,
    layout: str = "encoder",
    model_max_length: int = 512,
    vocab_multiple: int | None = 64,
    min_frequency: int = 2,
    progress=None,
) -> PreTrainedTokenizerFast:
    """Train a WordPiece, byte-level BPE or Unigram tokenizer and wrap it for transformers (see module doc)."""
    if kind not in TOKENIZER_KINDS:
        raise ValueError(f"kind={kind!r} is not a tokenizer kind; allowed: {', '.join(TOKENIZER_KINDS)}.")
    if not isinstance(vocab_size, int) or vocab_size < 64:
        raise ValueError(f"vocab_size={vocab_size!r} is too small; allowed: an integer >= 64.")
    if not isinstance(model_max_length, int) or model_max_length < 2:
        raise ValueError(f"model_max_length={model_max_length!r}; allowed: an integer >= 2.")
    if min_frequency < 1:
        raise ValueError(f"min_frequency={min_frequency!r}; allowed: an integer >= 1.")
    special_tokens = validate_special_tokens(special_tokens or special_tokens_for(layout), kind)
    # Embedding and output-projection matrices have vocab_size rows; a multiple of 64 gives GEMM shapes that
    # tile evenly on tensor cores (and SIMD lanes on CPUs) instead of leaving a ragged, slower last tile.
    target_size = round_up(vocab_size, vocab_multiple)
    ordered_specials = list(dict.fromkeys(special_tokens[role] for role in SPECIAL_TOKEN_ROLES if role in special_tokens))
    backend, trainer = build_untrained_pipeline(
        kind, target_size, lowercase, ordered_specials, special_tokens.get("unk_token"), min_frequency
    )
    documents = 0

    def counted_batches():
        nonlocal documents
        for batch in batches_of_text(texts):
            documents += len(batch)
            if progress is not None:
                progress(len(batch))
            yield batch

    backend.train_from_iterator(counted_batches(), trainer=trainer)
    if documents == 0:
        raise ValueError("texts is empty; a tokenizer needs at least one document to learn from.")
    backend = canonical_vocabulary_order(backend, ordered_specials)
    backend.post_processor = boundary_post_processor(backend, special_tokens, layout)
    # A small corpus can stop the trainer short of the target; fillers keep the size a multiple anyway.
    add_filler_tokens(backend, round_up(backend.get_vocab_size(with_added_tokens=True), vocab_multiple))
    return PreTrainedTokenizerFast(tokenizer_object=backend, model_max_length=model_max_length, **special_tokens)


def load_tokenizer(path_or_id: str | os.PathLike, required_special_tokens: Iterable[str] = ()) -> PreTrainedTokenizerFast:
    """Load a fast tokenizer from a folder or the Hub, checking it has the special tokens the objective needs."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path_or_id))
    except (OSError, ValueError) as error:
        hint = " (HF_HUB_OFFLINE is set, so Hub ids cannot be fetched)" if hub_offline() else ""
        raise ValueError(
            f"tokenizer path_or_id={str(path_or_id)!r} could not be loaded{hint}: it must be a folder holding "
            f"tokenizer.json / tokenizer_config.json, or a reachable Hub id. Cause: {error}"
        ) from error
    if not getattr(tokenizer, "is_fast", False) or not hasattr(tokenizer, "backend_tokenizer"):
        raise ValueError(
            f"tokenizer path_or_id={str(path_or_id)!r} loads as {type(tokenizer).__name__}, which is not a fast "
            "(tokenizers-backed) tokenizer; word boundaries and batched encoding need one."
        )
    missing = [role for role in required_special_tokens if getattr(tokenizer, role, None) is None]
    if missing:
        raise ValueError(
            f"tokenizer path_or_id={str(path_or_id)!r} has no {', '.join(missing)}; the objective needs it. "
            "Add it with tokenizer.add_special_tokens({...}) and save again, or train one with train_tokenizer."
        )
    return tokenizer


# --------------------------------------------------------------------------------------------------- domain words
@dataclass(frozen=True)
class DomainWord:
    text: str  # the word as it stands in the text, e.g. "tokenizer"
    pieces: tuple[int, ...]  # the ids the tokenizer splits it into in running text
    count: int  # occurrences in the texts read


def find_domain_words(tokenizer, texts: Iterable[str], count: int, min_frequency: int = 3) -> list[DomainWord]:
    """Up to `count` words of `texts`, most frequent first, that the tokenizer splits into two or more pieces and
    that occur at least `min_frequency` times: the domain words a general vocabulary lacks.

    Words are the tokenizer's own (its pre-tokenizer's word ids), alphabetic and 3+ characters, so punctuation
    runs and numbers are not proposed. Each word's pieces are the ones it gets in running text (with its leading
    space marker where the kind has one), which is what its new embedding row starts from."""
    backend = tokenizer.backend_tokenizer
    found: Counter = Counter()
    pieces_of: dict[str, tuple[int, ...]] = {}
    for batch in batches_of_text(texts):
        for text, encoding in zip(batch, backend.encode_batch(batch, add_special_tokens=False)):
            words: dict[int, list[int]] = {}
            spans: dict[int, tuple[int, int]] = {}
            for token_id, word, (start, end) in zip(encoding.ids, encoding.word_ids, encoding.offsets):
                if word is None:
                    continue
                words.setdefault(word, []).append(token_id)
                first, _ = spans.get(word, (start, end))
                spans[word] = (first, end)
            for word, ids in words.items():
                if len(ids) < 2:
                    continue
                start, end = spans[word]
                surface = text[start:end].strip()
                if len(surface) >= 3 and surface.isalpha():
                    found[surface] += 1
                    pieces_of.setdefault(surface, tuple(ids))
    vocabulary = tokenizer.get_vocab()
    chosen = [word for word, seen in found.most_common() if seen >= min_frequency and word not in vocabulary]
    return [DomainWord(word, pieces_of[word], found[word]) for word in chosen[:count]]