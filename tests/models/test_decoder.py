"""The causal-LM decoder family: shapes, shifted loss, generation with and without cache, left padding, packing,
attention backends, last-token classification, config errors, save/load, remote code without hf_pretrain."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch.nn import functional as F
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

from hf_pretrain.models import (
    PretrainDecoderConfig,
    PretrainDecoderForCausalLM,
    PretrainDecoderForSequenceClassification,
    PretrainDecoderModel,
)
from hf_pretrain.models.modeling_pretrain_decoder import CACHE_FIELD, next_token_targets

VOCAB = 64
PAD, BOS, EOS = 0, 2, 3

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_config(**overrides) -> PretrainDecoderConfig:
    settings = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=64,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
        num_labels=3,
    )
    settings.update(overrides)
    return PretrainDecoderConfig(**settings)


def make_model(cls=PretrainDecoderForCausalLM, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return cls(tiny_config(**overrides)).eval()


def lively_model(cls=PretrainDecoderForCausalLM, **overrides):
    """A random model whose greedy outputs vary from step to step (a small-init tied head repeats one token, which
    would make cached == uncached comparisons vacuous)."""
    return make_model(cls, initializer_range=0.3, **overrides)


def random_ids(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(5, VOCAB, (batch, length), generator=generator)


def left_pad(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """1D id tensors -> left-padded ids (B, L) and attention mask (B, L)."""
    length = max(len(row) for row in rows)
    ids = torch.full((len(rows), length), PAD)
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    for index, row in enumerate(rows):
        ids[index, length - len(row):] = row
        mask[index, length - len(row):] = 1
    return ids, mask


# --------------------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize(
    "variant",
    [{}, {"norm_type": "layernorm", "mlp_type": "plain", "hidden_act": "gelu", "attention_bias": True,
          "mlp_bias": True, "norm_bias": True, "embedding_norm": True, "tie_word_embeddings": False}],
    ids=["default", "layernorm-plain-biases-untied"],
)
def test_every_head_has_the_documented_shapes(variant):
    ids = random_ids(2, 10)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0

    base = make_model(PretrainDecoderModel, **variant)
    out = base(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    assert out.last_hidden_state.shape == (2, 10, 32) and out.last_hidden_state.dtype == torch.float32
    assert len(out.hidden_states) == 3  # embeddings + one per layer (the last after the final norm)
    assert [a.shape for a in out.attentions] == [(2, 4, 10, 10)] * 2
    torch.testing.assert_close(out.attentions[0].triu(1), torch.zeros(2, 4, 10, 10))  # causal
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(2, 4, 10))
    assert getattr(out, CACHE_FIELD).get_seq_length() == 10  # eval mode with use_cache: the cache comes back

    lm = make_model(**variant)
    out = lm(ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100))
    assert out.logits.shape == (2, 10, VOCAB) and out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert getattr(out, CACHE_FIELD) is None  # training with labels builds no cache
    assert lm(ids, logits_to_keep=1).logits.shape == (2, 1, VOCAB)
    assert isinstance(lm(ids, return_dict=False), tuple)
    assert (lm.lm_head.weight is lm.get_input_embeddings().weight) == variant.get("tie_word_embeddings", True)

    classifier = make_model(PretrainDecoderForSequenceClassification, **variant)
    out = classifier(ids, attention_mask=mask, labels=torch.tensor([0, 2]))
    assert out.logits.shape == (2, 3) and torch.isfinite(out.loss)
    assert classifier.config.problem_type == "single_label_classification"


def test_tied_head_survives_resizing():
    model = make_model()
    model.resize_token_embeddings(VOCAB + 8)
    assert model.lm_head.weight is model.get_input_embeddings().weight
    assert model(random_ids(1, 5)).logits.shape == (1, 5, VOCAB + 8)


def test_training_flops_count_every_linear_weight_and_attention():
    model = make_model()
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    # per layer: qkv 32x96, out 32x32, up 32x96 (gated: 2 x 48), down 48x32; plus the 32x64 head
    assert linear == 2 * (32 * 96 + 32 * 32 + 32 * 96 + 48 * 32) + 32 * VOCAB
    assert model.training_flops(tokens=1000, sequence_length=50) == 6 * linear * 1000 + 12 * 2 * 50 * 32 * 1000


# --------------------------------------------------------------------------------------------------- loss
def test_loss_is_the_shifted_cross_entropy_ignoring_minus_100():
    model = make_model()
    ids = random_ids(3, 9)
    labels = ids.clone()
    labels[1, 6:] = -100  # padding
    labels[2, :3] = -100  # a prompt without loss
    out = model(ids, labels=labels)
    expected = F.cross_entropy(out.logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)
    assert model.loss_type == "ForCausalLM"  # Trainer counts labels[..., 1:] for num_items_in_batch, as we shift

    # Trainer's num_items_in_batch (targets of all accumulated micro-batches): halves add up to the full batch.
    total = (labels[:, 1:] != -100).sum()
    halves = sum(model(ids[rows], labels=labels[rows], num_items_in_batch=total).loss
                 for rows in (slice(0, 1), slice(1, 3)))
    torch.testing.assert_close(halves, out.loss)

    # A padding-free collator's shift_labels are used as given.
    shifted = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=-100)
    torch.testing.assert_close(model(ids, shift_labels=shifted).loss, out.loss)


def test_gradient_accumulation_under_trainer_matches_a_full_batch(tmp_path):
    """Trainer counts the targets of all accumulated micro-batches over labels[..., 1:] (our loss_type shifts) and
    passes them as num_items_in_batch: 2 x 4 examples with uneven target counts give the loss and gradient of one
    batch of 8."""
    from torch.utils.data import Dataset
    from transformers import Trainer, TrainingArguments

    ids = random_ids(8, 9, seed=7)
    labels = ids.clone()
    for row in range(8):
        labels[row, 2 + row % 6:] = -100  # 1 to 6 targets per example

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


def test_batch_without_targets_gives_zero_loss_not_nan():
    model = make_model().train()
    ids = random_ids(2, 6)
    labels = torch.full_like(ids, -100)
    labels[:, 0] = ids[:, 0]  # only first tokens: nothing predicts them
    loss = model(ids, labels=labels).loss
    assert loss.item() == 0.0
    loss.backward()


def test_next_token_targets_skip_document_boundaries():
    labels = torch.tensor([[10, 11, 12, 20, 21, 30]])
    documents = torch.tensor([[1, 1, 1, 2, 2, 3]])
    assert next_token_targets(labels).tolist() == [[11, 12, 20, 21, 30, -100]]
    assert next_token_targets(labels, documents).tolist() == [[11, 12, -100, 21, -100, -100]]


# --------------------------------------------------------------------------------------------------- packing
@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_packed_row_gives_each_document_its_logits_and_loss_alone(attn_implementation):
    model = lively_model(attn_implementation=attn_implementation)
    documents = [random_ids(1, n, seed=s) for n, s in ((7, 3), (5, 4), (4, 5))]
    packed = torch.cat(documents, dim=1)  # (1, 16)
    positions = torch.cat([torch.arange(d.shape[1]) for d in documents])[None]

    out = model(packed, position_ids=positions, labels=packed)
    start = 0
    alone_losses, targets = [], []
    for document in documents:
        alone = model(document, labels=document)
        end = start + document.shape[1]
        torch.testing.assert_close(out.logits[:, start:end], alone.logits, atol=1e-5, rtol=1e-5)
        alone_losses.append(alone.loss * (document.shape[1] - 1))
        targets.append(document.shape[1] - 1)
        start = end
    # Token-weighted: the loss of the packed row is the loss of its documents (no cross-document targets).
    torch.testing.assert_close(out.loss, sum(alone_losses) / sum(targets), atol=1e-5, rtol=1e-5)

    # A row that continues a document (starts at position 4) and a padded row, in one batch.
    rows = torch.cat((packed[:, :10], random_ids(1, 10, seed=6)))
    row_positions = torch.tensor([[4, 5, 6, 7, 0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5, 6, 0, 0, 0]])
    mask = torch.ones_like(rows)
    mask[1, 7:] = 0
    batched = model(rows, attention_mask=mask, position_ids=row_positions).logits
    torch.testing.assert_close(
        batched[:1, 4:], model(rows[:1, 4:]).logits, atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(
        batched[:1, :4], model(rows[:1, :4], position_ids=row_positions[:1, :4]).logits, atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(batched[1:, :7], model(rows[1:, :7]).logits, atol=1e-5, rtol=1e-5)

    # Without the document restriction the later documents see the earlier ones.
    model.config.attention_within_documents = False
    leaked = model(packed, position_ids=positions).logits
    assert not torch.allclose(leaked[:, 7:], out.logits[:, 7:], atol=1e-3)


# --------------------------------------------------------------------------------------------------- backends
def test_eager_and_sdpa_agree_with_padding_and_cache():
    ids, mask = left_pad([random_ids(1, 9, seed=2)[0], random_ids(1, 5, seed=3)[0]])
    outputs = {}
    for implementation in ("eager", "sdpa"):
        model = lively_model(attn_implementation=implementation)
        assert model.config._attn_implementation == implementation
        prefill = model(ids[:, :6], attention_mask=mask[:, :6], use_cache=True)
        step = model(ids[:, 6:], attention_mask=mask, cache=getattr(prefill, CACHE_FIELD))
        outputs[implementation] = (model(ids, attention_mask=mask).logits, prefill.logits, step.logits)
    for eager, sdpa in zip(outputs["eager"], outputs["sdpa"]):
        torch.testing.assert_close(eager, sdpa, atol=1e-5, rtol=1e-5)


def test_flash_attention_gets_a_padding_mask_or_varlen_lengths():
    """No GPU here: check the arguments the flash path would receive (the kernel itself is transformers')."""
    from types import SimpleNamespace

    from hf_pretrain.models.modeling_pretrain_decoder import decoder_attention, packed_document_ids

    config = SimpleNamespace(_attn_implementation="flash_attention_2")
    positions = torch.tensor([[0, 1, 2, 0, 1], [0, 1, 0, 1, 2]])
    documents = packed_document_ids(positions, None)
    mask, kwargs = decoder_attention(config, None, documents, 5, 0, torch.device("cpu"), False)
    assert mask is None
    assert kwargs["cu_seq_lens_q"].tolist() == [0, 3, 5, 7, 10] and kwargs["max_length_q"] == 3
    padding = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
    mask, kwargs = decoder_attention(config, padding, None, 5, 0, torch.device("cpu"), False)
    assert mask is padding and kwargs == {}
    with pytest.raises(ValueError, match="flash attention takes either padding"):
        decoder_attention(config, padding, documents, 5, 0, torch.device("cpu"), False)
    # generate()'s left-padding positions (pads and the first real token at 0) are one document, not a packed row
    assert packed_document_ids(torch.tensor([[0, 0, 0, 1, 2]]), torch.tensor([[0, 0, 1, 1, 1]])) is None


def test_activation_checkpointing_gives_the_same_gradients():
    ids = random_ids(2, 8)
    plain = make_model().train()
    checkpointed = make_model().train()
    checkpointed.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    plain(ids, labels=ids).loss.backward()
    checkpointed(ids, labels=ids).loss.backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), checkpointed.named_parameters()):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-6, rtol=1e-5, msg=name)


