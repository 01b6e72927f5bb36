"""Transformer building blocks shared by both hf_pretrain model families.

This file is exported as is next to the modeling files of a saved model (``save_pretrained`` copies every file
reached through ``from .x import y``), so it imports only torch and transformers — never ``hf_pretrain``.

Shapes in comments: B batch, L sequence length, H heads, D head dim, C hidden size (= H * D).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F
from transformers import initialization as init
from transformers.activations import ACT2FN
# transformers' internal mask helper, used in one place (build_encoder_attention) for its per-implementation mask
# formats (SDPA/eager tensors, flex BlockMask); tests/models/test_encoder.py's packed-vs-separate and padding tests
# fail if its behaviour moves. The decoder owns its simpler causal mask (decoder_layers.py).
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

FLASH_IMPLEMENTATIONS = ("flash_attention_2", "flash_attention_3", "flash_attention_4")


# --------------------------------------------------------------------------------------------------- norms
class RMSNorm(nn.Module):
    """Root-mean-square norm (no mean subtraction); `bias` exists only for symmetry with LayerNorm."""

    def __init__(self, hidden_size: int, eps: float = 1e-5, bias: bool = False):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.bias = nn.Parameter(torch.zeros(hidden_size)) if bias else None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        normed = F.rms_norm(hidden_states, (hidden_states.shape[-1],), self.weight, self.eps)
        return normed + self.bias if self.bias is not None else normed


def make_norm(norm_type: str, hidden_size: int, eps: float, bias: bool) -> nn.Module:
    if norm_type == "rmsnorm":
        return RMSNorm(hidden_size, eps=eps, bias=bias)
    return nn.LayerNorm(hidden_size, eps=eps, bias=bias)


# --------------------------------------------------------------------------------------------------- rotary
class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoFormer): returns cos/sin tables for the given position ids.

    Computed once per forward pass and shared by every layer. `inv_freq` is a non-persistent buffer, so it is
    rebuilt from the config on load instead of being stored with the weights.
    """

    def __init__(self, head_dim: int, theta: float = 10000.0):
        super().__init__()
        self.head_dim = head_dim
        self.theta = theta
        self.register_buffer("inv_freq", self.compute_inv_freq(), persistent=False)

    def compute_inv_freq(self) -> torch.Tensor:
        exponents = torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim
        return 1.0 / (self.theta**exponents)

    @torch.no_grad()
    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # position_ids (B, L) -> angles (B, L, D/2) in fp32, so long positions keep their precision
        angles = position_ids[..., None].float() * self.inv_freq.to(position_ids.device)
        angles = torch.cat((angles, angles), dim=-1)  # (B, L, D)
        # (B, 1, L, D): broadcasts over heads
        return angles.cos().to(dtype)[:, None], angles.sin().to(dtype)[:, None]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, H, L, D); cos/sin (B, 1, L, D)."""
    return x * cos + rotate_half(x) * sin


# --------------------------------------------------------------------------------------------------- masks
def document_ids_from_positions(position_ids: torch.Tensor) -> torch.Tensor:
    """(B, L) position ids that restart at 0 at each packed document -> (B, L) document index per token.

    A row may start in the middle of a document (position > 0); that piece counts as its own document.
    """
    starts = position_ids == 0
    starts[:, 0] = True
    return starts.long().cumsum(dim=-1)


def flash_varlen_kwargs(document_ids: torch.Tensor) -> dict:
    """Cumulative document lengths over the flattened batch, for flash attention's varlen kernel (GPU only)."""
    batch, length = document_ids.shape
    starts = torch.ones_like(document_ids, dtype=torch.bool)
    starts[:, 1:] = document_ids[:, 1:] != document_ids[:, :-1]
    start_offsets = starts.flatten().nonzero().flatten()
    end = torch.tensor([batch * length], device=document_ids.device)
    cu_seq_lens = torch.cat((start_offsets, end)).to(torch.int32)
    max_length = int((cu_seq_lens[1:] - cu_seq_lens[:-1]).max())
    return {"cu_seq_lens_q": cu_seq_lens, "cu_seq_lens_k": cu_seq_lens, "max_length_q": max_length, "max_length_k": max_length}


