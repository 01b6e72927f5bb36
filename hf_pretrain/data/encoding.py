"""Tokenize documents for packing and for whole-document batches: the one encoder both use.

Why our own encoder rather than `tokenizer(texts)`: it runs the tokenizers backend directly (its thread pool,
picklable for `datasets.map(num_proc=...)`), treats special-token strings inside the text as text, adds the
document boundary tokens by hand when the tokenizer's post-processor does not, and computes word starts from the
fast tokenizer's word ids (whole-word and span masking, word deletion).

Public API
----------
`DocumentEncoder(tokenizer, text_column, with_word_starts, max_length=None)`: batched `datasets.map` function,
    texts -> `input_ids` (+ `word_starts` int8, + `truncated` when max_length is set).
`tokenize_dataset(dataset, encoder, num_proc)`: that map over a `datasets.Dataset`, fingerprinted by our settings.
`word_start_flags(word_ids)`: per-token word-start flags from a fast tokenizer's word ids.
`boundary_token_ids(tokenizer)`, `minimum_document_tokens(encoder)`: the boundary tokens an empty document keeps.
"""

from __future__ import annotations

import hashlib
import json

import datasets
from tokenizers import Tokenizer

from ..console import library_progress

TOKENIZE_BATCH_SIZE = 1000


def boundary_token_ids(tokenizer) -> tuple[int | None, int | None]:
    """The (start, end) ids to add around each document by hand, or (None, None) when the tokenizer's own
    post-processor already adds them (our masked-LM and autoencoder tokenizers do: [CLS] ... [SEP])."""
    added = tokenizer.backend_tokenizer.num_special_tokens_to_add(False)
    if added == 1 and tokenizer("", add_special_tokens=True)["input_ids"] == [tokenizer.bos_token_id]:
        # A causal LM's tokenizer (ours for clm, Llama's) adds only bos, so that a prompt starts as a document
        # does; each document still gets its eos here, so the model learns where a text ends.
        return None, tokenizer.eos_token_id
    if added > 0:
        return None, None
    for start_role, end_role in (("cls_token_id", "sep_token_id"), ("bos_token_id", "eos_token_id")):
        start, end = getattr(tokenizer, start_role, None), getattr(tokenizer, end_role, None)
        if start is not None and end is not None:
            return start, end
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is not None:
        return None, eos
    raise ValueError(
        f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} neither adds boundary tokens nor has cls/sep or "
        "bos/eos tokens; packed documents would run together. Add e.g. cls_token and sep_token."
    )


def working_tokenizer_json(tokenizer, max_length: int | None) -> str:
    """The backend as JSON, set up for document encoding: no padding, truncation only when asked."""
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    if max_length is None:
        backend.no_truncation()
    else:
        backend.enable_truncation(max_length)
    return backend.to_str()


def word_start_flags(word_ids: list[int | None]) -> list[int]:
    """1 where a new word begins, from the fast tokenizer's word ids (None for special tokens) — never from "##",
    so it works for WordPiece, byte-level BPE and Unigram alike.

    Special tokens count as words of their own (flag 1). Masked-LM span masking numbers its units (words) by
    these flags, so the choice decides which tokens a span covers, and the training masks were drawn with it.
    Word deletion (noising.py) never touches special tokens, so their flag does not matter there."""
    flags = []
    previous = object()
    for word in word_ids:
        flags.append(1 if word is None or word != previous else 0)
        previous = word
    return flags


