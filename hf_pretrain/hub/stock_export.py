"""Our families as stock transformers classes: the decoder as Llama, the encoder as ModernBERT.

The decoder is Llama-shaped (RMSNorm, gated MLP, rotary, no embedding norm) and converts exactly; the encoder is
ModernBERT when its first block takes the embedding norm's output as it is (`first_layer_attn_norm=False`, as
ModernBERT's layer 0 does). A config choice with no stock equivalent is refused before anything is written,
naming the field, its value and what the stock class needs. Every conversion is checked, not assumed: fp32 logits
of the stock model against ours on a padded batch of varied lengths (within PARITY_TOLERANCE), and for a decoder
the tokens of greedy `generate()`.

Weight layouts (C hidden, I MLP width): our fused `qkv_proj` (3C x C, [q | k | v], heads major) is ModernBERT's
`Wqkv` as it is and Llama's q_proj, k_proj, v_proj in that order; our gated MLP's `up_proj` (2I x C) computes
act(first half) * second half, which is ModernBERT's `Wi` as it is and Llama's gate_proj (first half) and up_proj
(second half).
"""

from __future__ import annotations

import torch

PARITY_TOLERANCE = 1e-5  # max abs difference of fp32 logits

# Our model type -> the stock architecture it converts to.
TARGETS = {"hf_pretrain_decoder": "llama", "hf_pretrain_encoder": "modernbert"}
# Our class -> the stock class of the same head.
STOCK_CLASSES = {
    "PretrainDecoderForCausalLM": "LlamaForCausalLM",
    "PretrainDecoderForSequenceClassification": "LlamaForSequenceClassification",
    "PretrainDecoderModel": "LlamaModel",
    "PretrainEncoderForMaskedLM": "ModernBertForMaskedLM",
    "PretrainEncoderForSequenceClassification": "ModernBertForSequenceClassification",
    "PretrainEncoderForTokenClassification": "ModernBertForTokenClassification",
    # The replaced-token-detection head (dense, activation, norm, then one logit per token) is ModernBERT's token
    # classification head with one label.
    "PretrainEncoderForReplacedTokenDetection": "ModernBertForTokenClassification",
    "PretrainEncoderModel": "ModernBertModel",
}


def stock_problems(config, target: str) -> list[str]:
    """What keeps a model of `config` from being exactly the stock `target`: one line per field, naming its value
    and what the stock class needs (empty: it converts exactly)."""
    if TARGETS.get(config.model_type) != target:
        fits = [name for model_type, name in TARGETS.items() if model_type == config.model_type]
        return [f"model_type={config.model_type!r} converts to {fits[0] if fits else 'no stock class'}, not {target!r}"]
    needs = {  # field: (value it must have, what the stock class has)
        "llama": {
            "norm_type": ("rmsnorm", "Llama's norms are RMSNorm"),
            "norm_bias": (False, "Llama's RMSNorm has no bias"),
            "mlp_type": ("gated", "Llama's MLP is gated (SwiGLU)"),
            "embedding_norm": (False, "Llama does not normalize its embeddings"),
        },
        "modernbert": {
            "first_layer_attn_norm": (False, "ModernBERT's first block has no attention norm (it takes the embedding "
                                             "norm's output): train with model.config.first_layer_attn_norm=false"),
            "norm_type": ("layernorm", "ModernBERT's norms are LayerNorm"),
            "mlp_type": ("gated", "ModernBERT's MLP is gated (GLU)"),
            "embedding_norm": (True, "ModernBERT normalizes its embeddings"),
            "position_embedding_type": ("rotary", "ModernBERT's positions are rotary"),
            "embedding_size": (None, "ModernBERT's embeddings are hidden_size wide (no factorized embeddings)"),
        },
    }[target]
    problems = []
    for field, (value, reason) in needs.items():
        actual = getattr(config, field, value)
        if field == "embedding_size" and actual == config.hidden_size:
            actual = None
        if actual != value:
            problems.append(f"{field}={actual!r}: {reason} ({field}={value!r})")
    return problems


