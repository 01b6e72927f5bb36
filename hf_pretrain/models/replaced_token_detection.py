"""Replaced-token detection pretraining (ELECTRA, Clark et al. 2020): a generator and a discriminator trained as one.

A small masked LM of the encoder family (the generator) predicts the masked tokens; its samples fill the masked
positions; the discriminator (an encoder with a per-token binary head) predicts, at every position, whether the
token it sees was replaced. The detection task has a label at every position, where the masked LM learns from
the ~15% it masks, which is why ELECTRA learns more per FLOP, most of all at small sizes.

The two share the token embedding matrix (ELECTRA's choice: the generator's softmax trains the rows of every
token it is asked about, the discriminator alone would see only the rows of tokens in its input). The generator
is narrower than the discriminator, so it reads the shared rows through a projection (`embedding_size`).

`ReplacedTokenDetectionPretrainer` exists for training and checkpoints only; the folders a run hands on are its two
parts, each an ordinary encoder-family model: the discriminator (`PretrainEncoderForReplacedTokenDetection`, the
one to fine-tune) and the generator (`PretrainEncoderForMaskedLM`, a fill-mask model). `from_parts` pairs two
transformers models instead (a stock discriminator with a one-logit token head, e.g. ElectraForPreTraining or
ModernBertForTokenClassification, and a stock masked LM): the embeddings are shared where their shapes allow.

Shapes: B batch, L length, V vocabulary, N masked positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_pretrain_encoder import PretrainEncoderConfig
from .modeling_pretrain_encoder import PretrainEncoderForMaskedLM, PretrainEncoderForReplacedTokenDetection

SHARED_EMBEDDINGS = "discriminator.model.embeddings.tok_embeddings.weight"


def generator_size(hidden: int, heads: int, intermediate: int, width: float) -> tuple[int, int, int]:
    """(hidden size, heads, MLP width) of a generator `width` times as wide as a discriminator of (hidden, heads,
    intermediate): heads and hidden size scale together, the head dimension is kept; the MLP keeps the
    discriminator's width ratio, rounded to a multiple of 8 for aligned GEMMs."""
    head_dim = hidden // heads
    generator_heads = max(1, round(heads * width))
    generator_hidden = generator_heads * head_dim
    return generator_hidden, generator_heads, max(8, round(intermediate * generator_hidden / hidden / 8) * 8)


def generator_config(discriminator: PretrainEncoderConfig, width: float, layers: int | None) -> PretrainEncoderConfig:
    """The generator's config: the discriminator's, `width` times as wide (heads, hidden size and MLP width scale
    together; the head dimension is kept, so rotary positions and attention kernels see the same shapes) and reading
    the discriminator's token embeddings through a projection."""
    hidden, heads, intermediate = generator_size(
        discriminator.hidden_size, discriminator.num_attention_heads, discriminator.intermediate_size, width)
    settings = discriminator.to_dict()
    for key in ("architectures", "auto_map", "transformers_version", "model_type"):
        settings.pop(key, None)
    settings.update(
        hidden_size=hidden,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        num_hidden_layers=layers or discriminator.num_hidden_layers,
        embedding_size=discriminator.embedding_size or discriminator.hidden_size,
    )
    return PretrainEncoderConfig(**settings)


@dataclass
class ReplacedTokenDetectionSums(ModelOutput):
    """Sums over one batch (the caller divides by the step's counts, so accumulation and data parallelism give the
    gradient of one big batch). `generator_loss_sum`: cross-entropy summed over the N masked positions;
    `detection_loss_sum`: binary cross-entropy summed over the scored positions (every non-padding token). The
    counts and correct predictions are for metrics."""

    generator_loss_sum: torch.FloatTensor | None = None
    detection_loss_sum: torch.FloatTensor | None = None
    masked: torch.LongTensor | None = None
    scored: torch.LongTensor | None = None
    replaced: torch.LongTensor | None = None
    generator_correct: torch.LongTensor | None = None
    detection_correct: torch.LongTensor | None = None