# --------------------------------------------------------------------------------------------------- generation
def greedy_by_hand(model, ids: torch.Tensor, steps: int) -> torch.Tensor:
    """Greedy decoding of one unpadded batch with full forward passes (no cache, no GenerationMixin)."""
    for _ in range(steps):
        logits = model(ids, use_cache=False).logits[:, -1]
        logits[:, EOS] = -float("inf")  # as min_new_tokens does
        ids = torch.cat((ids, logits.argmax(-1, keepdim=True)), dim=1)
    return ids


@pytest.mark.parametrize("cache_argument", ["cache", "past_key_values"])
def test_cached_steps_equal_one_full_pass(cache_argument):
    """Both names of the cache argument work: transformers >= 5.24 passes `cache`, older ones `past_key_values`."""
    model = lively_model()
    ids, mask = left_pad([random_ids(1, 8, seed=2)[0], random_ids(1, 6, seed=3)[0]])
    full = model(ids, attention_mask=mask, use_cache=False).logits
    out = model(ids[:, :4], attention_mask=mask[:, :4], use_cache=True)
    cache, steps = getattr(out, CACHE_FIELD), [out.logits]
    for position in range(4, ids.shape[1]):
        out = model(ids[:, position:position + 1], attention_mask=mask[:, :position + 1], **{cache_argument: cache})
        cache = getattr(out, CACHE_FIELD)
        steps.append(out.logits)
    assert cache.get_seq_length() == ids.shape[1]
    real = mask.bool()
    torch.testing.assert_close(torch.cat(steps, dim=1)[real], full[real], atol=1e-5, rtol=1e-5)


