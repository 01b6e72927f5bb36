"""Configuration of the hf_pretrain denoising-autoencoder family (exported as is with saved models).

Two config classes, one per input kind, so that each has its own `model_type` and therefore its own Auto mapping:

* `PretrainDAEConfig` (`"hf_pretrain_dae"`): token ids in, token ids out (TSDAE / BART style).
* `PretrainDAEFeatureConfig` (`"hf_pretrain_dae_features"`): float feature vectors in and out (MSE).
"""

from __future__ import annotations

from typing import Literal

from transformers import PreTrainedConfig

from .configuration_pretrain_encoder import (
    ACTIVATIONS,
    MLP_TYPES,
    NORM_TYPES,
    POOLING_TYPES,
    PretrainEncoderConfig,
    check_choice,
    check_positive_int,
    check_probability,
)

BOTTLENECK_TYPES = ("pooled", "none")
SENTENCE_POOLING_TYPES = ("bottleneck", "weighted_mean")
# The decoder's causal self-attention uses rotary positions only (no absolute table to grow with generation).
DAE_POSITION_EMBEDDING_TYPES = ("rotary",)

DAE_AUTO_MAP = {
    "AutoConfig": "configuration_pretrain_dae.PretrainDAEConfig",
    "AutoModel": "modeling_pretrain_dae.PretrainDAEModel",
    "AutoModelForSeq2SeqLM": "modeling_pretrain_dae.PretrainDAEForDenoising",
}
# A feature autoencoder has one class; AutoModel gives it (it also returns the pooled bottleneck features).
DAE_FEATURE_AUTO_MAP = {
    "AutoConfig": "configuration_pretrain_dae.PretrainDAEFeatureConfig",
    "AutoModel": "modeling_pretrain_dae.PretrainDAEForFeatureReconstruction",
}

# Fields the DAE's encoder shares with the masked-LM encoder family: `get_encoder_config` copies exactly these.
SHARED_ENCODER_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "mlp_type",
    "hidden_act",
    "norm_type",
    "norm_eps",
    "norm_bias",
    "embedding_norm",
    "position_embedding_type",
    "rope_theta",
    "max_position_embeddings",
    "attention_bias",
    "mlp_bias",
    "hidden_dropout",
    "attention_dropout",
    "initializer_range",
    "attention_within_documents",
    "pad_token_id",
)


