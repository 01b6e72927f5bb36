"""The `model` and `tokenizer` sections: which model to build or continue, and the tokenizer it reads with."""

from __future__ import annotations

from dataclasses import dataclass

from ..architectures import ARCHITECTURE_CHOICES, OWN
from .fields import choice, mapping, ranged, setting


@dataclass
class ModelSection:
    """Which model to build (a new one of the objective's family, configured by `config`) or continue."""

    init_from: str | None = setting(
        None, "continue pretraining from a checkpoint: a local folder or a Hub id (null: a new model)")
    architecture: str = choice(
        OWN, *ARCHITECTURE_CHOICES,
        doc="a new model's architecture: hf_pretrain (our families, the fast path) or a stock transformers one, "
            "which loads without trust_remote_code (mlm, rtd: bert, roberta, modernbert; rtd: electra; clm: llama, "
            "gpt2); model.config then holds fields of its config class (e.g. ModernBertConfig)")
    attn_implementation: str = choice(
        "sdpa", "sdpa", "eager", "flash_attention_2", "flash_attention_3",
        doc="attention kernel: sdpa (PyTorch's fused kernels), eager (returns attention weights), or flash attention "
            "on GPUs that have it")
    config: dict = mapping(
        "fields of the objective's model config class (e.g. PretrainEncoderConfig: hidden_size, num_hidden_layers, "
        "num_attention_heads, intermediate_size, ...), passed to it as they are")
    embedding_init: str = choice(
        "random", "random", "spectral",
        doc="how a new model's token embeddings start: random (the config's init) or spectral (rows from a "
            "truncated SVD of the training corpus's TF-IDF document-token matrix, seconds of CPU before step 1; "
            "text objectives, not with init_from)")
    embedding_init_max_documents: int = ranged(
        200_000, low=1, doc="spectral init: documents (packed-row pieces) the SVD reads")
    embedding_init_power: float = ranged(
        1.0, low=0.0, high=1.0, doc="spectral init: rows = V * S**power (token loadings scaled by singular values)")


@dataclass
class TokenizerSection:
    """Reuse a tokenizer (`path`: folder or Hub id) or train one on the training text."""

    path: str | None = setting(None, "a tokenizer folder or Hub id to reuse (null: train one on the training text)")
    kind: str = choice(
        "wordpiece", "wordpiece", "bpe", "unigram",
        doc="the kind of tokenizer to train: wordpiece, byte-level bpe (never an unknown token; fully "
            "reproducible) or unigram")
    vocab_size: int = ranged(8192, low=64, doc="tokens of a trained tokenizer (rounded up to a multiple of 64)")
    lowercase: bool = setting(False, "lowercase the text before a trained tokenizer reads it")
    max_train_documents: int | None = ranged(
        None, low=1, doc="documents a trained tokenizer learns from (null: all; a stream: its first 200,000)")
    add_tokens: int = ranged(
        0, low=0,
        doc="continued pretraining: add up to this many frequent corpus words that `path` splits into several "
            "pieces, each new embedding row starting as the mean of its pieces' rows (0: keep the vocabulary)")
