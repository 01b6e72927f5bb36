"""The hf_pretrain masked-LM encoder family: a modern pre-norm transformer encoder and its heads.

Exported as is with saved models (imports only torch, transformers and its sibling files), so a saved folder loads
with `trust_remote_code=True` where hf_pretrain is not installed.

Shapes in comments: B batch, L sequence length, C hidden size, V vocabulary, N masked tokens, K labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import (
    BaseModelOutput,
    MaskedLMOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.utils import ModelOutput

from .configuration_pretrain_encoder import PretrainEncoderConfig
from .layers import (
    EncoderLayer,
    RotaryEmbedding,
    attention_flops,
    build_encoder_attention,
    document_ids_from_positions,
    init_block_projections,
    linear_weight_count,
    make_norm,
    scaled_init_std,
    truncated_normal_,
)


class PretrainEncoderPreTrainedModel(PreTrainedModel):
    config_class = PretrainEncoderConfig
    config: PretrainEncoderConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["EncoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Truncated normal (+-2 std); projections into the residual stream are scaled down with depth."""
        super()._init_weights(module)
        std = self.config.initializer_range
        residual_std = scaled_init_std(std, self.config.num_hidden_layers)

        normal = truncated_normal_
        if init_block_projections(module, std, residual_std):  # attention and MLP projections
            pass
        elif isinstance(module, PretrainEncoderEmbeddings):
            normal(module.tok_embeddings.weight, std)
            if module.project is not None:
                normal(module.project.weight, std)
            if module.position_embeddings is not None:
                normal(module.position_embeddings.weight, std)
        elif isinstance(module, PretrainEncoderPredictionHead):
            normal(module.dense.weight, std)
        elif isinstance(module, (PretrainEncoderForSequenceClassification, PretrainEncoderForTokenClassification)):
            normal(module.classifier.weight, std)
        elif isinstance(module, PretrainEncoderForReplacedTokenDetection):
            normal(module.detector.weight, std)
        elif isinstance(module, RotaryEmbedding):
            init.copy_(module.inv_freq, module.compute_inv_freq())
        for name in ("qkv_proj", "o_proj", "up_proj", "down_proj", "dense", "classifier", "detector"):
            linear = getattr(module, name, None)
            if isinstance(linear, nn.Linear) and linear.bias is not None:
                init.zeros_(linear.bias)


class PretrainEncoderEmbeddings(nn.Module):
    """Token embeddings (projected to the hidden size when `embedding_size` differs), + learned absolute positions
    when configured, then norm and dropout."""

    def __init__(self, config: PretrainEncoderConfig):
        super().__init__()
        width = getattr(config, "embedding_size", None) or config.hidden_size  # the DAE config has none
        self.tok_embeddings = nn.Embedding(config.vocab_size, width, padding_idx=config.pad_token_id)
        self.project = nn.Linear(width, config.hidden_size, bias=False) if width != config.hidden_size else None
        self.position_embeddings = (
            nn.Embedding(config.max_position_embeddings, config.hidden_size)
            if config.position_embedding_type == "absolute"
            else None
        )
        self.norm = (
            make_norm(config.norm_type, config.hidden_size, config.norm_eps, config.norm_bias)
            if config.embedding_norm
            else nn.Identity()
        )
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        position_ids: torch.Tensor,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        embeddings = self.tok_embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        if self.project is not None:
            embeddings = self.project(embeddings)  # (B, L, E) -> (B, L, C)
        if self.position_embeddings is not None:
            embeddings = embeddings + self.position_embeddings(position_ids)
        return self.dropout(self.norm(embeddings))