def check_token_id(field: str, value, vocab_size: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < vocab_size:
        raise ValueError(
            f"{field}={value!r} is not allowed; it must be None or an integer in [0, vocab_size={vocab_size})."
        )


class PretrainDAEConfig(PreTrainedConfig):
    r"""Configuration of [`PretrainDAEModel`] and [`PretrainDAEForDenoising`]: encoder -> bottleneck -> decoder.

    The encoder is the masked-LM family's encoder (same fields, same weights layout), so it exports as a
    [`PretrainEncoderConfig`] checkpoint. The decoder is pre-norm: causal self-attention with rotary positions,
    cross-attention to the bottleneck, MLP. Input embeddings of encoder and decoder share one matrix; the output
    projection shares it too unless `tie_word_embeddings=False`.

    Args (besides the encoder fields documented on [`PretrainEncoderConfig`]):
        decoder_layers (`int`, defaults to 4): decoder blocks. (Named like BART's field so transformers' cache
            helpers read it as the decoder depth.)
        bottleneck (`str`, defaults to `"pooled"`): `"pooled"` — the decoder cross-attends to ONE pooled sentence
            vector (TSDAE, Wang et al. 2021), which forces the sentence into that vector; `"none"` — the decoder
            cross-attends to every encoder state (BART, Lewis et al. 2019).
        pooling (`str`, defaults to `"cls"`): how the sentence vector is pooled from the encoder: `"cls"` (first
            token, TSDAE's default) or `"mean"` (mean over non-padding tokens). The base model always returns it as
            `pooler_output`, whatever the bottleneck.
        sentence_pooling (`str`, defaults to `"bottleneck"`): what `pooler_output` (the sentence embedding) is.
            `"bottleneck"` — the pooled vector above, the one the decoder reads. `"weighted_mean"` — a mean of the
            same encoder states weighted per token by the model's `token_pooling_weights` buffer (all ones until
            set; the `dae-sentence` recipe sets smooth inverse frequency weights a / (a + p(token)) from its
            corpus, Arora, Liang and Ma 2017), needs `input_ids`. Either way the model's `pooled_center` buffer is
            subtracted (zeros until set; with `weighted_mean` the pretraining loop sets it to the mean
            training-document vector after the last step). Neither changes what the decoder reads, so reconstruction and `generate()` are the same.
        pad_token_id (`int`, defaults to 0), bos_token_id / eos_token_id (`int`, defaults to None): as in
            transformers; generation stops at `eos_token_id`.
        decoder_start_token_id (`int`, defaults to None): first decoder input; labels are shifted right behind it.
            Needed for training with labels and for `generate()` (a tokenizer's `cls_token_id` or `bos_token_id`).
        use_cache (`bool`, defaults to True): return the key/value cache from the decoder (generation).
    """

    model_type = "hf_pretrain_dae"
    default_auto_map = DAE_AUTO_MAP

    vocab_size: int = 8192
    hidden_size: int = 256
    num_hidden_layers: int = 4
    decoder_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 704
    mlp_type: Literal["gated", "plain"] = "gated"
    hidden_act: str = "gelu"
    norm_type: Literal["layernorm", "rmsnorm"] = "layernorm"
    norm_eps: float = 1e-5
    norm_bias: bool = False
    embedding_norm: bool = True
    position_embedding_type: Literal["rotary"] = "rotary"
    rope_theta: float = 10000.0
    max_position_embeddings: int = 512
    attention_bias: bool = False
    mlp_bias: bool = False
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    attention_within_documents: bool = True
    bottleneck: Literal["pooled", "none"] = "pooled"
    pooling: Literal["cls", "mean"] = "cls"
    sentence_pooling: Literal["bottleneck", "weighted_mean"] = "bottleneck"
    pad_token_id: int | None = 0
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    decoder_start_token_id: int | None = None
    tie_word_embeddings: bool = True
    use_cache: bool = True
    is_encoder_decoder: bool = True

    def __post_init__(self, **kwargs):
        self.validate_fields()
        super().__post_init__(**kwargs)
        if getattr(self, "auto_map", None) is None:
            self.auto_map = dict(self.default_auto_map)

    def validate_fields(self) -> None:
        """Raise ValueError naming the field, its value and what is allowed."""
        for field in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "decoder_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
        ):
            check_positive_int(field, getattr(self, field))
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not allowed with num_attention_heads={self.num_attention_heads}; "
                "hidden_size must be a multiple of num_attention_heads."
            )
        if (self.hidden_size // self.num_attention_heads) % 2:
            raise ValueError(
                f"hidden_size / num_attention_heads = {self.hidden_size // self.num_attention_heads} is odd; rotary "
                "position embeddings need an even head dimension."
            )
        check_choice("mlp_type", self.mlp_type, MLP_TYPES)
        check_choice("hidden_act", self.hidden_act, ACTIVATIONS)
        check_choice("norm_type", self.norm_type, NORM_TYPES)
        check_choice("position_embedding_type", self.position_embedding_type, DAE_POSITION_EMBEDDING_TYPES)
        check_choice("bottleneck", self.bottleneck, BOTTLENECK_TYPES)
        check_choice("pooling", self.pooling, POOLING_TYPES)
        check_choice("sentence_pooling", self.sentence_pooling, SENTENCE_POOLING_TYPES)
        for field in ("hidden_dropout", "attention_dropout"):
            check_probability(field, getattr(self, field))
        for field in ("norm_eps", "rope_theta", "initializer_range"):
            if not getattr(self, field) > 0:
                raise ValueError(f"{field}={getattr(self, field)!r} is not allowed; it must be > 0.")
        for field in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"):
            check_token_id(field, getattr(self, field), self.vocab_size)

    def get_encoder_config(self) -> PretrainEncoderConfig:
        """The masked-LM family config whose `PretrainEncoderModel` has exactly this DAE's encoder weights.

        Sequence classification after export pools the way this DAE pooled its sentence vector.
        """
        settings = {field: getattr(self, field) for field in SHARED_ENCODER_FIELDS}
        return PretrainEncoderConfig(**settings, classifier_pooling=self.pooling, tie_word_embeddings=True)


class PretrainDAEFeatureConfig(PretrainDAEConfig):
    r"""Configuration of [`PretrainDAEForFeatureReconstruction`]: the classic `min ||x - g(f(x))||^2` autoencoder on
    float feature vectors, with the same encoder/bottleneck/decoder blocks as the text family.

    A feature vector (B, F) is read as a short sequence of F / `feature_size` "feature tokens" of `feature_size`
    values each (e.g. an 8x8 digit image as 8 rows of 8 pixels); a (B, T, `feature_size`) input is used as is. Each
    feature token is embedded by a linear map (the analogue of a token-embedding lookup). Token-id fields
    (`vocab_size`, special token ids) are unused here.

    Args:
        feature_size (`int`, defaults to 8): values per feature token. `max_position_embeddings` bounds the number of
            feature tokens (the decoder has one learned query per output position).
        embedding_norm (`bool`, defaults to False here): normalizing each embedded feature token would throw away its
            magnitude, which the reconstruction needs; the pre-norm blocks still normalize inside every branch.
    """

    model_type = "hf_pretrain_dae_features"
    default_auto_map = DAE_FEATURE_AUTO_MAP

    feature_size: int = 8
    embedding_norm: bool = False
    vocab_size: int = 1
    is_encoder_decoder: bool = False

    def validate_fields(self) -> None:
        super().validate_fields()
        check_positive_int("feature_size", self.feature_size)

    def get_encoder_config(self) -> PretrainEncoderConfig:
        raise ValueError(
            "A feature autoencoder's encoder embeds float vectors with a linear map, not token ids, so it has no "
            "masked-LM encoder checkpoint to export; use `model.encode(features)` for its bottleneck features."
        )


# Saving the config also copies this file next to it (trust_remote_code export).
PretrainDAEConfig.register_for_auto_class("AutoConfig")
PretrainDAEFeatureConfig.register_for_auto_class("AutoConfig")

__all__ = ["PretrainDAEConfig", "PretrainDAEFeatureConfig", "BOTTLENECK_TYPES"]
