"""The hf_pretrain causal-LM family: a GPT-style pre-norm decoder and its heads.

* `PretrainDecoderModel` — embeddings -> N pre-norm causal blocks (rotary attention with a key/value cache, gated
  MLP) -> final norm (`AutoModel`).
* `PretrainDecoderForCausalLM` — + an LM head tied to the input embeddings; next-token loss with the labels shifted
  inside the model (labels == input_ids, -100 ignored); `generate()` (greedy, sampling, beam search; `DynamicCache`).
* `PretrainDecoderForSequenceClassification` — classifies from the state of the last real token (left or right
  padding), as transformers' `LlamaForSequenceClassification`.

Packing: when `position_ids` restart at 0 inside a row, each document attends only to its own earlier tokens and
its first token is not predicted from the previous document, so a packed row gives every document exactly the
logits and loss terms it gets alone.

Exported as is with saved models (imports only torch, transformers and its sibling files), so a saved folder loads
with `trust_remote_code=True` where hf_pretrain is not installed.

Shapes in comments: B batch, T new tokens this call, P cached tokens, L = P + T, C hidden size, V vocabulary,
K labels.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    SequenceClassifierOutputWithPast,
)

from .configuration_pretrain_decoder import PretrainDecoderConfig
from .decoder_layers import CausalSelfAttention, causal_self_attention_mask
from .layers import (
    FLASH_IMPLEMENTATIONS,
    FeedForward,
    RotaryEmbedding,
    attention_flops,
    document_ids_from_positions,
    flash_varlen_kwargs,
    linear_weight_count,
    make_norm,
    scaled_init_std,
)
from .modeling_pretrain_encoder import zero_loss_like

# transformers 5.24 renamed the key/value cache from `past_key_values` to `cache` (argument and output field; the old
# name is deprecated until 5.40). A saved folder runs this file on whichever transformers its user has, so `forward`
# takes both names and outputs are written under the name the installed output classes declare. Same rule as the
# denoising autoencoder (modeling_pretrain_dae.py); tests/models/test_decoder.py checks that generate() hands the
# growing cache back to forward.
CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
IGNORE_INDEX = -100


def one_cache_argument(cache: Cache | None, past_key_values: Cache | None) -> Cache | None:
    """The cache passed under either name (see CACHE_FIELD); both at once is a caller error."""
    if cache is not None and past_key_values is not None and cache is not past_key_values:
        raise ValueError("Pass the key/value cache once: as `cache` (transformers >= 5.24) or `past_key_values`.")
    return cache if cache is not None else past_key_values


# --------------------------------------------------------------------------------------------------- positions, masks
def default_position_ids(
    attention_mask: torch.Tensor | None, past_length: int, batch: int, length: int, device: torch.device
) -> torch.Tensor:
    """(B, T) positions of the new tokens when the caller gives none: counted over real tokens only, as generate()
    does, so a left-padded row has the positions of the same row unpadded."""
    if attention_mask is None:
        return torch.arange(past_length, past_length + length, device=device).expand(batch, -1)
    positions = (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)  # (B, P + T)
    return positions[:, -length:].to(device)


def packed_document_ids(position_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, T) document index per token when some row holds several documents (positions restart at 0 between real
    tokens), else None: one document per row needs only the causal (+ padding) mask.

    Padding never makes a row "packed": generate() gives every left-padding token position 0, and the first real
    token 0 as well, so pads count as one-token documents of their own, which the padding mask hides anyway.
    """
    documents = document_ids_from_positions(position_ids)  # (B, T), from 1
    if attention_mask is None:
        packed = bool((documents[:, -1] != documents[:, 0]).any())
    else:
        real = attention_mask[:, -documents.shape[1]:].to(device=documents.device, dtype=torch.bool)
        first = documents.masked_fill(~real, documents.shape[1] + 1).amin(dim=-1)  # (B,)
        last = documents.masked_fill(~real, 0).amax(dim=-1)
        packed = bool((last > first).any())
    return documents if packed else None


