"""The denoising-autoencoder family: shapes, loss, bottleneck, generation with and without cache, save/load,
remote-code loading without hf_pretrain, encoder export, the continuous (feature) autoencoder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch.nn import functional as F
from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

from hf_pretrain import (
    PretrainDAEConfig,
    PretrainDAEFeatureConfig,
    PretrainDAEForDenoising,
    PretrainDAEForFeatureReconstruction,
    PretrainDAEModel,
    PretrainEncoderConfig,
    PretrainEncoderModel,
)
from hf_pretrain.models.decoder_layers import causal_self_attention_mask
from hf_pretrain.models.modeling_pretrain_dae import CACHE_FIELD, shift_tokens_right

VOCAB = 64
PAD, BOS, EOS = 0, 2, 3

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_config(**overrides) -> PretrainDAEConfig:
    settings = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        decoder_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=64,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
        decoder_start_token_id=BOS,
    )
    settings.update(overrides)
    return PretrainDAEConfig(**settings)


def make_model(cls=PretrainDAEForDenoising, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return cls(tiny_config(**overrides)).eval()


def random_ids(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(5, VOCAB, (batch, length), generator=generator)


def padded_batch(seed: int = 1):
    """Corrupted inputs (3, 9) with padding in row 1, clean labels (3, 7) with -100 padding in row 2."""
    ids = random_ids(3, 9, seed)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    ids[1, 6:] = PAD
    labels = random_ids(3, 7, seed + 1)
    labels[2, 5:] = -100
    return ids, mask, labels


def lively_model(**overrides):
    """A random model whose greedy outputs vary from step to step (the tied head of a small-init model just
    repeats one token, which would make cached == uncached comparisons vacuous)."""
    return make_model(initializer_range=0.3, **overrides)


# --------------------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("bottleneck", ["pooled", "none"])
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_shapes_of_every_output(bottleneck, pooling):
    model = make_model(bottleneck=bottleneck, pooling=pooling)
    ids, mask, labels = padded_batch()
    out = model(ids, attention_mask=mask, labels=labels, output_attentions=True, output_hidden_states=True)
    assert out.logits.shape == (3, 7, VOCAB) and out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert out.pooler_output.shape == (3, 32)
    assert out.encoder_last_hidden_state.shape == (3, 9, 32)
    assert len(out.decoder_hidden_states) == 3 and len(out.encoder_hidden_states) == 3
    memory_length = 1 if bottleneck == "pooled" else 9
    assert [a.shape for a in out.cross_attentions] == [(3, 4, 7, memory_length)] * 2
    assert [a.shape for a in out.decoder_attentions] == [(3, 4, 7, 7)] * 2
    torch.testing.assert_close(out.decoder_attentions[0].triu(1), torch.zeros(3, 4, 7, 7))  # causal

    base = make_model(PretrainDAEModel, bottleneck=bottleneck, pooling=pooling)
    sentence = base(ids, attention_mask=mask)  # no decoder inputs: encoder + pooling only
    assert sentence.pooler_output.shape == (3, 32) and sentence.last_hidden_state is None
    assert base(ids, attention_mask=mask, decoder_input_ids=ids[:, :4]).last_hidden_state.shape == (3, 4, 32)
    assert isinstance(model(ids, labels=labels, return_dict=False), tuple)


def test_embeddings_are_one_matrix_and_resize_keeps_it():
    model = make_model()
    shared = model.get_input_embeddings()
    assert shared is model.model.encoder.embeddings.tok_embeddings
    assert model.lm_head.weight is shared.weight
    # The decoder has no embedding of its own: its inputs go through the encoder's matrix.
    assert not any("embed" in name and "norm" not in name for name, _ in model.model.decoder.named_parameters())
    model.resize_token_embeddings(VOCAB + 8)
    assert model.lm_head.weight is model.get_input_embeddings().weight
    assert model(random_ids(1, 5), labels=random_ids(1, 4)).logits.shape == (1, 4, VOCAB + 8)


# --------------------------------------------------------------------------------------------------- loss
def test_loss_is_cross_entropy_of_unshifted_logits_and_labels():
    model = make_model()
    ids, mask, labels = padded_batch()
    out = model(ids, attention_mask=mask, labels=labels)
    expected = F.cross_entropy(out.logits.reshape(-1, VOCAB), labels.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)

    # The decoder inputs the model built are the labels shifted right once, behind decoder_start_token_id.
    decoder_input_ids = torch.cat((torch.full((3, 1), BOS), labels[:, :-1]), dim=1).masked_fill(
        torch.cat((torch.zeros(3, 1, dtype=torch.bool), labels[:, :-1] == -100), dim=1), PAD
    )
    assert torch.equal(shift_tokens_right(labels, PAD, BOS), decoder_input_ids)
    explicit = model(ids, attention_mask=mask, decoder_input_ids=decoder_input_ids)
    torch.testing.assert_close(explicit.logits, out.logits)


def test_num_items_in_batch_weighs_every_target_token_equally():
    """Trainer passes the target count of all accumulated micro-batches; halves must add up to the full batch."""
    model = make_model()
    ids, mask, labels = padded_batch()
    full = model(ids, attention_mask=mask, labels=labels).loss
    total = (labels != -100).sum()
    halves = sum(
        model(ids[rows], attention_mask=mask[rows], labels=labels[rows], num_items_in_batch=total).loss
        for rows in (slice(0, 1), slice(1, 3))
    )
    torch.testing.assert_close(halves, full)
    assert model.loss_type is None  # not mapped to transformers' shifting causal loss


def test_gradient_accumulation_under_trainer_matches_a_full_batch(tmp_path):
    """Trainer passes num_items_in_batch (all targets of the accumulated micro-batches) and does not divide the
    loss itself: 2 x 4 examples must give the loss and gradient of one batch of 8 with uneven target counts."""
    from torch.utils.data import Dataset
    from transformers import Trainer, TrainingArguments

    ids = random_ids(8, 9, seed=7)
    labels = random_ids(8, 7, seed=8)
    for row in range(8):
        labels[row, 1 + row % 6 :] = -100  # 1 to 6 targets per example

    class Examples(Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, index):
            return {"input_ids": ids[index], "labels": labels[index]}

    def first_step(batch_size, accumulation):
        args = TrainingArguments(
            output_dir=str(tmp_path / f"ga{accumulation}"),
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
            max_steps=1,
            learning_rate=0.0,
            max_grad_norm=1e9,
            logging_steps=1,
            report_to="none",
            save_strategy="no",
            use_cpu=True,
            seed=0,
        )
        trainer = Trainer(model=make_model().train(), args=args, train_dataset=Examples())
        trainer.train()
        logged = [entry for entry in trainer.state.log_history if "grad_norm" in entry][0]
        return logged["loss"], logged["grad_norm"]

    full, accumulated = first_step(8, 1), first_step(4, 2)
    assert full[0] == pytest.approx(accumulated[0], rel=1e-5)
    assert full[1] == pytest.approx(accumulated[1], rel=1e-4)


def test_labels_without_decoder_start_token_fail_clearly():
    model = make_model(decoder_start_token_id=None)
    ids, mask, labels = padded_batch()
    with pytest.raises(ValueError, match="decoder_start_token_id=None"):
        model(ids, labels=labels)


def test_batch_without_targets_gives_zero_loss():
    model = make_model().train()
    ids, _, labels = padded_batch()
    loss = model(ids, labels=torch.full_like(labels, -100)).loss
    assert loss.item() == 0.0
    loss.backward()


# --------------------------------------------------------------------------------------------------- bottleneck
def _logits_with_encoder_states(model, states, mask, decoder_input_ids):
    from transformers.modeling_outputs import BaseModelOutput

    return model(
        attention_mask=mask,
        encoder_outputs=BaseModelOutput(last_hidden_state=states),
        decoder_input_ids=decoder_input_ids,
    ).logits


def test_pooled_bottleneck_lets_the_decoder_see_only_the_pooled_vector():
    ids, mask, labels = padded_batch()
    decoder_input_ids = shift_tokens_right(labels, PAD, BOS)
    noise = torch.randn(3, 9, 32, generator=torch.Generator().manual_seed(3))

    for bottleneck, pooling in (("pooled", "cls"), ("pooled", "mean"), ("none", "cls")):
        model = make_model(bottleneck=bottleneck, pooling=pooling)
        states = model.get_encoder()(ids, attention_mask=mask).last_hidden_state
        if pooling == "cls":
            changed = states.clone()
            changed[:, 1:] += noise[:, 1:]  # everything but the first ([CLS]) state
        else:
            # Move state 1 and state 2 by opposite amounts: the mean over real tokens is unchanged.
            changed = states.clone()
            changed[:, 1] += noise[:, 0]
            changed[:, 2] -= noise[:, 0]
        before = _logits_with_encoder_states(model, states, mask, decoder_input_ids)
        after = _logits_with_encoder_states(model, changed, mask, decoder_input_ids)
        if bottleneck == "pooled":
            torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
        else:
            assert not torch.allclose(after, before, atol=1e-3), "without a bottleneck the decoder reads every state"


def test_mean_pooling_and_cross_attention_ignore_encoder_padding():
    for bottleneck in ("pooled", "none"):
        model = make_model(bottleneck=bottleneck, pooling="mean")
        ids = random_ids(1, 6)
        labels = random_ids(1, 5, seed=9)
        padded = torch.cat((ids, torch.zeros(1, 3, dtype=torch.long)), dim=1)
        mask = torch.tensor([[1] * 6 + [0] * 3])
        alone = model(ids, labels=labels)
        with_padding = model(padded, attention_mask=mask, labels=labels)
        torch.testing.assert_close(with_padding.logits, alone.logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(with_padding.pooler_output, alone.pooler_output, atol=1e-5, rtol=1e-5)


def test_weighted_mean_sentence_pooling_reweighs_and_centres_without_touching_the_decoder():
    plain = make_model(PretrainDAEForDenoising, pooling="mean")
    weighted = make_model(PretrainDAEForDenoising, pooling="mean", sentence_pooling="weighted_mean")
    ids, mask, labels = padded_batch()
    # all-ones weights and a zero centre: exactly the mean-pooled bottleneck
    torch.testing.assert_close(weighted.model(ids, attention_mask=mask).pooler_output,
                               plain.model(ids, attention_mask=mask).pooler_output)

    generator = torch.Generator().manual_seed(5)
    token_weights = torch.rand(VOCAB, generator=generator)
    centre = torch.randn(32, generator=generator)
    weighted.model.token_pooling_weights.copy_(token_weights)
    weighted.model.pooled_center.copy_(centre)
    out = weighted(ids, attention_mask=mask, labels=labels)
    states = out.encoder_last_hidden_state  # (B, S, C)
    row_weights = token_weights[ids] * mask  # (B, S): padding counts zero
    expected = (states * row_weights[..., None]).sum(1) / row_weights.sum(1, keepdim=True) - centre
    torch.testing.assert_close(out.pooler_output, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out.pooler_output, plain(ids, attention_mask=mask, labels=labels).pooler_output)

    # The decoder still reads the plain mean: same logits, loss and generated tokens as without the statistics.
    reference = plain(ids, attention_mask=mask, labels=labels)
    torch.testing.assert_close(out.logits, reference.logits)
    generated = weighted.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=False)
    torch.testing.assert_close(generated, plain.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=False))
    # Without token ids there is nothing to weigh: no sentence vector rather than a differently pooled one.
    encoder_outputs = weighted.get_encoder()(ids, attention_mask=mask)
    assert weighted.model(encoder_outputs=encoder_outputs, attention_mask=mask).pooler_output is None


def test_sentence_pooling_statistics_are_saved_with_the_weights(tmp_path):
    model = make_model(PretrainDAEModel, pooling="mean", sentence_pooling="weighted_mean")
    model.token_pooling_weights.copy_(torch.linspace(0.1, 1.0, VOCAB))
    model.pooled_center.fill_(0.25)
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path, trust_remote_code=True).eval()
    torch.testing.assert_close(loaded.token_pooling_weights, model.token_pooling_weights)
    torch.testing.assert_close(loaded.pooled_center, model.pooled_center)
    ids, mask, _ = padded_batch()
    torch.testing.assert_close(loaded(ids, attention_mask=mask).pooler_output,
                               model(ids, attention_mask=mask).pooler_output)


def test_untied_output_layer_trains_apart_and_the_base_model_loads_without_it(tmp_path):
    model = make_model(PretrainDAEForDenoising, tie_word_embeddings=False)
    assert model.lm_head.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()
    model.save_pretrained(tmp_path)
    base, info = PretrainDAEModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["unexpected_keys"] and not info["missing_keys"]
    reloaded = PretrainDAEForDenoising.from_pretrained(tmp_path)
    torch.testing.assert_close(reloaded.lm_head.weight, model.lm_head.weight)


@pytest.mark.parametrize("bottleneck", ["pooled", "none"])
def test_eager_and_sdpa_agree(bottleneck):
    ids, mask, labels = padded_batch()
    logits = {
        implementation: make_model(bottleneck=bottleneck, attn_implementation=implementation)(
            ids, attention_mask=mask, labels=labels
        ).logits
        for implementation in ("eager", "sdpa")
    }
    torch.testing.assert_close(logits["eager"], logits["sdpa"], atol=1e-5, rtol=1e-5)


def test_activation_checkpointing_gives_the_same_gradients():
    ids, mask, labels = padded_batch()
    plain = make_model().train()
    checkpointed = make_model().train()
    checkpointed.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    plain(ids, attention_mask=mask, labels=labels).loss.backward()
    checkpointed(ids, attention_mask=mask, labels=labels).loss.backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), checkpointed.named_parameters()):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-6, rtol=1e-5, msg=name)


# --------------------------------------------------------------------------------------------------- generation
def greedy_by_hand(model, ids, mask, steps: int) -> torch.Tensor:
    """Greedy decoding with full forward passes (no cache, no GenerationMixin), stopping rows at EOS."""
    decoded = torch.full((ids.shape[0], 1), BOS)
    finished = torch.zeros(ids.shape[0], dtype=torch.bool)
    for _ in range(steps):
        logits = model(ids, attention_mask=mask, decoder_input_ids=decoded, use_cache=False).logits[:, -1]
        next_token = torch.where(finished, PAD, logits.argmax(-1))
        decoded = torch.cat((decoded, next_token[:, None]), dim=1)
        finished |= next_token == EOS
        if finished.all():
            break
    return decoded


@pytest.mark.parametrize("bottleneck", ["pooled", "none"])
def test_greedy_and_beam_generation_with_and_without_cache(bottleneck):
    model = lively_model(bottleneck=bottleneck)
    ids, mask, _ = padded_batch(seed=4)
    greedy = model.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=False, use_cache=True)
    assert greedy.shape[0] == 3 and greedy.shape[1] > 1
    assert (greedy[:, 0] == BOS).all()
    assert len(set(greedy[:, 1:].flatten().tolist())) > 3, "outputs too uniform to compare meaningfully"
    assert torch.equal(
        greedy, model.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=False, use_cache=False)
    )
    assert torch.equal(greedy, greedy_by_hand(model, ids, mask, steps=10))

    beam = model.generate(ids, attention_mask=mask, max_new_tokens=10, num_beams=3, do_sample=False, use_cache=True)
    uncached = model.generate(
        ids, attention_mask=mask, max_new_tokens=10, num_beams=3, do_sample=False, use_cache=False
    )
    assert torch.equal(beam, uncached)

    # Beam search keeps the sequence with the best score, so it can never score below greedy.
    def score(sequences):
        sequences = sequences.clone()
        labels = sequences[:, 1:].masked_fill(sequences[:, 1:] == PAD, -100)
        logits = model(ids, attention_mask=mask, decoder_input_ids=sequences[:, :-1]).logits
        logprobs = logits.log_softmax(-1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
        return (logprobs * (labels != -100)).sum(-1)

    if beam.shape == greedy.shape and (beam[:, -1] != PAD).all() and (greedy[:, -1] != PAD).all():
        assert (score(beam) >= score(greedy) - 1e-4).all()


@pytest.mark.parametrize("cache_argument", ["cache", "past_key_values"])
def test_cached_decoder_steps_equal_one_full_pass(cache_argument):
    """Both names of the cache argument work: transformers >= 5.24 passes `cache`, older ones `past_key_values`."""
    model = lively_model(bottleneck="none")
    ids, mask, labels = padded_batch()
    decoder_input_ids = shift_tokens_right(labels, PAD, BOS).clamp(min=5)
    full = model(ids, attention_mask=mask, decoder_input_ids=decoder_input_ids, use_cache=False).logits
    encoder_outputs = model.get_encoder()(ids, attention_mask=mask)
    cache, steps = None, []
    for position in range(decoder_input_ids.shape[1]):
        out = model(
            attention_mask=mask,
            encoder_outputs=encoder_outputs,
            decoder_input_ids=decoder_input_ids[:, position : position + 1],
            use_cache=True,
            **{cache_argument: cache},
        )
        cache = getattr(out, CACHE_FIELD)
        steps.append(out.logits)
    assert cache.get_seq_length() == decoder_input_ids.shape[1]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bottleneck", ["pooled", "none"])
def test_generate_hands_the_growing_cache_back_to_forward(bottleneck):
    """The failure of transformers 5.24 was silent: generate() passed the cache under a new name, forward dropped it
    into **kwargs, and every step decoded one token with no past. Record what the decoder really receives."""
    model = lively_model(bottleneck=bottleneck)
    ids, mask, _ = padded_batch(seed=4)
    seen = []  # (new tokens, cached tokens) per decoder call

    def record(module, args, kwargs):
        cache = kwargs.get("cache")
        seen.append((args[0].shape[1], cache.get_seq_length() if cache is not None else 0))

    handle = model.model.decoder.register_forward_pre_hook(record, with_kwargs=True)
    try:
        model.generate(ids, attention_mask=mask, max_new_tokens=6, min_new_tokens=6, do_sample=False, use_cache=True)
    finally:
        handle.remove()
    assert seen == [(1, step) for step in range(6)], (
        f"generate() did not hand the key/value cache back to forward (calls: {seen}); did transformers rename "
        "the cache argument again? See cache_field in decoder_layers.py."
    )


def test_causal_mask_with_cache_and_left_padding_matches_the_rule():
    """query i (absolute position P + i) reads key j iff j <= P + i and key j is not padding; a padded query reads
    itself only, so no row is empty. Checked against the rule, element by element."""
    padding = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    past, length = 3, 3
    mask = causal_self_attention_mask(padding, length, past, torch.device("cpu"))
    assert mask.shape == (2, 1, length, past + length) and mask.dtype == torch.bool
    for row in range(2):
        for query in range(length):
            for key in range(past + length):
                causal = key <= past + query
                allowed = (causal and bool(padding[row, key])) or key == past + query
                assert bool(mask[row, 0, query, key]) == allowed, (row, query, key)
    # No padding: one new token reads the whole cache, and a fresh causal block is left to the kernels.
    assert causal_self_attention_mask(torch.ones(2, 6), 1, 5, torch.device("cpu")) is None
    assert causal_self_attention_mask(None, 4, 0, torch.device("cpu")) is None
    assert causal_self_attention_mask(None, 2, 4, torch.device("cpu")).shape == (1, 1, 2, 6)


def test_left_padded_decoder_inputs_give_the_same_logits_as_unpadded_ones():
    model = lively_model(bottleneck="none")
    ids, mask, _ = padded_batch()
    decoder_ids = torch.tensor([[BOS, 7, 9, 11], [BOS, 8, 10, 12], [BOS, 6, 6, 6]])
    plain = model(ids, attention_mask=mask, decoder_input_ids=decoder_ids, use_cache=False).logits
    padded_ids = torch.cat((torch.full((3, 2), PAD), decoder_ids), dim=1)
    decoder_mask = torch.cat((torch.zeros(3, 2, dtype=torch.long), torch.ones(3, 4, dtype=torch.long)), dim=1)
    for implementation in ("eager", "sdpa"):
        model.config._attn_implementation = implementation
        padded = model(
            ids, attention_mask=mask, decoder_input_ids=padded_ids, decoder_attention_mask=decoder_mask, use_cache=False
        ).logits
        assert torch.isfinite(padded).all()
        torch.testing.assert_close(padded[:, 2:], plain, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "field, value, message",
    [
        ("bottleneck", "vq", "bottleneck='vq' is not allowed; choose one of 'pooled', 'none'"),
        ("pooling", "max", "pooling='max' is not allowed; choose one of 'cls', 'mean'"),
        ("decoder_layers", 0, "decoder_layers=0 is not allowed; it must be a positive integer"),
        (
            "position_embedding_type",
            "absolute",
            "position_embedding_type='absolute' is not allowed; choose one of 'rotary'",
        ),
        (
            "decoder_start_token_id",
            64,
            "decoder_start_token_id=64 is not allowed; it must be None or an integer in [0, vocab_size=64)",
        ),
        ("hidden_size", 30, "hidden_size=30 is not allowed with num_attention_heads=4"),
        ("norm_type", "batchnorm", "norm_type='batchnorm' is not allowed"),
        ("attention_dropout", 1.0, "attention_dropout=1.0 is not allowed"),
        ("sentence_pooling", "max", "sentence_pooling='max' is not allowed"),
    ],
)
def test_config_rejects_bad_values_naming_field_value_and_choices(field, value, message):
    with pytest.raises(ValueError) as error:
        tiny_config(**{field: value})
    assert message in str(error.value)


def test_auto_classes_resolve_to_our_family():
    config = tiny_config()
    assert isinstance(AutoConfig.for_model("hf_pretrain_dae"), PretrainDAEConfig)
    assert type(AutoModel.from_config(config)) is PretrainDAEModel
    assert type(AutoModelForSeq2SeqLM.from_config(config)) is PretrainDAEForDenoising
    feature_config = PretrainDAEFeatureConfig(hidden_size=32, num_attention_heads=4, intermediate_size=48)
    assert type(AutoModel.from_config(feature_config)) is PretrainDAEForFeatureReconstruction
    assert config.is_encoder_decoder and not feature_config.is_encoder_decoder


# --------------------------------------------------------------------------------------------------- save / load
def test_round_trip_and_exported_code(tmp_path):
    model = lively_model()
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["auto_map"] == {
        "AutoConfig": "configuration_pretrain_dae.PretrainDAEConfig",
        "AutoModel": "modeling_pretrain_dae.PretrainDAEModel",
        "AutoModelForSeq2SeqLM": "modeling_pretrain_dae.PretrainDAEForDenoising",
    }
    for name in (
        "configuration_pretrain_dae.py",
        "modeling_pretrain_dae.py",
        "decoder_layers.py",
        "layers.py",
        "configuration_pretrain_encoder.py",
        "modeling_pretrain_encoder.py",
    ):
        source = (tmp_path / name).read_text()
        assert "import hf_pretrain" not in source and "from hf_pretrain" not in source, name
    assert "lm_head.weight" not in __import__("safetensors.torch").torch.load_file(str(tmp_path / "model.safetensors"))

    reloaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    assert type(reloaded) is PretrainDAEForDenoising
    assert reloaded.lm_head.weight is reloaded.get_input_embeddings().weight
    ids, mask, labels = padded_batch()
    assert torch.equal(
        reloaded(ids, attention_mask=mask, labels=labels).logits, model(ids, attention_mask=mask, labels=labels).logits
    )
    assert torch.equal(
        reloaded.generate(ids, attention_mask=mask, max_new_tokens=6),
        model.generate(ids, attention_mask=mask, max_new_tokens=6),
    )
    base = AutoModel.from_pretrained(tmp_path)
    assert type(base) is PretrainDAEModel
    assert torch.equal(
        base(ids, attention_mask=mask).pooler_output, model(ids, attention_mask=mask, labels=labels).pooler_output
    )


def test_encoder_exports_as_a_masked_lm_family_checkpoint(tmp_path):
    model = lively_model(pooling="mean")
    model.export_encoder(tmp_path / "encoder")
    saved = json.loads((tmp_path / "encoder" / "config.json").read_text())
    assert saved["model_type"] == "hf_pretrain_encoder" and saved["classifier_pooling"] == "mean"
    encoder = PretrainEncoderModel.from_pretrained(tmp_path / "encoder").eval()
    assert isinstance(encoder.config, PretrainEncoderConfig)
    ids, mask, _ = padded_batch()
    expected = model.get_encoder()(ids, attention_mask=mask).last_hidden_state
    assert torch.equal(encoder(ids, attention_mask=mask).last_hidden_state, expected)
    assert torch.equal(
        AutoModel.from_pretrained(tmp_path / "encoder")(ids, attention_mask=mask).last_hidden_state, expected
    )
    classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path / "encoder", num_labels=2)
    assert torch.equal(classifier.model.embeddings.tok_embeddings.weight, model.get_input_embeddings().weight)


FRESH_PROCESS_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["hf_pretrain"] = None  # `import hf_pretrain` now raises ImportError: prove we never need it
    import torch
    from transformers import AutoModel, AutoModelForSeq2SeqLM
    from safetensors.torch import load_file

    text_folder, feature_folder, reference = sys.argv[1:4]
    try:
        import hf_pretrain  # noqa: F401
        raise SystemExit("hf_pretrain was importable")
    except ImportError:
        pass
    expected = load_file(reference)
    ids, mask = expected["input_ids"], expected["attention_mask"]
    model = AutoModelForSeq2SeqLM.from_pretrained(text_folder, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    greedy = model.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=False)
    beam = model.generate(ids, attention_mask=mask, max_new_tokens=10, num_beams=3, do_sample=False)
    assert torch.equal(greedy, expected["greedy"]), (greedy, expected["greedy"])
    assert torch.equal(beam, expected["beam"]), (beam, expected["beam"])
    base = AutoModel.from_pretrained(text_folder, trust_remote_code=True).eval()
    # Floats may differ in the last bits with another thread count; tokens above must not.
    torch.testing.assert_close(base(ids, attention_mask=mask).pooler_output, expected["pooled"], atol=1e-5, rtol=1e-5)
    features = AutoModel.from_pretrained(feature_folder, trust_remote_code=True).eval()
    assert type(features).__name__ == "PretrainDAEForFeatureReconstruction"
    reconstruction = features(expected["features"]).reconstruction
    torch.testing.assert_close(reconstruction, expected["reconstruction"], atol=1e-5, rtol=1e-5)
    print("FRESH-PROCESS-OK", type(model).__name__, type(base).__name__)
    """
)