# ----------------------------------------------------------------------------------------------- configs
def llama_config(config, **head):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_attention_heads, head_dim=config.hidden_size // config.num_attention_heads,
        hidden_act=config.hidden_act, max_position_embeddings=config.max_position_embeddings,
        rms_norm_eps=config.norm_eps,  # Llama's default is 1e-6, ours 1e-5
        rope_parameters={"rope_type": "default", "rope_theta": float(config.rope_theta)},
        attention_bias=config.attention_bias, mlp_bias=config.mlp_bias, attention_dropout=config.attention_dropout,
        initializer_range=config.initializer_range, tie_word_embeddings=config.tie_word_embeddings,
        # Our decoder's embedding has no padding_idx (the pad token may be the eos token, which must train), so
        # the pad id goes to generate() through the generation config, not into the embedding.
        pad_token_id=None, bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
        use_cache=True, **head,
    )


def modernbert_config(config, tokenizer=None, **head):
    from transformers import ModernBertConfig

    rope = {"rope_type": "default", "rope_theta": float(config.rope_theta)}
    ids = {}
    if tokenizer is not None:  # ModernBERT's defaults name its own vocabulary's ids
        ids = {"cls_token_id": tokenizer.cls_token_id, "sep_token_id": tokenizer.sep_token_id,
               "bos_token_id": tokenizer.cls_token_id, "eos_token_id": tokenizer.sep_token_id}
    return ModernBertConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
        hidden_activation=config.hidden_act, max_position_embeddings=config.max_position_embeddings,
        initializer_range=config.initializer_range, initializer_cutoff_factor=2.0,  # ours: +-2 std, as ModernBERT
        norm_eps=config.norm_eps, norm_bias=config.norm_bias, pad_token_id=config.pad_token_id,
        attention_bias=config.attention_bias, attention_dropout=config.attention_dropout,
        layer_types=["full_attention"] * config.num_hidden_layers,  # ours: every layer attends globally
        rope_parameters={"full_attention": dict(rope), "sliding_attention": dict(rope)},
        embedding_dropout=config.hidden_dropout, mlp_bias=config.mlp_bias, mlp_dropout=config.hidden_dropout,
        decoder_bias=config.decoder_bias, classifier_pooling=config.classifier_pooling,
        classifier_dropout=config.classifier_dropout, classifier_bias=config.mlp_bias,  # ours: head.dense's bias
        classifier_activation=config.hidden_act, sparse_prediction=False,  # dense logits, as ours in eval
        tie_word_embeddings=config.tie_word_embeddings, **ids, **head,
    )


# ----------------------------------------------------------------------------------------------- weights
def llama_weights(state: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    renames = {"attn_norm.": "input_layernorm.", "mlp_norm.": "post_attention_layernorm.", "final_norm.": "norm.",
               "attn.o_proj.": "self_attn.o_proj."}
    out = {}
    for name, tensor in state.items():
        if ".attn.qkv_proj." in name:  # (3C, C) rows [q | k | v]
            for part, piece in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0)):
                out[name.replace("attn.qkv_proj", f"self_attn.{part}")] = piece.clone()
        elif ".mlp.up_proj." in name:  # (2I, C): act(first half) * second half
            gate, up = tensor.chunk(2, dim=0)
            out[name.replace("up_proj", "gate_proj")] = gate.clone()
            out[name] = up.clone()
        else:
            for ours, theirs in renames.items():
                name = name.replace(ours, theirs)
            out[name] = tensor
    return out