def decoder_attention(
    config,
    attention_mask: torch.Tensor | None,
    document_ids: torch.Tensor | None,
    query_length: int,
    past_length: int,
    device: torch.device,
    output_attentions: bool,
) -> tuple[torch.Tensor | None, dict]:
    """The self-attention mask in the form the attention implementation wants, and extra attention kwargs.

    attention_mask (B, P + T): 1 for real tokens, 0 for padding, or None (no padding). document_ids (B, T): packed
    documents (only without cached keys), or None.

    * eager / SDPA: a (B or 1, 1, T, P + T) bool mask, True where a query may read a key — causal AND not padding
      AND same document (a padded query reads itself, so no softmax row is empty) — or None when the plain causal
      rule is enough (SDPA then takes its `is_causal` kernel).
    * flash attention: the 2D padding mask as transformers' flash path takes it; packed documents become cumulative
      sequence lengths for the varlen kernel (causal inside each document).
    """
    if config._attn_implementation in FLASH_IMPLEMENTATIONS and not output_attentions:
        if document_ids is not None:
            if attention_mask is not None:
                raise ValueError(
                    "flash attention takes either padding (attention_mask) or packed documents (position_ids that "
                    "restart at 0), not both in one batch; pack without padding or use attn_implementation='sdpa'."
                )
            return None, flash_varlen_kwargs(document_ids)
        return attention_mask, {}
    if document_ids is None:
        return causal_self_attention_mask(attention_mask, query_length, past_length, device), {}
    positions = torch.arange(query_length, device=device)
    causal = positions[None, :] <= positions[:, None]  # (T, T)
    same_document = document_ids[:, :, None] == document_ids[:, None, :]  # (B, T, T)
    mask = causal[None] & same_document
    if attention_mask is not None:
        mask = (mask & attention_mask.to(device=device, dtype=torch.bool)[:, None, :]) | torch.eye(
            query_length, dtype=torch.bool, device=device
        )[None]
    return mask[:, None], {}  # (B, 1, T, T)


def next_token_targets(labels: torch.Tensor, document_ids: torch.Tensor | None = None) -> torch.Tensor:
    """labels (B, L) aligned with input_ids -> targets (B, L) aligned with the logits: position t predicts
    labels[t + 1]; the last position, and the last token of every packed document (whose next token starts another
    document), predict nothing (-100). What the causal-LM loss averages over; count `(targets != -100)` for a
    token-weighted loss over several micro-batches (`num_items_in_batch`)."""
    targets = nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    if document_ids is not None:
        boundary = document_ids[:, 1:] != document_ids[:, :-1]  # (B, L - 1): token t + 1 starts a document
        targets[:, :-1] = targets[:, :-1].masked_fill(boundary.to(targets.device), IGNORE_INDEX)
    return targets


# --------------------------------------------------------------------------------------------------- block
class PretrainDecoderLayer(GradientCheckpointingLayer):
    """Pre-norm causal block: x + Attn(Norm(x)), then x + MLP(Norm(x)). The attention is the denoising decoder's
    causal self-attention (the encoder's fused-QKV rotary attention, made causal, appending to a key/value cache)."""

    def __init__(self, config: PretrainDecoderConfig, layer_idx: int):
        super().__init__()
        self.attn_norm = make_norm(config.norm_type, config.hidden_size, config.norm_eps, config.norm_bias)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.mlp_norm = make_norm(config.norm_type, config.hidden_size, config.norm_eps, config.norm_bias)
        self.mlp = FeedForward(config)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        output_attentions: bool = False,
        **attention_kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """hidden_states (B, T, C) -> (B, T, C) and the attention weights (B, H, T, P + T) when requested.

        `cache` is a keyword argument so that gradient checkpointing (training) drops it."""
        attended, weights = self.attn(
            self.attn_norm(hidden_states), rotary, attention_mask, cache, output_attentions, **attention_kwargs
        )
        hidden_states = hidden_states + self.dropout(attended)
        hidden_states = hidden_states + self.dropout(self.mlp(self.mlp_norm(hidden_states)))
        return hidden_states, weights


