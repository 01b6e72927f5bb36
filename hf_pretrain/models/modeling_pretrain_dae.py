"""The hf_pretrain denoising-autoencoder family: encoder -> bottleneck -> decoder.

* `PretrainDAEModel` — the base model. Its encoder IS a masked-LM family `PretrainEncoderModel` (same module, same
  weight names), so `export_encoder()` writes an encoder-family checkpoint. Returns the pooled sentence vector as
  `pooler_output` (`AutoModel` gives sentence embeddings), and runs the decoder when decoder inputs are given.
* `PretrainDAEForDenoising` — base model + tied LM head; reconstructs the clean text from the corrupted one.
  Training: pass the corrupted `input_ids` and the clean `labels`; decoder inputs are the labels shifted right
  behind `decoder_start_token_id`, so logits at position t are compared with labels[:, t] (no second shift).
  Inference: `generate()` (greedy, beam search; key/value cache).
* `PretrainDAEForFeatureReconstruction` — the same blocks on float feature vectors, mean-squared-error loss.

Exported as is with saved models (imports only torch, transformers and its sibling files).

Shapes in comments: B batch, S encoder length, T decoder length, C hidden size, V vocabulary, F features per token.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutput, ModelOutput, Seq2SeqLMOutput, Seq2SeqModelOutput

from .configuration_pretrain_dae import PretrainDAEConfig, PretrainDAEFeatureConfig
from .decoder_layers import (
    DecoderLayer,
    cache_field,
    causal_self_attention_mask,
    memory_attention_mask,
    one_cache_argument,
)
from .layers import (
    RotaryEmbedding,
    attention_flops,
    linear_weight_count,
    make_norm,
    scaled_init_std,
    truncated_normal_,
)
from .modeling_pretrain_encoder import PretrainEncoderModel, pool_sequence, zero_loss_like


# --------------------------------------------------------------------------------------------------- outputs
@dataclass
class PretrainDAEModelOutput(Seq2SeqModelOutput):
    """`Seq2SeqModelOutput` plus `pooler_output` (B, C): the sentence embedding (by default the pooled bottleneck
    vector; see `sentence_pooling` on the config). Without decoder inputs only the encoder runs and
    `last_hidden_state` is None."""

    pooler_output: torch.FloatTensor | None = None


@dataclass
class PretrainDAEDenoisingOutput(Seq2SeqLMOutput):
    """`Seq2SeqLMOutput` plus `pooler_output` (B, C)."""

    pooler_output: torch.FloatTensor | None = None


@dataclass
class PretrainDAEFeatureOutput(ModelOutput):
    """loss: mean squared reconstruction error; reconstruction: same shape as the input features;
    pooler_output (B, C): the bottleneck features; encoder_last_hidden_state (B, 1 + N, C) with N feature tokens."""

    loss: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    encoder_last_hidden_state: torch.FloatTensor | None = None
    decoder_last_hidden_state: torch.FloatTensor | None = None


# --------------------------------------------------------------------------------------------------- helpers
def shift_tokens_right(
    labels: torch.Tensor, pad_token_id: int | None, decoder_start_token_id: int | None
) -> torch.Tensor:
    """Clean target ids (B, T), -100 at padding -> decoder inputs (B, T): start token, then labels[:, :-1]."""
    if decoder_start_token_id is None:
        raise ValueError(
            "decoder_start_token_id=None: the decoder inputs are the labels shifted right behind this token; set it "
            "on the config (e.g. to tokenizer.cls_token_id or tokenizer.bos_token_id)."
        )
    shifted = labels.new_empty(labels.shape)
    shifted[:, 0] = decoder_start_token_id
    shifted[:, 1:] = labels[:, :-1]
    return shifted.masked_fill(shifted == -100, pad_token_id if pad_token_id is not None else 0)


def reconstruction_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch: torch.Tensor | int | None = None
) -> torch.Tensor:
    """Cross-entropy of logits (B, T, V) against labels (B, T) at the SAME positions (the decoder inputs are
    already shifted), ignoring -100.

    With Trainer's `num_items_in_batch` (targets over all accumulated micro-batches) the sum is divided by it, so
    gradient accumulation weighs every target token equally; otherwise it is the mean over this batch's targets.
    """
    if not bool((labels != -100).any()):
        return zero_loss_like(logits)
    flat_logits = logits.float().reshape(-1, logits.shape[-1])  # fp32 log-softmax for low-precision training
    flat_labels = labels.reshape(-1).to(logits.device)
    if num_items_in_batch is None:
        return F.cross_entropy(flat_logits, flat_labels, ignore_index=-100)
    total = F.cross_entropy(flat_logits, flat_labels, ignore_index=-100, reduction="sum")
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


CACHE_FIELD = cache_field(Seq2SeqLMOutput)  # see decoder_layers.cache_field


def as_encoder_output(encoder_outputs) -> BaseModelOutput:
    """Accept what `generate()` or a user passes: a BaseModelOutput, or a tuple whose first item is (B, S, C)."""
    if isinstance(encoder_outputs, BaseModelOutput):
        return encoder_outputs
    if isinstance(encoder_outputs, ModelOutput):
        return BaseModelOutput(
            **{key: encoder_outputs.get(key) for key in ("last_hidden_state", "hidden_states", "attentions")}
        )
    items = tuple(encoder_outputs) + (None, None)
    return BaseModelOutput(last_hidden_state=items[0], hidden_states=items[1], attentions=items[2])


# --------------------------------------------------------------------------------------------------- base class
class PretrainDAEPreTrainedModel(PreTrainedModel):
    config_class = PretrainDAEConfig
    config: PretrainDAEConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["EncoderLayer", "DecoderLayer"]
    _supports_sdpa = True
    # Flash attention would need varlen handling of the decoder's padded cross-attention; not tested here.
    _supports_flash_attn = False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Standard layers first (normal, std = initializer_range), then the decoder's residual projections are
        scaled down with the decoder depth. The encoder is a `PretrainEncoderModel` sub-model: transformers runs
        that family's own `_init_weights` on it, so it starts exactly like a masked-LM encoder."""
        super()._init_weights(module)
        std = self.config.initializer_range
        residual_std = scaled_init_std(std, self.config.decoder_layers)

        normal = truncated_normal_
        if isinstance(module, DecoderLayer):
            for linear in (
                module.self_attn.qkv_proj,
                module.cross_attn.q_proj,
                module.cross_attn.kv_proj,
                module.mlp.up_proj,
            ):
                normal(linear.weight, std)
            for linear in (module.self_attn.o_proj, module.cross_attn.o_proj, module.mlp.down_proj):
                normal(linear.weight, residual_std)
        elif isinstance(module, RotaryEmbedding):
            init.copy_(module.inv_freq, module.compute_inv_freq())
        elif isinstance(module, PretrainDAEForFeatureReconstruction):
            normal(module.summary_embedding, std)
        elif isinstance(module, PretrainDAEModel):
            init.ones_(module.token_pooling_weights)
            init.zeros_(module.pooled_center)

    def encoder_and_decoder_weights(self) -> tuple[int, int]:
        """(weights of the encoder's linear layers, weights of every other linear layer): the 6 FLOPs per weight
        and token of a training step are spent on source tokens by the first and on target tokens by the second."""
        encoder = linear_weight_count(self.get_encoder())
        return encoder, linear_weight_count(self) - encoder

    def export_encoder(self, save_dir: str | os.PathLike) -> PretrainEncoderModel:
        """Write the encoder as a masked-LM family checkpoint (config + weights + code) and return it.

        The folder loads with `PretrainEncoderModel` / `AutoModel` (identical outputs) and with the encoder heads
        (`AutoModelForSequenceClassification`, ..., whose heads start fresh), with or without hf_pretrain.
        """
        encoder_config = self.config.get_encoder_config()
        encoder = PretrainEncoderModel(encoder_config)
        encoder.load_state_dict(self.get_encoder().state_dict())  # strict: every weight has its counterpart
        encoder.to(self.dtype).save_pretrained(save_dir)
        return encoder