def test_greedy_generation_with_and_without_cache_and_by_hand():
    model = lively_model()
    ids = random_ids(2, 5, seed=4)
    settings = dict(max_new_tokens=10, min_new_tokens=10, do_sample=False)
    cached = model.generate(ids, use_cache=True, **settings)
    assert cached.shape == (2, 15) and torch.equal(cached[:, :5], ids)
    assert len(set(cached[:, 5:].flatten().tolist())) > 3, "outputs too uniform to compare meaningfully"
    assert torch.equal(cached, model.generate(ids, use_cache=False, **settings))
    assert torch.equal(cached, greedy_by_hand(model, ids, steps=10))


def test_generate_hands_the_growing_cache_back_to_forward():
    """If transformers renames the cache argument again, forward would drop it into **kwargs and every step would
    decode one token with no past, silently. Record what the base model really receives."""
    model = lively_model()
    seen = []

    def record(module, args, kwargs):
        cache = kwargs.get("cache")
        seen.append((args[0].shape[1], cache.get_seq_length() if cache is not None else 0))

    handle = model.model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        model.generate(random_ids(2, 5), max_new_tokens=4, min_new_tokens=4, do_sample=False)
    finally:
        handle.remove()
    assert seen == [(5, 0), (1, 5), (1, 6), (1, 7)], seen