def test_saved_folders_load_and_generate_with_remote_code_in_a_process_without_hf_pretrain(tmp_path):
    from safetensors.torch import save_file

    model = lively_model()
    model.save_pretrained(tmp_path / "text")
    features_model = PretrainDAEForFeatureReconstruction(feature_config()).eval()
    features_model.save_pretrained(tmp_path / "features")
    ids, mask, _ = padded_batch(seed=4)
    features = torch.rand(2, 64, generator=torch.Generator().manual_seed(0))
    reference = {
        "input_ids": ids,
        "attention_mask": mask,
        "greedy": model.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=False),
        "beam": model.generate(ids, attention_mask=mask, max_new_tokens=10, num_beams=3, do_sample=False),
        "pooled": model.model(ids, attention_mask=mask).pooler_output.detach(),
        "features": features,
        "reconstruction": features_model(features).reconstruction.detach(),
    }
    save_file({k: v.contiguous() for k, v in reference.items()}, str(tmp_path / "reference.safetensors"))
    script = tmp_path / "load.py"
    script.write_text(FRESH_PROCESS_SCRIPT)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            str(tmp_path / "text"),
            str(tmp_path / "features"),
            str(tmp_path / "reference.safetensors"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "FRESH-PROCESS-OK PretrainDAEForDenoising PretrainDAEModel" in result.stdout


# --------------------------------------------------------------------------------------------------- features
def feature_config(**overrides) -> PretrainDAEFeatureConfig:
    settings = dict(
        feature_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        decoder_layers=1,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=16,
    )
    settings.update(overrides)
    return PretrainDAEFeatureConfig(**settings)


def test_feature_autoencoder_shapes_and_mse():
    torch.manual_seed(0)
    model = PretrainDAEForFeatureReconstruction(feature_config()).eval()
    flat = torch.rand(4, 64)
    out = model(flat, labels=flat)
    assert out.reconstruction.shape == (4, 64) and out.pooler_output.shape == (4, 32)
    assert out.encoder_last_hidden_state.shape == (4, 9, 32)  # summary token + 8 feature tokens
    torch.testing.assert_close(out.loss, ((out.reconstruction - flat) ** 2).mean())
    sequence = flat.view(4, 8, 8)
    torch.testing.assert_close(model(sequence).reconstruction, out.reconstruction.view(4, 8, 8))
    torch.testing.assert_close(model.encode(flat), out.pooler_output)
    with pytest.raises(ValueError, match="feature_size=8"):
        model(torch.rand(4, 63))
    with pytest.raises(ValueError, match="no masked-LM encoder checkpoint"):
        model.export_encoder("unused")
    assert model.accepts_loss_kwargs is False  # MSE is a per-value mean; Trainer must not pass token counts


def test_feature_autoencoder_learns_to_reconstruct_noisy_inputs():
    from hf_pretrain.data.noising import FeatureNoiseCollator

    # Data on a 4-dimensional subspace of R^32: a bottleneck of 16 can hold it, noise cannot be copied through.
    generator = torch.Generator().manual_seed(0)
    basis = torch.randn(4, 32, generator=generator)
    data = (torch.randn(256, 4, generator=generator) @ basis) / 2
    collator = FeatureNoiseCollator(gaussian_std=0.3, mask_rate=0.2, seed=0)
    torch.manual_seed(0)
    model = PretrainDAEForFeatureReconstruction(
        feature_config(feature_size=4, num_hidden_layers=1, decoder_layers=2)
    ).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(200):
        collator.set_epoch(step // 8)
        rows = range((step % 8) * 32, (step % 8 + 1) * 32)
        batch = collator([{"input_features": data[i].tolist(), "example_index": i} for i in rows])
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < 0.5 * first, (first, last)


# --------------------------------------------------------------------------------------------------- end to end
def test_tokenizer_noise_collator_and_model_train_together():
    """A WordPiece tokenizer built here, TSDAE word deletion, a few optimizer steps: the loss goes down."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from hf_pretrain.data.noising import TSDAE_NOISE, DenoisingCollator, tokenize_for_denoising

    generator = torch.Generator().manual_seed(0)
    syllables = ["ka", "lo", "mi", "ne", "su", "ta", "ri", "po"]
    words = ["".join(syllables[i] for i in torch.randint(0, 8, (1 + k % 3,), generator=generator)) for k in range(40)]
    texts = [" ".join(words[i] for i in torch.randint(0, 40, (6,), generator=generator)) for _ in range(64)]
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.train_from_iterator(
        texts, trainers.WordPieceTrainer(vocab_size=60, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    )
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    examples = tokenize_for_denoising(tokenizer, texts)
    collator = DenoisingCollator.from_tokenizer(tokenizer, TSDAE_NOISE, seed=0)
    torch.manual_seed(0)
    model = PretrainDAEForDenoising(
        tiny_config(
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            decoder_start_token_id=tokenizer.cls_token_id,
            bos_token_id=None,
            eos_token_id=tokenizer.sep_token_id,
        )
    ).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(30):
        collator.set_epoch(step // 4)
        batch = collator(examples[(step % 4) * 16 : (step % 4 + 1) * 16])
        assert (batch["labels"][:, 0] == tokenizer.cls_token_id).all()
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-4:]) / 4 < 0.8 * sum(losses[:4]) / 4, losses