# --------------------------------------------------------------------------------------------------- decoder
class PretrainDAEDecoder(nn.Module):
    """Pre-norm decoder stack over given input embeddings (the token embeddings are shared and live in the
    encoder; the feature autoencoder passes learned queries instead)."""

    def __init__(self, config: PretrainDAEConfig):
        super().__init__()
        self.config = config
        self.embedding_norm = (
            make_norm(config.norm_type, config.hidden_size, config.norm_eps, config.norm_bias)
            if config.embedding_norm
            else nn.Identity()
        )
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.rotary = RotaryEmbedding(config.hidden_size // config.num_attention_heads, config.rope_theta)
        self.layers = nn.ModuleList(DecoderLayer(config, index) for index in range(config.decoder_layers))
        self.final_norm = make_norm(config.norm_type, config.hidden_size, config.norm_eps, config.norm_bias)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: EncoderDecoderCache | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> dict:
        """inputs_embeds (B, T, C); memory (B, S, C) with its padding mask (B, S); attention_mask (B, P + T) for the
        decoder tokens (None: no padding). Returns a dict of last_hidden_state (B, T, C) and the optional extras."""
        batch, length = inputs_embeds.shape[:2]
        past_length = cache.get_seq_length() if cache is not None else 0
        # Absolute positions of the new tokens: rotary needs them to match the cached keys' rotation.
        position_ids = torch.arange(past_length, past_length + length, device=inputs_embeds.device).expand(batch, -1)
        self_attention_mask = causal_self_attention_mask(attention_mask, length, past_length, inputs_embeds.device)
        cross_attention_mask = memory_attention_mask(memory_mask)
        hidden_states = self.dropout(self.embedding_norm(inputs_embeds))
        rotary = self.rotary(position_ids, hidden_states.dtype)

        all_hidden, self_weights, cross_weights = [], [], []
        for layer in self.layers:
            if output_hidden_states:
                all_hidden.append(hidden_states)
            hidden_states, attn, cross = layer(
                hidden_states,
                memory,
                rotary,
                self_attention_mask=self_attention_mask,
                memory_mask=cross_attention_mask,
                cache=cache,
                output_attentions=output_attentions,
            )
            self_weights.append(attn)
            cross_weights.append(cross)
        hidden_states = self.final_norm(hidden_states)
        if output_hidden_states:
            all_hidden.append(hidden_states)
        return {
            "last_hidden_state": hidden_states,
            "hidden_states": tuple(all_hidden) if output_hidden_states else None,
            "attentions": tuple(self_weights) if output_attentions else None,
            "cross_attentions": tuple(cross_weights) if output_attentions else None,
        }


def bottleneck_memory(
    config: PretrainDAEConfig, encoder_states: torch.Tensor, attention_mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """What the decoder may read: (memory (B, S', C), its padding mask (B, S') or None, pooled (B, C)).

    pooled: memory is the one pooled vector, S' = 1 (cross-attention over a single key returns its value, so the
    decoder gets exactly one vector's worth of information per layer); none: every encoder state, S' = S.
    """
    pooled = pool_sequence(encoder_states, attention_mask, config.pooling)
    if config.bottleneck == "pooled":
        return pooled[:, None, :], None, pooled
    return encoder_states, attention_mask, pooled


def new_cache() -> EncoderDecoderCache:
    """Self-attention keys grow per generated token; cross-attention keys are filled once. Layers are added as the
    decoder reaches them (no config needed: every decoder layer is full attention)."""
    return EncoderDecoderCache(DynamicCache(), DynamicCache())


# --------------------------------------------------------------------------------------------------- base model
class PretrainDAEModel(PretrainDAEPreTrainedModel):
    """Encoder (a `PretrainEncoderModel`) -> bottleneck -> decoder.

    Call it with `input_ids`/`attention_mask` only to get sentence embeddings (`pooler_output`, B x C); add
    `decoder_input_ids` to run the decoder (`last_hidden_state`, B x T x C).
    """

    # A denoising checkpoint with its own output layer (tie_word_embeddings=False) saves `lm_head.weight`, which the
    # base model (AutoModel: sentence embeddings) has no use for.
    _keys_to_ignore_on_load_unexpected = [r"^lm_head\."]

    def __init__(self, config: PretrainDAEConfig):
        super().__init__(config)
        # The masked-LM encoder module itself, built from this config (it reads only the shared encoder fields).
        self.encoder = PretrainEncoderModel(config)
        self.decoder = PretrainDAEDecoder(config)
        # Sentence-embedding statistics of the training corpus (see `sentence_pooling` on the config); saved with
        # the weights. Per-token pooling weights (V,) and the vector subtracted from every embedding (C,).
        self.register_buffer("token_pooling_weights", torch.ones(config.vocab_size))
        self.register_buffer("pooled_center", torch.zeros(config.hidden_size))
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.encoder.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.encoder.set_input_embeddings(value)

    def get_encoder(self, modality: str | None = None) -> PretrainEncoderModel:
        return self.encoder

    @torch.no_grad()
    def set_token_pooling_weights(self, weights: torch.Tensor) -> None:
        """`sentence_pooling="weighted_mean"`: the weight (V,) of each token in a sentence vector, e.g. smooth
        inverse frequency a / (a + p(token)) of the training corpus."""
        if weights.shape != self.token_pooling_weights.shape:
            raise ValueError(
                f"token pooling weights of shape {tuple(weights.shape)}; this model needs "
                f"{tuple(self.token_pooling_weights.shape)} (one per vocabulary row)."
            )
        self.token_pooling_weights.copy_(weights)

    @torch.no_grad()
    def fit_pooled_center(self, batches) -> int:
        """Set `pooled_center` to the mean sentence vector of clean documents; `batches` yields (input_ids,
        attention_mask) pairs of shape (B, S). Sentence vectors of one corpus share a large common component that
        cosine similarity would mostly measure; removing the mean is BERT-whitening (Su et al. 2021) without its
        rotation. Returns the number of documents read."""
        was_training = self.training
        self.eval()
        self.pooled_center.zero_()
        total = torch.zeros_like(self.pooled_center, dtype=torch.float64)  # (C,)
        count = 0
        for input_ids, attention_mask in batches:
            device = self.pooled_center.device
            vectors = self(input_ids.to(device), attention_mask=attention_mask.to(device)).pooler_output  # (B, C)
            total += vectors.double().sum(dim=0)
            count += vectors.shape[0]
        self.pooled_center.copy_((total / max(count, 1)).to(self.pooled_center.dtype))
        self.train(was_training)
        return count

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Sentence embeddings (B, C): `pooler_output` (see `sentence_pooling` on the config)."""
        return self(input_ids, attention_mask=attention_mask).pooler_output

    def sentence_embedding(
        self,
        encoder_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        input_ids: torch.Tensor | None,
        bottleneck_vector: torch.Tensor,
    ) -> torch.Tensor | None:
        """`pooler_output` (B, C) from the encoder states (B, S, C); None for `sentence_pooling="weighted_mean"`
        without `input_ids` (generation passes only encoder outputs, and needs no sentence embedding)."""
        if self.config.sentence_pooling == "bottleneck":
            vector = bottleneck_vector
        elif input_ids is None:
            return None
        else:
            weights = self.token_pooling_weights[input_ids].to(encoder_states.dtype)  # (B, S)
            if attention_mask is not None:
                weights = weights * attention_mask.to(encoder_states.dtype)
            vector = (encoder_states * weights.unsqueeze(-1)).sum(dim=1) / weights.sum(dim=1, keepdim=True).clamp(
                min=1e-6
            )
        return vector - self.pooled_center.to(vector.dtype)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple | None = None,
        past_key_values: EncoderDecoderCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        decoder_inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        cache: EncoderDecoderCache | None = None,
        **kwargs,
    ) -> PretrainDAEModelOutput | tuple:
        """
        Args:
            input_ids (B, S): the (corrupted) text, or `inputs_embeds` (B, S, C), or precomputed `encoder_outputs`.
            attention_mask (B, S): 1 for real tokens, 0 for padding (also the cross-attention mask, and the mean
                pooling weights).
            decoder_input_ids (B, T): decoder inputs (already shifted), or `decoder_inputs_embeds` (B, T, C).
            decoder_attention_mask (B, P + T): decoder padding; None means none (right padding needs none).
            cache (or its older name `past_key_values`): an `EncoderDecoderCache` from a previous step (generation).
        """
        output_attentions = bool(output_attentions if output_attentions is not None else self.config.output_attentions)
        output_hidden_states = bool(
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        cache = one_cache_argument(cache, past_key_values)

        if encoder_outputs is None:
            encoder_outputs = self.encoder(
                input_ids,
                attention_mask=attention_mask,
                inputs_embeds=inputs_embeds,
                output_attentions=output_attentions,
                output_hidden_states=output_hidden_states,
                return_dict=True,
            )
        encoder_outputs = as_encoder_output(encoder_outputs)
        memory, memory_mask, pooled = bottleneck_memory(self.config, encoder_outputs.last_hidden_state, attention_mask)
        sentence_vector = self.sentence_embedding(encoder_outputs.last_hidden_state, attention_mask, input_ids, pooled)

        decoder_outputs = {}
        if decoder_input_ids is not None or decoder_inputs_embeds is not None:
            if decoder_inputs_embeds is None:
                # Decoder inputs go through the same embedding matrix as the encoder's (tied by construction).
                decoder_inputs_embeds = self.get_input_embeddings()(decoder_input_ids)
            use_cache = use_cache if use_cache is not None else self.config.use_cache
            if use_cache and cache is None and not self.training:
                cache = new_cache()
            if not use_cache:
                cache = None
            decoder_outputs = self.decoder(
                decoder_inputs_embeds,
                memory,
                memory_mask=memory_mask,
                attention_mask=decoder_attention_mask,
                cache=cache,
                output_attentions=output_attentions,
                output_hidden_states=output_hidden_states,
            )

        output = PretrainDAEModelOutput(
            last_hidden_state=decoder_outputs.get("last_hidden_state"),
            **{CACHE_FIELD: cache if decoder_outputs else None},
            decoder_hidden_states=decoder_outputs.get("hidden_states"),
            decoder_attentions=decoder_outputs.get("attentions"),
            cross_attentions=decoder_outputs.get("cross_attentions"),
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_hidden_states=encoder_outputs.hidden_states,
            encoder_attentions=encoder_outputs.attentions,
            pooler_output=sentence_vector,
        )
        return output if return_dict else output.to_tuple()


# --------------------------------------------------------------------------------------------------- denoising
class PretrainDAEForDenoising(PretrainDAEPreTrainedModel, GenerationMixin):
    """Base model + LM head tied to the shared embedding matrix: reconstructs clean text from corrupted text.

    Named `...ForDenoising` on purpose: transformers maps `...ForConditionalGeneration` to a causal loss that would
    shift the labels a second time. The loss here is computed in this file (see `reconstruction_cross_entropy`).
    """

    _tied_weights_keys = {"lm_head.weight": "model.encoder.embeddings.tok_embeddings.weight"}

    def __init__(self, config: PretrainDAEConfig):
        super().__init__(config)
        self.model = PretrainDAEModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head = new_embeddings

    def get_encoder(self, modality: str | None = None) -> PretrainEncoderModel:
        return self.model.encoder

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        return shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple | None = None,
        past_key_values: EncoderDecoderCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        decoder_inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        cache: EncoderDecoderCache | None = None,
        **kwargs,
    ) -> PretrainDAEDenoisingOutput | tuple:
        """`labels` (B, T): the clean ids, -100 at padding. Without decoder inputs they become the decoder inputs
        shifted right behind `decoder_start_token_id`. Trainer's `num_items_in_batch` (in kwargs) sets the loss
        denominator so gradient accumulation averages over all target tokens."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if labels is not None:
            use_cache = False  # training: no cache to build
            if decoder_input_ids is None and decoder_inputs_embeds is None:
                decoder_input_ids = self.prepare_decoder_input_ids_from_labels(labels)
        if decoder_input_ids is None and decoder_inputs_embeds is None:
            raise ValueError("Pass labels (training) or decoder_input_ids (inference); use generate() to decode.")
        outputs = self.model(
            input_ids,
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask,
            encoder_outputs=encoder_outputs,
            cache=one_cache_argument(cache, past_key_values),
            inputs_embeds=inputs_embeds,
            decoder_inputs_embeds=decoder_inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.lm_head(outputs.last_hidden_state)  # (B, T, V)
        loss = None
        if labels is not None:
            loss = reconstruction_cross_entropy(logits, labels, kwargs.get("num_items_in_batch"))
        output = PretrainDAEDenoisingOutput(
            loss=loss,
            logits=logits,
            **{CACHE_FIELD: getattr(outputs, CACHE_FIELD)},
            decoder_hidden_states=outputs.decoder_hidden_states,
            decoder_attentions=outputs.decoder_attentions,
            cross_attentions=outputs.cross_attentions,
            encoder_last_hidden_state=outputs.encoder_last_hidden_state,
            encoder_hidden_states=outputs.encoder_hidden_states,
            encoder_attentions=outputs.encoder_attentions,
            pooler_output=outputs.pooler_output,
        )
        return output if return_dict else output.to_tuple()

    def training_flops(self, source_tokens: int, target_tokens: int, source_length: int, target_length: int) -> float:
        """Useful FLOPs of a training batch: encoder linears on the source tokens, decoder linears and the
        vocabulary projection on the target tokens, self-attention at the padded lengths (cross-attention to one
        pooled vector, or to the source states, is not counted)."""
        encoder, decoder = self.encoder_and_decoder_weights()
        config = self.config
        return float(
            6 * encoder * source_tokens + 6 * decoder * target_tokens
            + attention_flops(config.num_hidden_layers, source_length, config.hidden_size, source_tokens)
            + attention_flops(config.decoder_layers, target_length, config.hidden_size, target_tokens)
        )


# --------------------------------------------------------------------------------------------------- features
class PretrainDAEForFeatureReconstruction(PretrainDAEPreTrainedModel):
    """The classic autoencoder `min ||x - g(f(x))||^2` on float features, built from the same blocks.

    Design: a feature vector (B, F) becomes N = F / feature_size "feature tokens" (B, N, feature_size), e.g. the 8
    rows of an 8x8 image; (B, N, feature_size) inputs are used as they are. The encoder's token-embedding slot holds
    a linear map feature_size -> C (an embedding lookup is a linear map of a one-hot vector; here the input is
    dense), a learned summary token is prepended (what `pooling="cls"` reads), and the encoder runs unchanged. The
    decoder reads the bottleneck through cross-attention with one learned query per output position (no teacher
    forcing: reconstruction is one non-autoregressive pass), and a linear map C -> feature_size gives each token
    back. The noise (Gaussian, masking) comes from `hf_pretrain.data.noising.FeatureNoiseCollator`; `labels` are
    the clean features, so the loss is the plain mean squared error over all values.
    """

    config_class = PretrainDAEFeatureConfig
    config: PretrainDAEFeatureConfig
    # MSE is a mean per value; Trainer's token count (num_items_in_batch) means nothing here, so let Trainer
    # divide by the accumulation steps itself.
    accepts_loss_kwargs = False
    main_input_name = "input_features"

    def __init__(self, config: PretrainDAEFeatureConfig):
        super().__init__(config)
        self.encoder = PretrainEncoderModel(config)
        self.encoder.set_input_embeddings(nn.Linear(config.feature_size, config.hidden_size))
        self.summary_embedding = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.decoder_queries = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.decoder = PretrainDAEDecoder(config)
        self.output_projection = nn.Linear(config.hidden_size, config.feature_size)
        self.post_init()

    def get_encoder(self, modality: str | None = None) -> PretrainEncoderModel:
        return self.encoder

    def as_tokens(self, input_features: torch.Tensor) -> torch.Tensor:
        """(B, F) -> (B, F / feature_size, feature_size); (B, N, feature_size) unchanged."""
        size = self.config.feature_size
        if input_features.ndim == 2 and input_features.shape[-1] % size == 0:
            return input_features.reshape(input_features.shape[0], -1, size)
        if input_features.ndim == 3 and input_features.shape[-1] == size:
            return input_features
        raise ValueError(
            f"input_features of shape {tuple(input_features.shape)} do not fit feature_size={size}: pass (B, F) with "
            f"F a multiple of {size}, or (B, N, {size})."
        )

    def encode_tokens(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, N, feature_size) -> encoder states (B, 1 + N, C) and the pooled bottleneck (B, C)."""
        if tokens.shape[1] + 1 > self.config.max_position_embeddings:
            raise ValueError(
                f"{tokens.shape[1]} feature tokens do not fit max_position_embeddings="
                f"{self.config.max_position_embeddings} (one position goes to the summary token)."
            )
        embedded = self.encoder.get_input_embeddings()(tokens)  # (B, N, C)
        summary = self.summary_embedding.expand(tokens.shape[0], -1, -1).to(embedded.dtype)
        states = self.encoder(inputs_embeds=torch.cat((summary, embedded), dim=1), return_dict=True).last_hidden_state
        return states, pool_sequence(states, None, self.config.pooling)

    def encode(self, input_features: torch.Tensor) -> torch.Tensor:
        """Bottleneck features (B, C) of (B, F) or (B, N, feature_size) inputs."""
        return self.encode_tokens(self.as_tokens(input_features))[1]

    def forward(
        self,
        input_features: torch.Tensor,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> PretrainDAEFeatureOutput | tuple:
        """input_features: the (noisy) features, (B, F) or (B, N, feature_size); labels: the clean features, same
        shape. `reconstruction` has the input's shape."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        tokens = self.as_tokens(input_features)  # (B, N, feature_size)
        states, pooled = self.encode_tokens(tokens)
        memory, _, _ = bottleneck_memory(self.config, states, None)
        batch, count = tokens.shape[:2]
        queries = self.decoder_queries.weight[:count].expand(batch, -1, -1)  # (B, N, C)
        decoded = self.decoder(queries, memory)["last_hidden_state"]  # (B, N, C)
        reconstruction = self.output_projection(decoded).reshape(input_features.shape)
        loss = None
        if labels is not None:
            loss = F.mse_loss(reconstruction.float(), labels.to(reconstruction.device).float())
        output = PretrainDAEFeatureOutput(
            loss=loss,
            reconstruction=reconstruction,
            pooler_output=pooled,
            encoder_last_hidden_state=states,
            decoder_last_hidden_state=decoded,
        )
        return output if return_dict else output.to_tuple()

    def training_flops(self, rows: int, tokens_per_row: int) -> float:
        """Useful FLOPs of a training batch of `rows` vectors of `tokens_per_row` feature tokens: encoder linears
        on the feature tokens plus the summary token, decoder linears on one query per feature token,
        self-attention in both (cross-attention to one vector is negligible)."""
        encoder, decoder = self.encoder_and_decoder_weights()
        config = self.config
        tokens = rows * tokens_per_row
        source = tokens + rows
        return float(
            6 * encoder * source + 6 * decoder * tokens
            + attention_flops(config.num_hidden_layers, tokens_per_row + 1, config.hidden_size, source)
            + attention_flops(config.decoder_layers, tokens_per_row, config.hidden_size, tokens)
        )


# Saving any of these copies this file, its sibling imports and the full auto_map (trust_remote_code export).
PretrainDAEModel.register_for_auto_class("AutoModel")
PretrainDAEForDenoising.register_for_auto_class("AutoModelForSeq2SeqLM")
PretrainDAEForFeatureReconstruction.register_for_auto_class("AutoModel")

__all__ = [
    "PretrainDAEPreTrainedModel",
    "PretrainDAEModel",
    "PretrainDAEForDenoising",
    "PretrainDAEForFeatureReconstruction",
    "PretrainDAEModelOutput",
    "PretrainDAEDenoisingOutput",
    "PretrainDAEFeatureOutput",
    "shift_tokens_right",
    "reconstruction_cross_entropy",
]