def test_beam_search_and_sampling_run():
    model = lively_model()
    ids = random_ids(2, 5, seed=4)
    beam = model.generate(ids, max_new_tokens=8, num_beams=3, do_sample=False)
    assert torch.equal(beam, model.generate(ids, max_new_tokens=8, num_beams=3, do_sample=False, use_cache=False))
    greedy = model.generate(ids, max_new_tokens=8, do_sample=False)

    def score(sequences):  # log-probability of the generated continuation
        logits = model(sequences[:, :-1], use_cache=False).logits[:, 4:]
        labels = sequences[:, 5:]
        logprobs = logits.log_softmax(-1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
        return (logprobs * (labels != PAD)).sum(-1)

    if beam.shape == greedy.shape and (beam[:, -1] != PAD).all() and (greedy[:, -1] != PAD).all():
        assert (score(beam) >= score(greedy) - 1e-4).all()

    torch.manual_seed(0)
    sampled = model.generate(ids, max_new_tokens=8, min_new_tokens=8, do_sample=True, top_k=20, temperature=1.5,
                             num_return_sequences=2)
    torch.manual_seed(0)
    again = model.generate(ids, max_new_tokens=8, min_new_tokens=8, do_sample=True, top_k=20, temperature=1.5,
                           num_return_sequences=2)
    assert sampled.shape == (4, 13) and torch.equal(sampled, again)
    assert ((sampled >= 0) & (sampled < VOCAB)).all()


@pytest.mark.parametrize("num_beams", [1, 3])
def test_left_padded_batch_generates_what_each_prompt_generates_alone(num_beams):
    model = lively_model()
    prompts = [random_ids(1, n, seed=s)[0] for n, s in ((7, 5), (3, 6), (5, 7))]
    ids, mask = left_pad(prompts)
    settings = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False, num_beams=num_beams)
    batched = model.generate(ids, attention_mask=mask, **settings)
    for row, prompt in enumerate(prompts):
        alone = model.generate(prompt[None], **settings)
        assert torch.equal(batched[row, ids.shape[1]:], alone[0, len(prompt):]), row