class PretrainEncoderModel(PretrainEncoderPreTrainedModel):
    """The bare encoder: embeddings -> N pre-norm blocks -> final norm. Returns the last hidden states (B, L, C)."""

    def __init__(self, config: PretrainEncoderConfig):
        super().__init__(config)
        self.embeddings = PretrainEncoderEmbeddings(config)
        head_dim = config.hidden_size // config.num_attention_heads
        self.rotary = (
            RotaryEmbedding(head_dim, config.rope_theta) if config.position_embedding_type == "rotary" else None
        )
        self.layers = nn.ModuleList(EncoderLayer(config, index) for index in range(config.num_hidden_layers))
        self.final_norm = make_norm(config.norm_type, config.hidden_size, config.norm_eps, config.norm_bias)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.tok_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.tok_embeddings = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        output_positions: torch.Tensor | None = None,
        **kwargs,
    ) -> BaseModelOutput | tuple:
        """
        Args:
            input_ids (B, L): token ids. Or `inputs_embeds` (B, L, C).
            attention_mask (B, L): 1 for real tokens, 0 for padding. None means no padding.
            position_ids (B, L): positions; when they restart at 0 inside a row (packed documents) and
                `config.attention_within_documents` is set, attention stays inside each document.
            output_positions (B, L) bool: only these positions' final states are wanted (the masked tokens of
                sparse MLM). The last block then runs its output projection and MLP on those rows only, and
                `last_hidden_state` is (N, C) in row-major order. Not combinable with hidden states/attentions.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        output_attentions = bool(output_attentions if output_attentions is not None else self.config.output_attentions)
        output_hidden_states = bool(
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict

        batch, length = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
        if length > self.config.max_position_embeddings and self.embeddings.position_embeddings is not None:
            raise ValueError(
                f"sequence length {length} exceeds max_position_embeddings={self.config.max_position_embeddings}."
            )
        document_ids = None
        if position_ids is None:
            device = (input_ids if input_ids is not None else inputs_embeds).device
            position_ids = torch.arange(length, device=device).expand(batch, length)
        elif self.config.attention_within_documents:
            document_ids = document_ids_from_positions(position_ids)

        hidden_states = self.embeddings(input_ids, position_ids, inputs_embeds)
        mask, attention_kwargs = build_encoder_attention(self.config, hidden_states, attention_mask, document_ids)
        rotary = self.rotary(position_ids, hidden_states.dtype) if self.rotary is not None else None

        if output_positions is not None and (output_hidden_states or output_attentions):
            raise ValueError("output_positions cannot be combined with output_hidden_states or output_attentions.")
        all_hidden_states = [] if output_hidden_states else None
        all_attentions = [] if output_attentions else None
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            if output_hidden_states:
                all_hidden_states.append(hidden_states)
            # The last block's outputs are only needed where predictions are made: skipping the rest saves its
            # output projection and MLP on ~85% of the tokens at 15% masking (a ~15% cheaper step at 4 layers).
            select = output_positions if index == last else None
            hidden_states, weights = layer(
                hidden_states, rotary, mask, output_attentions=output_attentions, select=select, **attention_kwargs
            )
            if output_attentions:
                all_attentions.append(weights)
        hidden_states = self.final_norm(hidden_states)
        if output_hidden_states:
            all_hidden_states.append(hidden_states)

        output = BaseModelOutput(
            last_hidden_state=hidden_states,
            hidden_states=tuple(all_hidden_states) if output_hidden_states else None,
            attentions=tuple(all_attentions) if output_attentions else None,
        )
        return output if return_dict else output.to_tuple()


class PretrainEncoderPredictionHead(nn.Module):
    """dense -> activation -> norm, applied before the vocabulary or label projection (as BERT/ModernBERT).
    `output_size`: the width it maps to (the embedding width before a tied vocabulary projection); default C."""

    def __init__(self, config: PretrainEncoderConfig, output_size: int | None = None):
        super().__init__()
        output_size = output_size or config.hidden_size
        self.dense = nn.Linear(config.hidden_size, output_size, bias=config.mlp_bias)
        self.act = ACT2FN[config.hidden_act]
        self.norm = make_norm(config.norm_type, output_size, config.norm_eps, config.norm_bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(self.dense(hidden_states)))


def zero_loss_like(logits: torch.Tensor) -> torch.Tensor:
    """A loss of exactly 0 that still belongs to the graph, for a batch with nothing to predict (mean of an
    empty cross-entropy would be NaN)."""
    return logits.float().sum() * 0.0


class PretrainEncoderForMaskedLM(PretrainEncoderPreTrainedModel):
    """Encoder + masked-LM head. The decoder shares its weight with the input embeddings.

    In training mode with labels and `config.sparse_prediction` (default), the head runs only on masked positions
    (label != -100): at 15% masking that skips ~85% of the vocabulary projection, the largest matmul of a small
    model. `logits` is then (N, V) in the order of `labels[labels != -100]`. Training steps read only the loss;
    in eval mode, where callers read logits (run_mlm.py's `compute_metrics`, a fill-mask pipeline), `logits` is
    (B, L, V) as in every transformers masked LM, with the same loss.
    """

    _tied_weights_keys = {"decoder.weight": "model.embeddings.tok_embeddings.weight"}

    def __init__(self, config: PretrainEncoderConfig):
        super().__init__(config)
        self.model = PretrainEncoderModel(config)
        width = getattr(config, "embedding_size", None) or config.hidden_size  # the DAE config has none
        self.head = PretrainEncoderPredictionHead(config, output_size=width)
        self.decoder = nn.Linear(width, config.vocab_size, bias=config.decoder_bias)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.decoder = new_embeddings

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> MaskedLMOutput | tuple:
        """`labels` (B, L): target ids at masked positions, -100 elsewhere. Extra kwargs (Trainer's
        `num_items_in_batch`) go to the loss, so gradient accumulation averages over all masked tokens."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        sparse = labels is not None and self.config.sparse_prediction and self.training
        selected = labels != -100 if sparse else None  # (B, L)
        # Without hidden states or attentions to return, the encoder computes its last block only where needed.
        skip_unused = sparse and not (output_hidden_states or output_attentions or self.config.output_hidden_states
                                      or self.config.output_attentions)
        hidden_states = attentions = None
        if skip_unused:
            logits = self.selected_logits(input_ids, selected, attention_mask, position_ids, inputs_embeds)  # (N, V)
        else:
            outputs = self.model(input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                 inputs_embeds=inputs_embeds, output_attentions=output_attentions,
                                 output_hidden_states=output_hidden_states, return_dict=True)
            hidden_states, attentions = outputs.hidden_states, outputs.attentions
            last = outputs.last_hidden_state[selected] if sparse else outputs.last_hidden_state  # (N, C) / (B, L, C)
            logits = self.decoder(self.head(last))  # (N, V) sparse, (B, L, V) dense
        if sparse:
            labels = labels[selected]  # (N,)

        loss = None
        if labels is not None:
            if bool((labels != -100).any()):
                loss = self.loss_function(logits, labels, vocab_size=self.config.vocab_size, **kwargs)
            else:
                loss = zero_loss_like(logits)

        output = MaskedLMOutput(loss=loss, logits=logits, hidden_states=hidden_states, attentions=attentions)
        return output if return_dict else output.to_tuple()

    def selected_logits(self, input_ids: torch.LongTensor | None, selected: torch.Tensor,
                        attention_mask: torch.Tensor | None = None, position_ids: torch.LongTensor | None = None,
                        inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """(N, V) logits of the `selected` (B, L) positions, in the order of their row-major positions: the last
        block's output projection and MLP, the head and the vocabulary projection run on those rows only (the
        sparse masked LM, and replaced-token detection's generator)."""
        hidden = self.model(
            input_ids, attention_mask=attention_mask, position_ids=position_ids, inputs_embeds=inputs_embeds,
            output_positions=selected,
        ).last_hidden_state  # (N, C)
        return self.decoder(self.head(hidden))

    def training_flops(self, tokens: int, predicted: int, sequence_length: int) -> float:
        """Useful FLOPs of training on `tokens` positions (packed rows of `sequence_length`) of which `predicted`
        carry a label: the body's linear layers on every token, attention over the row (a block-diagonal mask's
        skipped pairs counted as done), the head on the predicted rows only when sparse; with sparse prediction
        the last block's output projection and MLP also run on the predicted rows only."""
        head_modules = (self.head, self.decoder)
        body = linear_weight_count(self, exclude=head_modules)
        head = linear_weight_count(self.head) + linear_weight_count(self.decoder)
        config = self.config
        sparse = config.sparse_prediction
        flops = 6 * body * tokens + 6 * head * (predicted if sparse else tokens)
        flops += attention_flops(config.num_hidden_layers, sequence_length, config.hidden_size, tokens)
        if sparse:
            last = self.model.layers[-1]
            flops -= 6 * (linear_weight_count(last.mlp) + last.attn.o_proj.weight.numel()) * (tokens - predicted)
        return float(flops)


def pool_sequence(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """(B, L, C) -> (B, C): the first token ("cls") or the mean over non-padding tokens ("mean")."""
    if pooling == "cls":
        return hidden_states[:, 0]
    if attention_mask is None:
        return hidden_states.mean(dim=1)
    weights = attention_mask.to(hidden_states.dtype).unsqueeze(-1)  # (B, L, 1)
    return (hidden_states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class PretrainEncoderForSequenceClassification(PretrainEncoderPreTrainedModel):
    """Encoder + pooled classification head. Single-label, multi-label and regression follow
    `config.problem_type` exactly as transformers' own models (inferred from `num_labels` and the label dtype
    when unset)."""

    # The classification losses are per-example means (MSE/BCE ignore Trainer's `num_items_in_batch`), so let
    # Trainer divide by the accumulation steps itself.
    accepts_loss_kwargs = False

    def __init__(self, config: PretrainEncoderConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = PretrainEncoderModel(config)
        self.head = PretrainEncoderPredictionHead(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput | tuple:
        """`labels`: (B,) class ids, (B, K) multi-hot floats, or (B,)/(B, K) regression targets."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.model(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        pooled = pool_sequence(outputs.last_hidden_state, attention_mask, self.config.classifier_pooling)
        logits = self.classifier(self.dropout(self.head(pooled)))  # (B, K)
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        output = SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return output if return_dict else output.to_tuple()


class PretrainEncoderForTokenClassification(PretrainEncoderPreTrainedModel):
    """Encoder + per-token classification head (NER and other tagging)."""

    def __init__(self, config: PretrainEncoderConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = PretrainEncoderModel(config)
        self.head = PretrainEncoderPredictionHead(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> TokenClassifierOutput | tuple:
        """`labels` (B, L): tag ids, -100 where no tag applies. Extra kwargs go to the loss (token-weighted
        averaging under gradient accumulation)."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.model(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.classifier(self.dropout(self.head(outputs.last_hidden_state)))  # (B, L, K)
        loss = None
        if labels is not None:
            if bool((labels != -100).any()):
                loss = self.loss_function(logits, labels, self.config, **kwargs)
            else:
                loss = zero_loss_like(logits)
        output = TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return output if return_dict else output.to_tuple()


@dataclass
class ReplacedTokenDetectionOutput(ModelOutput):
    """`logits` (B, L): the score that each token was replaced (> 0: replaced); `loss`: binary cross-entropy over
    the positions with a label."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class PretrainEncoderForReplacedTokenDetection(PretrainEncoderPreTrainedModel):
    """Encoder + replaced-token-detection head (ELECTRA's discriminator, Clark et al. 2020): at every position, was
    this token replaced? Pretrained by `objective: rtd`; its encoder (`model.*`) and head transform (`head.*`)
    load into every other head of the family, as a masked LM's do."""

    def __init__(self, config: PretrainEncoderConfig):
        super().__init__(config)
        self.model = PretrainEncoderModel(config)
        self.head = PretrainEncoderPredictionHead(config)
        self.detector = nn.Linear(config.hidden_size, 1)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        num_items_in_batch: torch.Tensor | None = None,
        **kwargs,
    ) -> ReplacedTokenDetectionOutput | tuple:
        """`labels` (B, L): 1 where the token was replaced, 0 where it is the original, -100 where nothing is
        scored. The loss is the mean over scored positions, or the sum over `num_items_in_batch` when given."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.model(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.detector(self.head(outputs.last_hidden_state)).squeeze(-1)  # (B, L)
        loss = None
        if labels is not None:
            scored = labels != -100
            summed = nn.functional.binary_cross_entropy_with_logits(
                logits[scored].float(), labels[scored].float(), reduction="sum"
            )
            loss = summed / (num_items_in_batch if num_items_in_batch is not None else scored.sum().clamp(min=1))
        output = ReplacedTokenDetectionOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return output if return_dict else output.to_tuple()

    def training_flops(self, tokens: int, sequence_length: int) -> float:
        """Useful FLOPs of training on `tokens` positions (packed rows of `sequence_length`): every linear layer,
        the head included, on every token (every position is scored), and attention over the row."""
        config = self.config
        attention = attention_flops(config.num_hidden_layers, sequence_length, config.hidden_size, tokens)
        return float(6 * linear_weight_count(self) * tokens + attention)


# Saving any of these copies this file, its sibling imports and the full auto_map (trust_remote_code export).
PretrainEncoderModel.register_for_auto_class("AutoModel")
PretrainEncoderForMaskedLM.register_for_auto_class("AutoModelForMaskedLM")
PretrainEncoderForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
PretrainEncoderForTokenClassification.register_for_auto_class("AutoModelForTokenClassification")
PretrainEncoderForReplacedTokenDetection.register_for_auto_class("AutoModelForPreTraining")

__all__ = [
    "PretrainEncoderPreTrainedModel",
    "PretrainEncoderModel",
    "PretrainEncoderForMaskedLM",
    "PretrainEncoderForSequenceClassification",
    "PretrainEncoderForTokenClassification",
    "PretrainEncoderForReplacedTokenDetection",
    "ReplacedTokenDetectionOutput",
]