class ReplacedTokenDetectionPretrainer(PreTrainedModel):
    """Generator + discriminator with one token embedding matrix; `forward` runs one ELECTRA step's model part."""

    config_class = PretrainEncoderConfig
    config: PretrainEncoderConfig  # the discriminator's
    supports_gradient_checkpointing = True
    _no_split_modules = ["EncoderLayer"]
    # The attention implementation is the parts' own; the wrapper only passes the config on to them.
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    _tied_weights_keys = {"generator.model.embeddings.tok_embeddings.weight": SHARED_EMBEDDINGS}

    def __init__(self, config: PretrainEncoderConfig, generator: PretrainEncoderConfig,
                 sampling_temperature: float = 1.0, parts: tuple | None = None):
        """`parts`: (generator, discriminator) models built by the caller (see `from_parts`); else both of our
        family, from `generator` and `config`."""
        super().__init__(config)
        if parts is None:
            self.discriminator = PretrainEncoderForReplacedTokenDetection(config)
            self.generator = PretrainEncoderForMaskedLM(generator)
            self.generator.model.embeddings.tok_embeddings = self.discriminator.model.embeddings.tok_embeddings
            if generator.tie_word_embeddings:  # the generator's output rows are the shared input rows too
                self.generator.decoder.weight = self.discriminator.model.embeddings.tok_embeddings.weight
        else:
            self.generator, self.discriminator = parts
            self._tied_weights_keys = {}  # from_parts declares the shared rows once they are shared
        self.sampling_temperature = sampling_temperature
        self.post_init()

    @classmethod
    def from_parts(cls, generator, discriminator, sampling_temperature: float = 1.0):
        """Two transformers models as one ELECTRA pair: `generator` a masked LM, `discriminator` a model whose logits
        are one per token ((B, L) or (B, L, 1)). The token embedding matrix is shared when both have the same shape
        (ELECTRA's generator reads the discriminator's rows through its own `embedding_size`); its names in the
        generator are declared tied to the discriminator's, so checkpoints store it once."""
        pair = cls(discriminator.config, generator.config, sampling_temperature, parts=(generator, discriminator))
        shared = discriminator.get_input_embeddings()
        if generator.get_input_embeddings().weight.shape == shared.weight.shape:
            generator.set_input_embeddings(shared)
            generator.tie_weights()  # a tied output layer follows the shared rows
            names = [name for name, p in pair.named_parameters(remove_duplicate=False) if p is shared.weight]
            source = next(name for name in names if name.startswith("discriminator."))
            pair._tied_weights_keys = {name: source for name in names if name != source}
            pair.all_tied_weights_keys.update(pair._tied_weights_keys)
        return pair

    def _init_weights(self, module) -> None:
        """Both parts initialized themselves when built (each with its own depth-scaled std)."""

    def get_input_embeddings(self):
        return self.discriminator.get_input_embeddings()

    def forward(
        self,
        input_ids: torch.LongTensor,
        labels: torch.LongTensor,
        sampling_uniforms: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        **kwargs,
    ) -> ReplacedTokenDetectionSums:
        """
        Args:
            input_ids (B, L): the masked-LM input (masked positions hold [MASK], a random token or the original).
            labels (B, L): the original token at masked positions, -100 elsewhere.
            sampling_uniforms (B, L): a draw in [0, 1) per position; the masked positions' draws pick the samples.
        """
        masked = labels != -100  # (B, L)
        targets = labels[masked]  # (N,)
        generator_logits = self.masked_logits(input_ids, masked, attention_mask, position_ids)  # (N, V)
        generator_loss_sum = F.cross_entropy(generator_logits.float(), targets, reduction="sum")

        # Replacements: one sample per masked position, by the inverse CDF of the tempered softmax at that
        # position's draw. No gradient flows through sampling (the generator learns from its MLM loss alone).
        with torch.no_grad():
            probabilities = torch.softmax(generator_logits.float() / self.sampling_temperature, dim=-1)
            cumulative = probabilities.cumsum(dim=-1)  # (N, V)
            draws = sampling_uniforms[masked].float().unsqueeze(-1) * cumulative[:, -1:]  # (N, 1)
            samples = torch.searchsorted(cumulative, draws).squeeze(-1).clamp(max=cumulative.shape[-1] - 1)
            corrupted = torch.where(masked, labels, input_ids)  # the original tokens
            corrupted[masked] = samples
            replaced = torch.zeros_like(masked)
            replaced[masked] = samples != targets  # a sample equal to the original counts as original
            scored = attention_mask.bool() if attention_mask is not None else torch.ones_like(masked)

        # Discriminator: was each token replaced? Scored at every non-padding position.
        positions = {} if position_ids is None else {"position_ids": position_ids}
        detection_logits = self.discriminator(corrupted, attention_mask=attention_mask, **positions).logits
        detection_logits = detection_logits.reshape(masked.shape)  # (B, L): a one-logit head's (B, L, 1) too
        detection_loss_sum = F.binary_cross_entropy_with_logits(
            detection_logits[scored].float(), replaced[scored].float(), reduction="sum"
        )
        with torch.no_grad():
            return ReplacedTokenDetectionSums(
                generator_loss_sum=generator_loss_sum,
                detection_loss_sum=detection_loss_sum,
                masked=masked.sum(),
                scored=scored.sum(),
                replaced=replaced.sum(),
                generator_correct=(generator_logits.argmax(-1) == targets).sum(),
                detection_correct=((detection_logits > 0) == replaced)[scored].sum(),
            )

    def masked_logits(self, input_ids, masked, attention_mask, position_ids) -> torch.Tensor:
        """(N, V) generator logits of the masked positions: our family's head runs on those rows only (the sparse
        masked LM); a transformers masked LM predicts every position and the masked rows are taken."""
        if hasattr(self.generator, "selected_logits"):
            return self.generator.selected_logits(input_ids, masked, attention_mask, position_ids)
        positions = {} if position_ids is None else {"position_ids": position_ids}
        return self.generator(input_ids, attention_mask=attention_mask, **positions).logits[masked]

    def training_flops(self, tokens: int, masked: int, sequence_length: int) -> float:
        """Useful FLOPs of one step on `tokens` positions of which `masked` are masked: the generator's sparse
        masked LM plus the discriminator on every position (sampling's softmax and cumulative sum are not counted)."""
        return self.generator.training_flops(tokens, masked, sequence_length) + self.discriminator.training_flops(
            tokens, sequence_length
        )


__all__ = ["ReplacedTokenDetectionPretrainer", "ReplacedTokenDetectionSums", "generator_config", "generator_size"]