# --------------------------------------------------------------------------------------------------- classification
def test_sequence_classification_pools_the_last_real_token_with_left_or_right_padding():
    model = lively_model(PretrainDecoderForSequenceClassification)
    texts = [random_ids(1, n, seed=s)[0] for n, s in ((6, 8), (3, 9))]
    alone = torch.cat([model(text[None]).logits for text in texts])

    left_ids, left_mask = left_pad(texts)
    right_ids = torch.full_like(left_ids, PAD)
    right_mask = torch.zeros_like(left_mask)
    for row, text in enumerate(texts):
        right_ids[row, : len(text)] = text
        right_mask[row, : len(text)] = 1
    left = model(left_ids, attention_mask=left_mask).logits
    right = model(right_ids, attention_mask=right_mask).logits
    torch.testing.assert_close(left, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(right, alone, atol=1e-5, rtol=1e-5)
    # Without a mask the pad token id finds the last real token (transformers' rule); right padding is causal-safe.
    torch.testing.assert_close(model(right_ids).logits, alone, atol=1e-5, rtol=1e-5)
    # The pooled state is the last real token's: it equals the base model's state there.
    states = model.model(right_ids, attention_mask=right_mask).last_hidden_state
    torch.testing.assert_close(left, model.score(states[[0, 1], [5, 2]]), atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"hidden_size": 30}, "hidden_size=30 is not allowed with num_attention_heads=4"),
        ({"hidden_size": 24, "num_attention_heads": 8}, "hidden_size / num_attention_heads = 3 is odd"),
        ({"norm_type": "batchnorm"}, "norm_type='batchnorm' is not allowed; choose one of 'layernorm', 'rmsnorm'"),
        ({"mlp_type": "moe"}, "mlp_type='moe' is not allowed; choose one of 'gated', 'plain'"),
        ({"hidden_act": "tanhh"}, "hidden_act='tanhh' is not allowed"),
        ({"attention_dropout": 1.5}, "attention_dropout=1.5 is not allowed; it must be a number in [0, 1)"),
        ({"num_hidden_layers": 0}, "num_hidden_layers=0 is not allowed; it must be a positive integer"),
        ({"vocab_size": 2.5}, "vocab_size=2.5 is not allowed; it must be a positive integer"),
        ({"eos_token_id": 64}, "eos_token_id=64 is not allowed; it must be None or an integer in [0, vocab_size=64)"),
        ({"rope_theta": 0.0}, "rope_theta=0.0 is not allowed; it must be > 0"),
    ],
    ids=lambda value: "-".join(value) if isinstance(value, dict) else None,
)
def test_config_rejects_bad_values_naming_field_value_and_choices(overrides, message):
    with pytest.raises(ValueError) as error:
        tiny_config(**overrides)
    assert message in str(error.value)


# --------------------------------------------------------------------------------------------------- save / load
def test_auto_classes_resolve_to_our_family():
    config = tiny_config()
    assert isinstance(AutoConfig.for_model("hf_pretrain_decoder"), PretrainDecoderConfig)
    for auto, cls in (
        (AutoModel, PretrainDecoderModel),
        (AutoModelForCausalLM, PretrainDecoderForCausalLM),
        (AutoModelForSequenceClassification, PretrainDecoderForSequenceClassification),
    ):
        assert type(auto.from_config(config)) is cls


