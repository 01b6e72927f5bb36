"""Configuration of the hf_pretrain masked-LM encoder family (exported as is with saved models)."""

from __future__ import annotations

from typing import Literal

from transformers import PreTrainedConfig

NORM_TYPES = ("layernorm", "rmsnorm")
MLP_TYPES = ("gated", "plain")
POSITION_EMBEDDING_TYPES = ("rotary", "absolute")
POOLING_TYPES = ("cls", "mean")
ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "silu", "relu")


# Every class of the family, so a saved folder of any one head loads as any other through the Auto classes
# (save_pretrained on its own would list only the class being saved).
ENCODER_AUTO_MAP = {
    "AutoConfig": "configuration_pretrain_encoder.PretrainEncoderConfig",
    "AutoModel": "modeling_pretrain_encoder.PretrainEncoderModel",
    "AutoModelForMaskedLM": "modeling_pretrain_encoder.PretrainEncoderForMaskedLM",
    "AutoModelForSequenceClassification": "modeling_pretrain_encoder.PretrainEncoderForSequenceClassification",
    "AutoModelForTokenClassification": "modeling_pretrain_encoder.PretrainEncoderForTokenClassification",
    "AutoModelForPreTraining": "modeling_pretrain_encoder.PretrainEncoderForReplacedTokenDetection",
}


