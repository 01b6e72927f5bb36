"""Decoder blocks of the hf_pretrain denoising autoencoder: causal self-attention with a key/value cache,
cross-attention to the encoder (or to its pooled bottleneck vector), and the pre-norm decoder layer.

Exported as is next to the modeling file (imports only torch, transformers and sibling files).

Shapes in comments: B batch, T decoder length (new tokens this call), P cached decoder tokens, S memory length
(encoder states, or 1 with the pooled bottleneck), H heads, D head dim, C hidden size.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from transformers.cache_utils import Cache, EncoderDecoderCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .layers import FeedForward, SelfAttention, apply_rotary, eager_attention_forward, make_norm


# --------------------------------------------------------------------------------------------------- masks
# Written here rather than taken from transformers.masking_utils: the decoder only needs causal + padding for eager
# and SDPA, and the helper's cache arguments changed under us in 5.24 (the cause of cached != uncached generation).
def causal_self_attention_mask(
    attention_mask: torch.Tensor | None, query_length: int, past_length: int, device: torch.device
) -> torch.Tensor | None:
    """Decoder self-attention mask: (B or 1, 1, T, P + T) bool, True where a query may read a key; or None.

    attention_mask (B, P + T): 1 for real decoder tokens, 0 for padding, or None for none. None is returned when
    the plain causal rule is enough and the attention functions apply it themselves: no cached keys (SDPA's
    `is_causal`, eager's lower triangle), or one new token that may read every cached key.
    """
    if attention_mask is not None and bool(attention_mask.all()):
        attention_mask = None
    if attention_mask is None and (past_length == 0 or query_length == 1):
        return None
    key_positions = torch.arange(past_length + query_length, device=device)  # (P + T,)
    query_positions = key_positions[past_length:, None]  # (T, 1)
    mask = (key_positions[None, :] <= query_positions)[None, None]  # (1, 1, T, P + T)
    if attention_mask is not None:
        padding = attention_mask.to(device=device, dtype=torch.bool)[:, None, None, :]  # (B, 1, 1, P + T)
        # A padded query still reads itself: a row with no key at all would turn SDPA's softmax into NaN.
        mask = (mask & padding) | (key_positions[None, :] == query_positions)[None, None]
    return mask


def memory_attention_mask(memory_mask: torch.Tensor | None) -> torch.Tensor | None:
    """Cross-attention mask from the memory's padding (B, S): (B, 1, 1, S) bool, or None when nothing is padded."""
    if memory_mask is None or bool(memory_mask.all()):
        return None
    return memory_mask.to(torch.bool)[:, None, None, :]


def attention_function(config, output_attentions: bool) -> Callable:
    """Eager when weights are requested (SDPA/flash do not return them), else the configured implementation."""
    if output_attentions or config._attn_implementation == "eager":
        return eager_attention_forward
    return ALL_ATTENTION_FUNCTIONS.get_interface(config._attn_implementation, eager_attention_forward)


class CausalSelfAttention(SelfAttention):
    """The encoder's fused-QKV rotary attention, made causal and able to append to a key/value cache.

    Keys are cached after rotation, so a cached step only rotates the new query/key at its absolute position.
    """

    def __init__(self, config, layer_idx: int):
        super().__init__(config, layer_idx, is_causal=True)

    def forward(
        self,
        hidden_states: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None,
        cache: Cache | None = None,
        output_attentions: bool = False,
        **attention_kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`attention_kwargs` go to the attention function (the causal LM passes flash attention's varlen
        lengths for packed documents)."""
        batch, length, _ = hidden_states.shape
        # (B, T, 3C) -> 3 x (B, H, T, D)
        qkv = self.qkv_proj(hidden_states).view(batch, length, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        cos, sin = rotary
        query, key = apply_rotary(query, cos, sin), apply_rotary(key, cos, sin)
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)  # (B, H, P + T, D)

        output, weights = attention_function(self.config, output_attentions)(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            **attention_kwargs,
        )
        return self.o_proj(output.reshape(batch, length, -1)), weights


class CrossAttention(nn.Module):
    """Decoder queries attend to a fixed memory (no positions: the memory is a set, or a single pooled vector).

    The memory's keys/values are computed once per generation and kept in the cross-attention half of an
    `EncoderDecoderCache`; `is_updated[layer_idx]` records that they are there.
    """

    def __init__(self, config, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.is_causal = False  # transformers' SDPA path would otherwise treat a missing mask as causal
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=config.attention_bias)
        # One (C -> 2C) GEMM for keys and values of the memory.
        self.kv_proj = nn.Linear(config.hidden_size, 2 * config.hidden_size, bias=config.attention_bias)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=config.attention_bias)

    def memory_keys_values(
        self, memory: torch.Tensor, cache: EncoderDecoderCache | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """memory (B, S, C) -> keys, values (B, H, S, D), from the cache when this layer already stored them."""
        if cache is not None and cache.is_updated.get(self.layer_idx):
            stored = cache.cross_attention_cache.layers[self.layer_idx]
            return stored.keys, stored.values
        batch, length, _ = memory.shape
        kv = self.kv_proj(memory).view(batch, length, 2, self.num_heads, self.head_dim)
        key, value = kv.permute(2, 0, 3, 1, 4).unbind(0)
        if cache is not None:
            key, value = cache.cross_attention_cache.update(key, value, self.layer_idx)
            cache.is_updated[self.layer_idx] = True
        return key, value

    def forward(
        self,
        hidden_states: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor | None,
        cache: EncoderDecoderCache | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, length, _ = hidden_states.shape
        query = self.q_proj(hidden_states).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
        key, value = self.memory_keys_values(memory, cache)
        output, weights = attention_function(self.config, output_attentions)(
            self,
            query,
            key,
            value,
            memory_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
        )
        return self.o_proj(output.reshape(batch, length, -1)), weights


class DecoderLayer(GradientCheckpointingLayer):
    """Pre-norm decoder block: x + SelfAttn(Norm(x)), x + CrossAttn(Norm(x), memory), x + MLP(Norm(x))."""

    def __init__(self, config, layer_idx: int):
        super().__init__()

        def norm() -> nn.Module:
            return make_norm(config.norm_type, config.hidden_size, config.norm_eps, config.norm_bias)

        self.self_attn_norm = norm()
        self.self_attn = CausalSelfAttention(config, layer_idx)
        self.cross_attn_norm = norm()
        self.cross_attn = CrossAttention(config, layer_idx)
        self.mlp_norm = norm()
        self.mlp = FeedForward(config)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        memory: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],
        self_attention_mask: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        cache: EncoderDecoderCache | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """hidden_states (B, T, C), memory (B, S, C). Returns hidden states and the self/cross attention weights.

        `cache` is a keyword argument so that gradient checkpointing (training) drops it.
        """
        self_cache = cache.self_attention_cache if cache is not None else None
        attended, self_weights = self.self_attn(
            self.self_attn_norm(hidden_states), rotary, self_attention_mask, self_cache, output_attentions
        )
        hidden_states = hidden_states + self.dropout(attended)
        attended, cross_weights = self.cross_attn(
            self.cross_attn_norm(hidden_states), memory, memory_mask, cache, output_attentions
        )
        hidden_states = hidden_states + self.dropout(attended)
        hidden_states = hidden_states + self.dropout(self.mlp(self.mlp_norm(hidden_states)))
        return hidden_states, self_weights, cross_weights


__all__ = ["CausalSelfAttention", "CrossAttention", "DecoderLayer", "causal_self_attention_mask", "memory_attention_mask"]
