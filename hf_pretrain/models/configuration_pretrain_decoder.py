"""Configuration of the hf_pretrain causal-LM decoder family (exported as is with saved models)."""

from __future__ import annotations

from typing import Literal

from transformers import PreTrainedConfig

from .configuration_pretrain_dae import check_token_id
from .configuration_pretrain_encoder import (
    ACTIVATIONS,
    MLP_TYPES,
    NORM_TYPES,
    check_choice,
    check_positive_int,
    check_probability,
)

# Every class of the family, so a saved folder of any one head loads as any other through the Auto classes
# (save_pretrained on its own would list only the class being saved).
DECODER_AUTO_MAP = {
    "AutoConfig": "configuration_pretrain_decoder.PretrainDecoderConfig",
    "AutoModel": "modeling_pretrain_decoder.PretrainDecoderModel",
    "AutoModelForCausalLM": "modeling_pretrain_decoder.PretrainDecoderForCausalLM",
    "AutoModelForSequenceClassification": "modeling_pretrain_decoder.PretrainDecoderForSequenceClassification",
}


class PretrainDecoderConfig(PreTrainedConfig):
    r"""Configuration of [`PretrainDecoderModel`] and its heads: a GPT-style pre-norm causal transformer.

    Field names are the encoder family's where they mean the same. Defaults describe a small CPU-friendly causal LM
    (about 5M parameters with an 8192-token vocabulary), Llama-style: RMSNorm, SwiGLU, rotary positions, no biases.

    Args:
        vocab_size (`int`, defaults to 8192): tokens in the vocabulary (a multiple of 64 keeps GEMMs aligned).
        hidden_size (`int`, defaults to 256): width of the residual stream; must divide by `num_attention_heads`
            into an even head dimension (rotary positions rotate pairs of dimensions).
        num_hidden_layers (`int`, defaults to 4): transformer blocks.
        num_attention_heads (`int`, defaults to 4): attention heads per block.
        intermediate_size (`int`, defaults to 704): MLP width. For `mlp_type="gated"` about 8/3 x hidden gives
            the parameters of a plain 4 x hidden MLP (704 = 8/3 x 256 rounded to a multiple of 64).
        mlp_type (`str`, defaults to `"gated"`): `"gated"` (SwiGLU with `hidden_act="silu"`, GeGLU with `"gelu"`)
            or `"plain"` (GPT-2's two-layer MLP).
        hidden_act (`str`, defaults to `"silu"`): activation of the MLP.
        norm_type (`str`, defaults to `"rmsnorm"`): `"rmsnorm"` or `"layernorm"`.
        norm_eps (`float`, defaults to 1e-5): epsilon of every norm.
        norm_bias (`bool`, defaults to `False`): whether norms have a bias.
        embedding_norm (`bool`, defaults to `False`): normalize the token embeddings before the first block.
        rope_theta (`float`, defaults to 10000.0): base period of the rotary frequencies.
        max_position_embeddings (`int`, defaults to 512): the context length the model is trained for (rotary
            positions have no table, so longer inputs run, but the model has not learned them).
        attention_bias (`bool`, defaults to `False`): biases on the QKV and output projections.
        mlp_bias (`bool`, defaults to `False`): biases on the MLP projections.
        hidden_dropout (`float`, defaults to 0.0): dropout on embeddings, MLP and residual branches.
        attention_dropout (`float`, defaults to 0.0): dropout on attention probabilities.
        classifier_dropout (`float`, defaults to 0.0): dropout before the sequence-classification layer.
        initializer_range (`float`, defaults to 0.02): std of the truncated-normal weight initialization.
        attention_within_documents (`bool`, defaults to `True`): when `position_ids` restart at 0 inside a row
            (packed documents), every token attends only to earlier tokens of its own document, and the causal-LM
            loss skips the prediction of each document's first token from the previous document.
        use_cache (`bool`, defaults to `True`): return the key/value cache (generation).
        pad_token_id (`int`, defaults to None), bos_token_id / eos_token_id (`int`, defaults to None): as in
            transformers; generation stops at `eos_token_id`; sequence classification finds the last real token
            from `attention_mask`, or else from `pad_token_id`.
        tie_word_embeddings (`bool`, defaults to `True`): the output projection shares the input embedding matrix.
    """

    model_type = "hf_pretrain_decoder"

    vocab_size: int = 8192
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 704
    mlp_type: Literal["gated", "plain"] = "gated"
    hidden_act: str = "silu"
    norm_type: Literal["layernorm", "rmsnorm"] = "rmsnorm"
    norm_eps: float = 1e-5
    norm_bias: bool = False
    embedding_norm: bool = False
    rope_theta: float = 10000.0
    max_position_embeddings: int = 512
    attention_bias: bool = False
    mlp_bias: bool = False
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    classifier_dropout: float = 0.0
    initializer_range: float = 0.02
    attention_within_documents: bool = True
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        self.validate_fields()
        super().__post_init__(**kwargs)
        if getattr(self, "auto_map", None) is None:
            self.auto_map = dict(DECODER_AUTO_MAP)

    def validate_fields(self) -> None:
        """Raise ValueError naming the field, its value and what is allowed."""
        for field in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                      "intermediate_size", "max_position_embeddings"):
            check_positive_int(field, getattr(self, field))
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not allowed with num_attention_heads={self.num_attention_heads}; "
                "hidden_size must be a multiple of num_attention_heads."
            )
        head_dim = self.hidden_size // self.num_attention_heads
        if head_dim % 2:
            raise ValueError(
                f"hidden_size / num_attention_heads = {head_dim} is odd; rotary position embeddings need an even "
                "head dimension."
            )
        check_choice("mlp_type", self.mlp_type, MLP_TYPES)
        check_choice("hidden_act", self.hidden_act, ACTIVATIONS)
        check_choice("norm_type", self.norm_type, NORM_TYPES)
        for field in ("hidden_dropout", "attention_dropout", "classifier_dropout"):
            check_probability(field, getattr(self, field))
        for field in ("norm_eps", "rope_theta", "initializer_range"):
            if not getattr(self, field) > 0:
                raise ValueError(f"{field}={getattr(self, field)!r} is not allowed; it must be > 0.")
        for field in ("pad_token_id", "bos_token_id", "eos_token_id"):
            check_token_id(field, getattr(self, field), self.vocab_size)


# Saving the config also copies this file next to it (trust_remote_code export).
PretrainDecoderConfig.register_for_auto_class("AutoConfig")

__all__ = ["PretrainDecoderConfig", "DECODER_AUTO_MAP"]