def build_encoder_attention(
    config,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor | None,
    document_ids: torch.Tensor | None,
) -> tuple[torch.Tensor | None, dict]:
    """The bidirectional attention mask in the form the configured attention implementation wants.

    Returns (mask, extra attention kwargs). Without padding and without packed documents the mask is None, so
    SDPA can pick its fastest kernel. With packed documents every token attends only inside its own document:
    a block-diagonal mask for eager/SDPA/flex, cumulative sequence lengths for flash attention's varlen kernel.
    """
    if document_ids is not None and config._attn_implementation in FLASH_IMPLEMENTATIONS:
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError(
                "flash attention takes either padding (attention_mask) or packed documents (position_ids that "
                "restart at 0), not both in one batch; pack without padding or use attn_implementation='sdpa'."
            )
        return None, flash_varlen_kwargs(document_ids)

    and_mask_function = None
    if document_ids is not None:

        def same_document(batch_idx, head_idx, q_idx, kv_idx):
            return document_ids[batch_idx, q_idx] == document_ids[batch_idx, kv_idx]

        and_mask_function = same_document
    mask = create_bidirectional_mask(
        config=config,
        inputs_embeds=inputs_embeds,
        attention_mask=attention_mask,
        and_mask_function=and_mask_function,
    )
    return mask, {}


# --------------------------------------------------------------------------------------------------- attention
def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention that also returns the weights (for `output_attentions`).

    q/k/v (B, H, L, D); mask bool (True = attend) or additive float, broadcastable to (B, H, Lq, Lk).
    Returns output (B, Lq, H, D) — the layout of transformers' attention interface — and weights (B, H, Lq, Lk).
    """
    scaling = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    if getattr(module, "is_causal", False) and attention_mask is None and query.shape[2] > 1:
        lq, lk = query.shape[2], key.shape[2]
        causal = torch.ones(lq, lk, dtype=torch.bool, device=query.device).tril(diagonal=lk - lq)
        scores = scores.masked_fill(~causal, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, weights


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused QKV projection and rotary positions.

    `is_causal` is set explicitly: transformers' SDPA path treats a module without it as causal.
    """

    def __init__(self, config, layer_idx: int, is_causal: bool = False):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.is_causal = is_causal
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        # One (C -> 3C) GEMM instead of three (C -> C): fewer, larger matmuls run closer to the CPU/GPU peak.
        self.qkv_proj = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.attention_bias)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=config.attention_bias)

    def forward(
        self,
        hidden_states: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor] | None,
        attention_mask: torch.Tensor | None,
        output_attentions: bool = False,
        select: torch.Tensor | None = None,
        **attention_kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`select` (B, L) bool: return only those positions' outputs, (N, C) — every position still serves as
        a key and value, but the output projection runs on the selected rows only."""
        batch, length, _ = hidden_states.shape
        # (B, L, 3C) -> 3 x (B, H, L, D)
        qkv = self.qkv_proj(hidden_states).view(batch, length, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if rotary is not None:
            cos, sin = rotary
            query, key = apply_rotary(query, cos, sin), apply_rotary(key, cos, sin)

        attention_fn: Callable = eager_attention_forward
        if not output_attentions and self.config._attn_implementation != "eager":
            attention_fn = ALL_ATTENTION_FUNCTIONS.get_interface(
                self.config._attn_implementation, eager_attention_forward
            )
        output, weights = attention_fn(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            **attention_kwargs,
        )
        output = output.reshape(batch, length, -1)  # (B, L, H, D) -> (B, L, C)
        if select is not None:
            output = output[select]  # (N, C)
        return self.o_proj(output), weights


# --------------------------------------------------------------------------------------------------- MLP
class FeedForward(nn.Module):
    """Gated MLP (GeGLU with gelu, SwiGLU with silu) or the plain two-layer MLP of BERT."""

    def __init__(self, config):
        super().__init__()
        self.gated = config.mlp_type == "gated"
        in_features = 2 * config.intermediate_size if self.gated else config.intermediate_size
        # Gated: one (C -> 2I) GEMM holds both the gate and the value halves.
        self.up_proj = nn.Linear(config.hidden_size, in_features, bias=config.mlp_bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)
        self.act = ACT2FN[config.hidden_act]
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        projected = self.up_proj(hidden_states)
        if self.gated:
            gate, value = projected.chunk(2, dim=-1)
            projected = self.act(gate) * value
        else:
            projected = self.act(projected)
        return self.down_proj(self.dropout(projected))


# --------------------------------------------------------------------------------------------------- block
class EncoderLayer(GradientCheckpointingLayer):
    """Pre-norm block: x + Attn(Norm(x)), then x + MLP(Norm(x))."""

    def __init__(self, config, layer_idx: int):
        super().__init__()
        # The first block may take its input as the embedding norm leaves it (ModernBERT's layer 0 does).
        first_norm = layer_idx > 0 or getattr(config, "first_layer_attn_norm", True)
        self.attn_norm = (make_norm(config.norm_type, config.hidden_size, config.norm_eps, config.norm_bias)
                          if first_norm else nn.Identity())
        self.attn = SelfAttention(config, layer_idx, is_causal=False)
        self.mlp_norm = make_norm(config.norm_type, config.hidden_size, config.norm_eps, config.norm_bias)
        self.mlp = FeedForward(config)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        select: torch.Tensor | None = None,
        **attention_kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`select` (B, L) bool: compute the block's output only at those positions, returned as (N, C)."""
        attended, weights = self.attn(
            self.attn_norm(hidden_states), rotary, attention_mask, output_attentions, select=select, **attention_kwargs
        )
        if select is not None:
            hidden_states = hidden_states[select]  # (N, C)
        hidden_states = hidden_states + self.dropout(attended)
        hidden_states = hidden_states + self.dropout(self.mlp(self.mlp_norm(hidden_states)))
        return hidden_states, weights