def modernbert_weights(state: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    renames = {"attn.qkv_proj.": "attn.Wqkv.", "attn.o_proj.": "attn.Wo.", "mlp.up_proj.": "mlp.Wi.",
               "mlp.down_proj.": "mlp.Wo.", "detector.": "classifier."}
    out = {}
    for name, tensor in state.items():
        for ours, theirs in renames.items():
            name = name.replace(ours, theirs)
        out[name] = tensor
    return out


def to_stock(model, target: str, tokenizer=None):
    """The stock model of `target` with our model's weights (eval mode, fp32 as ours). Refuses a config with no
    stock equivalent (ValueError naming the fields)."""
    import transformers

    problems = stock_problems(model.config, target)
    if problems:
        raise ValueError(f"this {model.config.model_type} model is not exactly {target}: " + "; ".join(problems))
    class_name = STOCK_CLASSES[type(model).__name__]
    head = {"num_labels": model.config.num_labels} if "Classification" in class_name else {}
    if type(model).__name__ == "PretrainEncoderForReplacedTokenDetection":
        head = {"num_labels": 1}
    if head and getattr(model.config, "id2label", None) and len(model.config.id2label) == head["num_labels"]:
        head.update(id2label=model.config.id2label, label2id=model.config.label2id)
    if target == "llama":
        config, weights = llama_config(model.config, **head), llama_weights
    else:
        config, weights = modernbert_config(model.config, tokenizer, **head), modernbert_weights
    stock = getattr(transformers, class_name)(config)
    result = stock.load_state_dict(weights(model.state_dict(), model.config), strict=False)
    tied = set(stock.all_tied_weights_keys)
    missing = [key for key in result.missing_keys if key not in tied]
    if missing or result.unexpected_keys:
        raise RuntimeError(f"converting {type(model).__name__} to {class_name}: missing {missing[:5]}, unexpected "
                           f"{result.unexpected_keys[:5]}")
    stock.tie_weights()
    return stock.eval()


# ----------------------------------------------------------------------------------------------- parity
def parity_batch(vocab_size: int, pad_id: int, max_length: int, seed: int = 0):
    """(input_ids, attention_mask): 5 rows of varied lengths (1 token up to `max_length`), right-padded."""
    generator = torch.Generator().manual_seed(seed)
    lengths = [max_length, max(1, max_length - 3), max(1, max_length // 2), 2, 1]
    ids = torch.full((len(lengths), max_length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(lengths), max_length), dtype=torch.long)
    for row, length in enumerate(lengths):
        ids[row, :length] = torch.randint(0, vocab_size, (length,), generator=generator)
        mask[row, :length] = 1
    return ids, mask


def logits_of(model, ids, mask) -> torch.Tensor:
    with torch.no_grad():
        output = model(input_ids=ids, attention_mask=mask)
    logits = output.logits if hasattr(output, "logits") else output.last_hidden_state
    return logits.float()


def check_parity(ours, stock, pad_id: int, max_length: int = 24) -> dict:
    """Max abs difference of the two models' fp32 logits on the real tokens of a padded batch; for a causal LM also
    whether greedy generate() gives the same tokens. Raises when they differ by more than PARITY_TOLERANCE."""
    ours, stock = ours.eval().float(), stock.eval().float()
    max_length = min(max_length, ours.config.max_position_embeddings)
    ids, mask = parity_batch(ours.config.vocab_size, pad_id if pad_id is not None else 0, max_length)
    ours_logits = logits_of(ours, ids, mask)
    # A one-logit token head: ours (B, L), the stock class (B, L, 1).
    difference = (ours_logits - logits_of(stock, ids, mask).reshape(ours_logits.shape)).abs()
    if difference.shape[:2] == ids.shape:  # per token: the real tokens (a padding position's output is arbitrary)
        difference = difference[mask.bool()]
    difference = difference.max().item()
    report = {"max_abs_logit_difference": difference, "rows": int(ids.shape[0]), "max_length": max_length}
    if difference > PARITY_TOLERANCE:
        raise RuntimeError(f"the converted {type(stock).__name__} differs from {type(ours).__name__} by "
                           f"{difference:.3g} in fp32 logits (allowed: {PARITY_TOLERANCE}); nothing was exported.")
    if hasattr(stock, "generate") and stock.can_generate():
        report["greedy_tokens_equal"] = same_greedy_tokens(ours, stock, pad_id)
        if not report["greedy_tokens_equal"]:
            raise RuntimeError(f"the converted {type(stock).__name__} generates other tokens than "
                               f"{type(ours).__name__} (greedy); nothing was exported.")
    return report


def same_greedy_tokens(ours, stock, pad_id, new_tokens: int = 8) -> bool:
    """Greedy continuations of a left-padded batch of prompts of varied lengths, compared token for token."""
    ids, mask = parity_batch(ours.config.vocab_size, pad_id if pad_id is not None else 0, 6, seed=1)
    lengths = mask.sum(dim=1)
    left = torch.full_like(ids, pad_id if pad_id is not None else 0)
    left_mask = torch.zeros_like(mask)
    for row, length in enumerate(lengths.tolist()):
        left[row, ids.shape[1] - length:] = ids[row, :length]
        left_mask[row, ids.shape[1] - length:] = 1
    settings = dict(max_new_tokens=new_tokens, do_sample=False, pad_token_id=pad_id if pad_id is not None else 0)
    with torch.no_grad():
        return torch.equal(ours.generate(input_ids=left, attention_mask=left_mask, **settings),
                           stock.generate(input_ids=left, attention_mask=left_mask, **settings))


__all__ = ["TARGETS", "STOCK_CLASSES", "PARITY_TOLERANCE", "stock_problems", "to_stock", "check_parity"]