def check_choice(field: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{field}={value!r} is not allowed; choose one of {', '.join(map(repr, allowed))}.")


def check_positive_int(field: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{field}={value!r} is not allowed; it must be a positive integer.")


def check_probability(field: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{field}={value!r} is not allowed; it must be a number in [0, 1).")


class PretrainEncoderConfig(PreTrainedConfig):
    r"""Configuration of [`PretrainEncoderModel`] and its heads: a modern pre-norm transformer encoder.

    Defaults describe the small CPU-friendly encoder of the `mlm-small` recipe (about 5M parameters with an
    8192-token vocabulary).

    Args:
        vocab_size (`int`, defaults to 8192): tokens in the vocabulary (a multiple of 64 keeps GEMMs aligned).
        hidden_size (`int`, defaults to 256): width of the residual stream; must divide by `num_attention_heads`.
        embedding_size (`int`, *optional*): width of the token embeddings when it differs from `hidden_size`
            (factorized embeddings, as ALBERT and ELECTRA's generator): a projection maps them to the hidden size,
            and the masked-LM head projects back to this width before the vocabulary. None: `hidden_size`. A
            replaced-token-detection generator uses it to share the discriminator's wider embeddings.
        num_hidden_layers (`int`, defaults to 4): transformer blocks.
        num_attention_heads (`int`, defaults to 4): attention heads per block.
        intermediate_size (`int`, defaults to 704): MLP width. For `mlp_type="gated"` about 8/3 x hidden gives
            the parameters of a plain 4 x hidden MLP (704 = 8/3 x 256 rounded to a multiple of 64).
        mlp_type (`str`, defaults to `"gated"`): `"gated"` (GeGLU with `hidden_act="gelu"`, SwiGLU with
            `"silu"`) or `"plain"` (BERT's two-layer MLP).
        hidden_act (`str`, defaults to `"gelu"`): activation of the MLP and of the prediction/classifier heads.
        norm_type (`str`, defaults to `"layernorm"`): `"layernorm"` or `"rmsnorm"`.
        norm_eps (`float`, defaults to 1e-5): epsilon of every norm.
        norm_bias (`bool`, defaults to `False`): whether norms have a bias.
        embedding_norm (`bool`, defaults to `True`): normalize the token embeddings before the first block.
        first_layer_attn_norm (`bool`, defaults to `True`): whether the first block normalizes its attention input
            too. With `embedding_norm` that second norm in a row is redundant; ModernBERT has none there (an
            Identity), and `False` makes the encoder exactly ModernBERT (`hf-pretrain export RUN --as modernbert`).
        position_embedding_type (`str`, defaults to `"rotary"`): `"rotary"` (RoPE on queries/keys) or
            `"absolute"` (learned position embeddings added to the token embeddings, BERT style).
        rope_theta (`float`, defaults to 10000.0): base period of the rotary frequencies.
        max_position_embeddings (`int`, defaults to 512): longest sequence; the size of the absolute table.
        attention_bias (`bool`, defaults to `False`): biases on the QKV and output projections.
        mlp_bias (`bool`, defaults to `False`): biases on the MLP projections.
        decoder_bias (`bool`, defaults to `True`): a per-token output bias in the masked-LM decoder.
        hidden_dropout (`float`, defaults to 0.0): dropout on embeddings, MLP and residual branches.
        attention_dropout (`float`, defaults to 0.0): dropout on attention probabilities.
        classifier_dropout (`float`, defaults to 0.0): dropout before classification layers.
        classifier_pooling (`str`, defaults to `"mean"`): how sequence classification pools: `"mean"` (mean
            over non-padding tokens) or `"cls"` (first token). Mean by default: masked-LM pretraining never makes
            [CLS] a target, so after pretraining only the token states carry what was learned.
        initializer_range (`float`, defaults to 0.02): std of the truncated-normal weight initialization.
        attention_within_documents (`bool`, defaults to `True`): when `position_ids` restart at 0 inside a row
            (packed documents), every token attends only to tokens of its own document.
        sparse_prediction (`bool`, defaults to `True`): in training mode with labels, the masked-LM head runs only
            on positions whose label is not -100 and `logits` has shape (num_masked, vocab_size); in eval mode
            `logits` is always (batch, length, vocab_size).
        pad_token_id (`int`, defaults to 0), tie_word_embeddings (`bool`, defaults to `True`): as in transformers.
    """

    model_type = "hf_pretrain_encoder"

    vocab_size: int = 8192
    hidden_size: int = 256
    embedding_size: int | None = None
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 704
    mlp_type: Literal["gated", "plain"] = "gated"
    hidden_act: str = "gelu"
    norm_type: Literal["layernorm", "rmsnorm"] = "layernorm"
    norm_eps: float = 1e-5
    norm_bias: bool = False
    embedding_norm: bool = True
    first_layer_attn_norm: bool = True
    position_embedding_type: Literal["rotary", "absolute"] = "rotary"
    rope_theta: float = 10000.0
    max_position_embeddings: int = 512
    attention_bias: bool = False
    mlp_bias: bool = False
    decoder_bias: bool = True
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    classifier_dropout: float = 0.0
    classifier_pooling: Literal["cls", "mean"] = "mean"
    initializer_range: float = 0.02
    attention_within_documents: bool = True
    sparse_prediction: bool = True
    pad_token_id: int | None = 0
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        self.validate_fields()
        super().__post_init__(**kwargs)
        if getattr(self, "auto_map", None) is None:
            self.auto_map = dict(ENCODER_AUTO_MAP)

    def validate_fields(self) -> None:
        """Raise ValueError naming the field, its value and what is allowed."""
        check_transformer_stack(self, rotary=self.position_embedding_type == "rotary",
                                rotary_hint=" (or set position_embedding_type='absolute')")
        check_choice("position_embedding_type", self.position_embedding_type, POSITION_EMBEDDING_TYPES)
        check_choice("classifier_pooling", self.classifier_pooling, POOLING_TYPES)
        if self.embedding_size is not None:
            check_positive_int("embedding_size", self.embedding_size)
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"pad_token_id={self.pad_token_id!r} is not allowed; it must be in [0, vocab_size={self.vocab_size})."
            )


def check_transformer_stack(config, rotary: bool, rotary_hint: str = "") -> None:
    """The checks every family's transformer stack shares (the decoder family imports this): positive sizes, a
    width the heads divide (an even head dimension for rotary positions), known MLP/activation/norm choices,
    dropout probabilities and positive scales."""
    for field in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                  "intermediate_size", "max_position_embeddings"):
        check_positive_int(field, getattr(config, field))
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(
            f"hidden_size={config.hidden_size} is not allowed with num_attention_heads={config.num_attention_heads}; "
            "hidden_size must be a multiple of num_attention_heads."
        )
    head_dim = config.hidden_size // config.num_attention_heads
    if rotary and head_dim % 2:
        raise ValueError(
            f"hidden_size / num_attention_heads = {head_dim} is odd; rotary position embeddings need an even "
            f"head dimension{rotary_hint}."
        )
    check_choice("mlp_type", config.mlp_type, MLP_TYPES)
    check_choice("hidden_act", config.hidden_act, ACTIVATIONS)
    check_choice("norm_type", config.norm_type, NORM_TYPES)
    for field in ("hidden_dropout", "attention_dropout", "classifier_dropout"):
        check_probability(field, getattr(config, field))
    for field in ("norm_eps", "rope_theta", "initializer_range"):
        if not getattr(config, field) > 0:
            raise ValueError(f"{field}={getattr(config, field)!r} is not allowed; it must be > 0.")


# Saving the config also copies this file next to it (trust_remote_code export).
PretrainEncoderConfig.register_for_auto_class("AutoConfig")

__all__ = ["PretrainEncoderConfig"]