def truncated_normal_(weight: torch.Tensor, std: float) -> None:
    """The init of every hf_pretrain weight matrix: a normal truncated at +-2 std."""
    init.trunc_normal_(weight, mean=0.0, std=std, a=-2 * std, b=2 * std)


def init_block_projections(module: nn.Module, std: float, residual_std: float) -> bool:
    """An attention block's or MLP's projections: `std`, and `residual_std` for the one that writes into the
    residual stream (o_proj, down_proj). True when `module` was one of them."""
    if isinstance(module, FeedForward):
        truncated_normal_(module.up_proj.weight, std)
        truncated_normal_(module.down_proj.weight, residual_std)
        return True
    if isinstance(getattr(module, "qkv_proj", None), nn.Linear) and isinstance(getattr(module, "o_proj", None), nn.Linear):
        truncated_normal_(module.qkv_proj.weight, std)
        truncated_normal_(module.o_proj.weight, residual_std)
        return True
    return False


def scaled_init_std(initializer_range: float, num_layers: int) -> float:
    """Std for projections that write into the residual stream (GPT-2 / Megatron): shrink by sqrt(2 * layers)
    so the residual's variance does not grow with depth."""
    return initializer_range / math.sqrt(2.0 * num_layers)


# --------------------------------------------------------------------------------------------------- FLOPs
def linear_weight_count(module: nn.Module, exclude: tuple[nn.Module, ...] = ()) -> int:
    """Weights of every nn.Linear inside `module`, except those inside `exclude`: a linear layer costs
    6 FLOPs per weight per token in a training step (2 per multiply-add, forward + 2x backward)."""
    excluded = {id(m) for part in exclude for m in part.modules()}
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Linear) and id(m) not in excluded)


def attention_flops(num_layers: int, context_length: int, hidden_size: int, tokens: int) -> int:
    """Training FLOPs of the attention scores and weighted sum: two (L x C) matmuls per token and layer, 4 * L * C
    forward, x3 for forward + backward."""
    return 12 * num_layers * context_length * hidden_size * tokens