# --------------------------------------------------------------------------------------------------- base class
class PretrainDecoderPreTrainedModel(PreTrainedModel):
    config_class = PretrainDecoderConfig
    config: PretrainDecoderConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["PretrainDecoderLayer"]
    _supports_sdpa = True
    # Flash attention takes the encoder's path (2D padding mask; varlen lengths for packed documents). Not run on a
    # GPU in this family's tests (CPU only): tests/models/test_decoder.py covers eager and SDPA.
    _supports_flash_attn = True
    _supports_attention_backend = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Truncated normal (+-2 std); projections into the residual stream are scaled down with depth (GPT-2)."""
        super()._init_weights(module)
        std = self.config.initializer_range
        residual_std = scaled_init_std(std, self.config.num_hidden_layers)

        def normal(weight: torch.Tensor, std: float) -> None:
            init.trunc_normal_(weight, mean=0.0, std=std, a=-2 * std, b=2 * std)

        if isinstance(module, CausalSelfAttention):
            normal(module.qkv_proj.weight, std)
            normal(module.o_proj.weight, residual_std)
        elif isinstance(module, FeedForward):
            normal(module.up_proj.weight, std)
            normal(module.down_proj.weight, residual_std)
        elif isinstance(module, PretrainDecoderModel):
            normal(module.embed_tokens.weight, std)
        elif isinstance(module, PretrainDecoderForSequenceClassification):
            normal(module.score.weight, std)
        elif isinstance(module, RotaryEmbedding):
            init.copy_(module.inv_freq, module.compute_inv_freq())
        for name in ("qkv_proj", "o_proj", "up_proj", "down_proj"):
            linear = getattr(module, name, None)
            if isinstance(linear, nn.Linear) and linear.bias is not None:
                init.zeros_(linear.bias)

    def training_flops(self, tokens: int, sequence_length: int) -> float:
        """Useful FLOPs of training on `tokens` positions in rows of `sequence_length`: 6 per linear weight and token
        (forward + backward; the LM head included) plus attention over the whole row — as PaLM's MFU counts it, the
        half of the scores the causal mask skips (and a block-diagonal mask's skipped pairs) counted as done."""
        config = self.config
        return float(
            6 * linear_weight_count(self) * tokens
            + attention_flops(config.num_hidden_layers, sequence_length, config.hidden_size, tokens)
        )


# --------------------------------------------------------------------------------------------------- base model
class PretrainDecoderModel(PretrainDecoderPreTrainedModel):
    """The bare causal decoder: token embeddings -> N pre-norm causal blocks -> final norm.

    Returns the last hidden states (B, T, C) and the key/value cache (a transformers `DynamicCache`) when
    `use_cache` (eval mode; training builds none).
    """

    def __init__(self, config: PretrainDecoderConfig):
        super().__init__(config)
        # No padding_idx: a causal LM often pads with its eos token, whose embedding must keep training.
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embedding_norm = (
            make_norm(config.norm_type, config.hidden_size, config.norm_eps, config.norm_bias)
            if config.embedding_norm
            else nn.Identity()
        )
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.rotary = RotaryEmbedding(config.hidden_size // config.num_attention_heads, config.rope_theta)
        self.layers = nn.ModuleList(PretrainDecoderLayer(config, index) for index in range(config.num_hidden_layers))
        self.final_norm = make_norm(config.norm_type, config.hidden_size, config.norm_eps, config.norm_bias)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast | tuple:
        """
        Args:
            input_ids (B, T): token ids of the new tokens. Or `inputs_embeds` (B, T, C).
            attention_mask (B, P + T): 1 for real tokens, 0 for padding (left or right), over the cached and the
                new tokens. None means no padding.
            position_ids (B, T): positions. Default: counted over real tokens from the cache length. When they
                restart at 0 inside a row (packed documents) and `config.attention_within_documents` is set, every
                token attends only inside its own document (without cached keys, i.e. training and prefill).
            cache (or its older name `past_key_values`): a `DynamicCache` from a previous call (generation).
            use_cache (default `config.use_cache`): return the cache (a new one is made in eval mode).
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        output_attentions = bool(output_attentions if output_attentions is not None else self.config.output_attentions)
        output_hidden_states = bool(
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        cache = one_cache_argument(cache, past_key_values)
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        if not use_cache:
            cache = None
        elif cache is None and not self.training:
            cache = DynamicCache(config=self.config)

        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)  # (B, T, C)
        batch, length = inputs_embeds.shape[:2]
        device = inputs_embeds.device
        past_length = cache.get_seq_length() if cache is not None else 0
        if attention_mask is not None:
            if attention_mask.ndim != 2 or attention_mask.shape[-1] != past_length + length:
                raise ValueError(
                    f"attention_mask of shape {tuple(attention_mask.shape)} does not fit {past_length} cached + "
                    f"{length} new tokens; pass a 2D (batch, {past_length + length}) mask of 1 (token) and 0 (padding)."
                )
            if bool(attention_mask.all()):
                attention_mask = None

        document_ids = None
        if position_ids is None:
            position_ids = default_position_ids(attention_mask, past_length, batch, length, device)
        else:
            position_ids = position_ids.to(device).expand(batch, -1)
            if self.config.attention_within_documents and past_length == 0:
                document_ids = packed_document_ids(position_ids, attention_mask)

        mask, attention_kwargs = decoder_attention(
            self.config, attention_mask, document_ids, length, past_length, device, output_attentions
        )
        hidden_states = self.dropout(self.embedding_norm(inputs_embeds))
        rotary = self.rotary(position_ids, hidden_states.dtype)  # 2 x (B, 1, T, D)

        all_hidden_states = [] if output_hidden_states else None
        all_attentions = [] if output_attentions else None
        for layer in self.layers:
            if output_hidden_states:
                all_hidden_states.append(hidden_states)
            hidden_states, weights = layer(
                hidden_states, rotary, mask, cache=cache, output_attentions=output_attentions, **attention_kwargs
            )
            if output_attentions:
                all_attentions.append(weights)
        hidden_states = self.final_norm(hidden_states)
        if output_hidden_states:
            all_hidden_states.append(hidden_states)

        output = BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            **{CACHE_FIELD: cache},
            hidden_states=tuple(all_hidden_states) if output_hidden_states else None,
            attentions=tuple(all_attentions) if output_attentions else None,
        )
        return output if return_dict else output.to_tuple()


def keep_positions(tensor: torch.Tensor, logits_to_keep: int | torch.Tensor) -> torch.Tensor:
    """(B, T, ...) -> the positions `logits_to_keep` selects: the last n (0 keeps all) or the given indices."""
    if isinstance(logits_to_keep, int):
        return tensor if logits_to_keep == 0 else tensor[:, -logits_to_keep:]
    return tensor[:, logits_to_keep]


# --------------------------------------------------------------------------------------------------- causal LM
class PretrainDecoderForCausalLM(PretrainDecoderPreTrainedModel, GenerationMixin):
    """Decoder + LM head (tied to the input embeddings unless `tie_word_embeddings=False`).

    Training: `labels` as transformers' causal LMs take them — a copy of `input_ids` with -100 where no loss is
    wanted; the model shifts them (position t predicts token t + 1). Inference: `generate()` with greedy decoding,
    sampling or beam search over a key/value cache; left-padded batches decode as their rows alone.
    """

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: PretrainDecoderConfig):
        super().__init__(config)
        self.model = PretrainDecoderModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head = new_embeddings

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        cache: Cache | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast | tuple:
        """`labels` (B, T): the input ids with -100 where no loss is wanted (padding, prompts). The loss is the mean
        next-token cross-entropy over `next_token_targets(labels, documents)`; with Trainer's `num_items_in_batch`
        (in kwargs) the summed loss is divided by it, so gradient accumulation weighs every target token equally.
        A padding-free collator's `shift_labels` (B, T) (already aligned with the logits) is used as given.
        Packed rows under Trainer: Trainer counts `labels[..., 1:] != -100`, so put -100 at each document's first
        label (as `DataCollatorWithFlattening` does) for its count to equal the targets used here.
        `logits_to_keep`: compute logits only for the last n positions (0: all) or the given indices — generate()
        passes 1, which skips the vocabulary projection of every prompt token but the last.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        shift_labels = kwargs.pop("shift_labels", None)
        wants_loss = labels is not None or shift_labels is not None
        if wants_loss:
            use_cache = False  # training: no cache to build
        outputs = self.model(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=one_cache_argument(cache, past_key_values),
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.lm_head(keep_positions(outputs.last_hidden_state, logits_to_keep))  # (B, T or n, V)

        loss = None
        if wants_loss:
            if shift_labels is None:
                documents = None
                if position_ids is not None and self.config.attention_within_documents:
                    documents = packed_document_ids(position_ids.expand(labels.shape[0], -1), attention_mask)
                shift_labels = next_token_targets(labels, documents)  # (B, T)
            shift_labels = keep_positions(shift_labels, logits_to_keep)
            if bool((shift_labels != IGNORE_INDEX).any()):
                loss = self.loss_function(
                    logits=logits,
                    labels=labels,
                    vocab_size=self.config.vocab_size,
                    shift_labels=shift_labels.contiguous(),
                    **kwargs,
                )
            else:
                loss = zero_loss_like(logits)

        output = CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            **{CACHE_FIELD: getattr(outputs, CACHE_FIELD)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return output if return_dict else output.to_tuple()


# --------------------------------------------------------------------------------------------------- classification
def last_token_indices(
    input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, pad_token_id: int | None, batch: int,
    length: int, device: torch.device,
) -> torch.Tensor:
    """(B,) index of each row's last real token: the rightmost 1 of `attention_mask`, else the rightmost token that
    is not `pad_token_id` (transformers' rule for causal-LM classifiers), else the last position. Works for left
    and right padding alike."""
    if attention_mask is not None:
        real = attention_mask.to(device=device, dtype=torch.bool)
    elif input_ids is not None and pad_token_id is not None:
        real = input_ids.to(device) != pad_token_id
    else:
        return torch.full((batch,), length - 1, device=device, dtype=torch.long)
    indices = torch.arange(length, device=device, dtype=torch.long)
    return (indices * real.long()).argmax(dim=-1)


class PretrainDecoderForSequenceClassification(PretrainDecoderPreTrainedModel):
    """Decoder + a linear classifier on the state of the last real token (the only one that has read the whole
    text). Single-label, multi-label and regression follow `config.problem_type` as transformers' own models."""

    # The classification losses are per-example means (MSE/BCE ignore Trainer's `num_items_in_batch`), so let
    # Trainer divide by the accumulation steps itself.
    accepts_loss_kwargs = False

    def __init__(self, config: PretrainDecoderConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = PretrainDecoderModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=False)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> SequenceClassifierOutputWithPast | tuple:
        """`labels`: (B,) class ids, (B, K) multi-hot floats, or (B,)/(B, K) regression targets. Padding may be
        on either side; without `attention_mask` it is found from `config.pad_token_id`."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.model(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=one_cache_argument(cache, past_key_values),
            inputs_embeds=inputs_embeds,
            use_cache=use_cache if use_cache is not None else False,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        states = outputs.last_hidden_state  # (B, T, C)
        batch, length = states.shape[:2]
        # With a cache the mask covers P + T tokens; the pooled token is among the new ones.
        mask = attention_mask[:, -length:] if attention_mask is not None else None
        last = last_token_indices(input_ids, mask, self.config.pad_token_id, batch, length, states.device)
        pooled = states[torch.arange(batch, device=states.device), last]  # (B, C)
        logits = self.score(self.dropout(pooled))  # (B, K)
        loss = self.loss_function(labels=labels, pooled_logits=logits, config=self.config) if labels is not None else None
        output = SequenceClassifierOutputWithPast(
            loss=loss,
            logits=logits,
            **{CACHE_FIELD: getattr(outputs, CACHE_FIELD)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return output if return_dict else output.to_tuple()


# Saving any of these copies this file, its sibling imports and the full auto_map (trust_remote_code export).
PretrainDecoderModel.register_for_auto_class("AutoModel")
PretrainDecoderForCausalLM.register_for_auto_class("AutoModelForCausalLM")
PretrainDecoderForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")

__all__ = [
    "PretrainDecoderPreTrainedModel",
    "PretrainDecoderModel",
    "PretrainDecoderForCausalLM",
    "PretrainDecoderForSequenceClassification",
    "next_token_targets",
    "packed_document_ids",
]