def test_round_trip_through_auto_model_for_causal_lm(tmp_path):
    model = lively_model()
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "hf_pretrain_decoder"
    assert saved["auto_map"] == {
        "AutoConfig": "configuration_pretrain_decoder.PretrainDecoderConfig",
        "AutoModel": "modeling_pretrain_decoder.PretrainDecoderModel",
        "AutoModelForCausalLM": "modeling_pretrain_decoder.PretrainDecoderForCausalLM",
        "AutoModelForSequenceClassification": "modeling_pretrain_decoder.PretrainDecoderForSequenceClassification",
    }
    for path in tmp_path.glob("*.py"):
        source = path.read_text()
        assert "import hf_pretrain" not in source and "from hf_pretrain" not in source, path.name
    assert {"configuration_pretrain_decoder.py", "modeling_pretrain_decoder.py", "layers.py",
            "decoder_layers.py"} <= {path.name for path in tmp_path.glob("*.py")}

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(reloaded) is PretrainDecoderForCausalLM
    assert reloaded.lm_head.weight is reloaded.get_input_embeddings().weight
    ids = random_ids(2, 7)
    assert torch.equal(reloaded(ids).logits, model(ids).logits)
    assert torch.equal(reloaded.generate(ids, max_new_tokens=5), model.generate(ids, max_new_tokens=5))
    # A causal-LM checkpoint loads into the classifier (fresh score layer, same body).
    classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=2)
    assert torch.equal(classifier.model.embed_tokens.weight, model.model.embed_tokens.weight)


FRESH_PROCESS_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["hf_pretrain"] = None  # `import hf_pretrain` now raises ImportError: prove we never need it
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, pipeline
    from safetensors.torch import load_file

    folder, reference = sys.argv[1], sys.argv[2]
    try:
        import hf_pretrain  # noqa: F401
        raise SystemExit("hf_pretrain was importable")
    except ImportError:
        pass
    expected = load_file(reference)
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    ids, mask = expected["input_ids"], expected["attention_mask"]
    greedy = model.generate(ids, attention_mask=mask, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    assert torch.equal(greedy, expected["greedy"]), (greedy, expected["greedy"])
    classifier = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True, num_labels=2)
    assert classifier(ids, attention_mask=mask).logits.shape == (ids.shape[0], 2)

    generator = pipeline("text-generation", model=folder, trust_remote_code=True)
    special = [generator.tokenizer.pad_token_id, generator.tokenizer.bos_token_id, generator.tokenizer.eos_token_id]
    result = generator("the cat sat", max_new_tokens=6, min_new_tokens=6, do_sample=False, suppress_tokens=special)
    text = result[0]["generated_text"]
    assert text.startswith("the cat sat") and len(text) > len("the cat sat"), text
    print("FRESH-PROCESS-OK", type(model).__name__, repr(text))
    """
)


def test_saved_folder_generates_and_pipelines_with_remote_code_in_a_process_without_hf_pretrain(tmp_path):
    from safetensors.torch import save_file

    from hf_pretrain.data.tokenizer import train_tokenizer

    texts = [f"the cat sat on the mat number {i} while a dog ran to the park" for i in range(40)]
    tokenizer = train_tokenizer(
        texts, kind="bpe", vocab_size=300, min_frequency=1,
        special_tokens={"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>"},
    )
    model = make_model(
        initializer_range=0.3,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)

    ids = torch.randint(3, len(tokenizer), (2, 6), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # left padding
    ids[1, :2] = tokenizer.pad_token_id
    greedy = model.generate(ids, attention_mask=mask, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    save_file({"input_ids": ids, "attention_mask": mask, "greedy": greedy}, str(tmp_path / "reference.safetensors"))
    script = tmp_path / "load.py"
    script.write_text(FRESH_PROCESS_SCRIPT)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [sys.executable, str(script), str(folder), str(tmp_path / "reference.safetensors")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "FRESH-PROCESS-OK PretrainDecoderForCausalLM" in result.stdout
