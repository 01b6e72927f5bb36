"""Token states -> one vector per text: the pooling `hf-pretrain embed` (hub/embed.py) and the in-training probe
(training/probe.py) share. On the ground floor so that both import it downward (the module doc of hub/embed.py
says what each pooling is)."""

from __future__ import annotations


def default_pooling(model) -> str:
    """`auto` pooling: the denoising autoencoder's bottleneck (`pooler`), else the mean over real tokens."""
    return "pooler" if model.config.model_type == "hf_pretrain_dae" else "mean"


def pool(outputs, attention_mask, pooling: str):
    """(B, L, C) states -> (B, C) with the named pooling: pooler, cls or mean over real tokens."""
    import torch

    if pooling == "pooler":
        pooled = getattr(outputs, "pooler_output", None)
        if pooled is None:
            raise ValueError(
                "pooling='pooler' is not allowed for this model: it returns no pooler_output; use mean or cls.")
        return pooled
    # The autoencoder's base model has no decoder output here: its encoder states are the token states.
    states = getattr(outputs, "last_hidden_state", None)
    states = states if states is not None else outputs.encoder_last_hidden_state
    if pooling == "cls":
        return states[:, 0]
    weights = attention_mask.to(states.dtype).unsqueeze(-1)
    return (states * weights).sum(1) / torch.clamp(weights.sum(1), min=1.0)