class DocumentEncoder:
    """Batched `datasets.map` function: texts -> input_ids (+ word_starts, truncation flags). Picklable for
    num_proc: it carries the tokenizer as JSON and rebuilds the backend once per process."""

    def __init__(self, tokenizer, text_column: str, with_word_starts: bool, max_length: int | None = None):
        self.tokenizer_json = working_tokenizer_json(tokenizer, max_length)
        self.start_id, self.end_id = boundary_token_ids(tokenizer)
        self.text_column = text_column
        self.with_word_starts = with_word_starts
        self.max_length = max_length
        self._backend = None

    def __getstate__(self):
        return {**self.__dict__, "_backend": None}

    @property
    def backend(self) -> Tokenizer:
        if self._backend is None:
            self._backend = Tokenizer.from_str(self.tokenizer_json)
            # Special-token strings inside the text (a docstring that mentions "[MASK]") are plain text, not
            # control tokens. The flag is not part of the JSON, so it is set on every rebuilt backend.
            self._backend.encode_special_tokens = True
        return self._backend

    def fingerprint(self) -> str:
        settings = (self.tokenizer_json, self.start_id, self.end_id, self.with_word_starts, self.max_length)
        return hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:16]

    def encode(self, texts: list[str]) -> dict[str, list]:
        # Offsets and word ids cost time; the fast path skips them when no one needs them.
        needs_details = self.with_word_starts or self.max_length is not None
        encodings = self.backend.encode_batch(texts) if needs_details else self.backend.encode_batch_fast(texts)
        wrap = self.start_id is not None or self.end_id is not None
        input_ids, word_starts, truncated = [], [], []
        for encoding in encodings:
            ids = encoding.ids
            if wrap:
                ids = wrap_with_boundaries(ids, self.start_id, self.end_id, self.max_length)
            input_ids.append(ids)
            if self.with_word_starts:
                flags = word_start_flags(encoding.word_ids)
                if wrap:
                    flags = wrap_with_boundaries(flags, 1 if self.start_id is not None else None,
                                                 1 if self.end_id is not None else None, self.max_length)
                word_starts.append(flags)
            if self.max_length is not None:
                truncated.append(bool(encoding.overflowing))
        columns = {"input_ids": input_ids}
        if self.with_word_starts:
            columns["word_starts"] = word_starts
        if self.max_length is not None:
            columns["truncated"] = truncated
        return columns

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        return self.encode([text if isinstance(text, str) else "" for text in batch[self.text_column]])


def wrap_with_boundaries(values: list, start, end, max_length: int | None) -> list:
    inner_room = None if max_length is None else max_length - (start is not None) - (end is not None)
    inner = values if inner_room is None else values[:inner_room]
    return ([start] if start is not None else []) + list(inner) + ([end] if end is not None else [])


def encoded_features(with_word_starts: bool, with_truncation: bool) -> datasets.Features:
    features = {"input_ids": datasets.List(datasets.Value("int32"))}
    if with_word_starts:
        features["word_starts"] = datasets.List(datasets.Value("int8"))
    if with_truncation:
        features["truncated"] = datasets.Value("bool")
    return datasets.Features(features)


def tokenize_dataset(dataset: datasets.Dataset, encoder: DocumentEncoder, num_proc: int) -> datasets.Dataset:
    if encoder.text_column not in dataset.column_names:
        raise ValueError(
            f"text_column={encoder.text_column!r} is not a column of the dataset; columns: {dataset.column_names}."
        )
    if not isinstance(num_proc, int) or num_proc < 1:
        raise ValueError(f"num_proc={num_proc!r}; allowed: an integer >= 1.")
    with library_progress(len(dataset)):  # a large corpus takes minutes to tokenize: show it
        return dataset.map(
            encoder,
            batched=True,
            batch_size=TOKENIZE_BATCH_SIZE,
            num_proc=num_proc if num_proc > 1 and len(dataset) >= num_proc else None,
            remove_columns=dataset.column_names,
            features=encoded_features(encoder.with_word_starts, encoder.max_length is not None),
            # Our own fingerprint: datasets' hasher cannot hash a tokenizer stably, and this one names what matters.
            new_fingerprint=hashlib.sha256(f"{dataset._fingerprint}-{encoder.fingerprint()}".encode()).hexdigest()[:16],
            desc="Tokenizing",
        )


def minimum_document_tokens(encoder: DocumentEncoder) -> int:
    """How many tokens an empty document still has (its boundary tokens)."""
    return len(encoder.encode([""])["input_ids"][0])
