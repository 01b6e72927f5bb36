"""The masked-LM encoder family: heads, sparse prediction, packing, attention backends, save/load, Trainer."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForPreTraining,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from hf_pretrain import (
    PretrainEncoderConfig,
    PretrainEncoderForMaskedLM,
    PretrainEncoderForReplacedTokenDetection,
    PretrainEncoderForSequenceClassification,
    PretrainEncoderForTokenClassification,
    PretrainEncoderModel,
)

VOCAB = 96
HEADS = (
    PretrainEncoderModel,
    PretrainEncoderForMaskedLM,
    PretrainEncoderForSequenceClassification,
    PretrainEncoderForTokenClassification,
    PretrainEncoderForReplacedTokenDetection,
)


def tiny_config(**overrides) -> PretrainEncoderConfig:
    settings = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=64,
        num_labels=3,
    )
    settings.update(overrides)
    return PretrainEncoderConfig(**settings)


def make_model(cls, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return cls(tiny_config(**overrides)).eval()


def random_ids(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(5, VOCAB, (batch, length), generator=generator)


def masked_labels(input_ids: torch.Tensor, rate: float = 0.3, seed: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.rand(input_ids.shape, generator=generator) < rate
    chosen[:, 0] = True  # at least one target per row
    return torch.where(chosen, input_ids, torch.full_like(input_ids, -100))


def gradients(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


# --------------------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"norm_type": "rmsnorm", "mlp_type": "plain", "hidden_act": "gelu"},
        {"position_embedding_type": "absolute", "attention_bias": True, "mlp_bias": True, "norm_bias": True},
        {"hidden_act": "silu", "embedding_norm": False, "classifier_pooling": "cls"},
    ],
    ids=["default", "rmsnorm-plain", "absolute-biases", "swiglu-cls"],
)
def test_every_head_has_the_documented_shapes_and_dtypes(variant):
    ids = random_ids(2, 10)
    attention_mask = torch.ones_like(ids)
    attention_mask[1, 7:] = 0

    base = make_model(PretrainEncoderModel, **variant)(ids, attention_mask=attention_mask)
    assert base.last_hidden_state.shape == (2, 10, 32) and base.last_hidden_state.dtype == torch.float32

    mlm = make_model(PretrainEncoderForMaskedLM, **variant)
    assert mlm(ids, attention_mask=attention_mask).logits.shape == (2, 10, VOCAB)
    labels = masked_labels(ids)
    dense = mlm(ids, attention_mask=attention_mask, labels=labels)  # eval mode: callers may read the logits
    assert dense.logits.shape == (2, 10, VOCAB)
    sparse = mlm.train()(ids, attention_mask=attention_mask, labels=labels)  # training: only the loss is read
    assert sparse.logits.shape == (int((labels != -100).sum()), VOCAB)
    assert sparse.loss.ndim == 0 and torch.isfinite(sparse.loss)
    torch.testing.assert_close(sparse.loss, dense.loss, atol=1e-6, rtol=1e-6)
    mlm.eval()

    classifier = make_model(PretrainEncoderForSequenceClassification, **variant)
    out = classifier(ids, attention_mask=attention_mask, labels=torch.tensor([0, 2]))
    assert out.logits.shape == (2, 3) and out.loss.dtype == torch.float32

    tagger = make_model(PretrainEncoderForTokenClassification, **variant)
    tags = torch.randint(0, 3, (2, 10))
    tags[1, 7:] = -100
    out = tagger(ids, attention_mask=attention_mask, labels=tags)
    assert out.logits.shape == (2, 10, 3) and torch.isfinite(out.loss)


def test_outputs_hidden_states_and_attentions_on_request():
    model = make_model(PretrainEncoderModel)
    out = model(random_ids(2, 6), output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == 3  # embeddings + one per layer (the last one after the final norm)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (2, 4, 6, 6)
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(2, 4, 6))
    assert isinstance(model(random_ids(1, 4), return_dict=False), tuple)


def test_sequence_classification_problem_types_follow_transformers():
    ids = random_ids(4, 8)
    single = make_model(PretrainEncoderForSequenceClassification)
    single(ids, labels=torch.tensor([0, 1, 2, 1]))
    assert single.config.problem_type == "single_label_classification"

    multi = make_model(PretrainEncoderForSequenceClassification)
    multi_hot = torch.tensor([[1.0, 0, 1], [0, 1, 0], [0, 0, 0], [1, 1, 1]])
    out = multi(ids, labels=multi_hot)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, multi_hot)
    assert multi.config.problem_type == "multi_label_classification"
    torch.testing.assert_close(out.loss, expected)

    regression = make_model(PretrainEncoderForSequenceClassification, num_labels=1)
    targets = torch.tensor([0.5, -1.0, 2.0, 0.0])
    out = regression(ids, labels=targets)
    assert regression.config.problem_type == "regression"
    torch.testing.assert_close(out.loss, torch.nn.functional.mse_loss(out.logits.squeeze(-1), targets))


def test_mean_pooling_ignores_padding():
    model = make_model(PretrainEncoderForSequenceClassification, classifier_pooling="mean")
    ids = random_ids(1, 6)
    padded = torch.cat((ids, torch.zeros(1, 3, dtype=torch.long)), dim=1)
    mask = torch.tensor([[1] * 6 + [0] * 3])
    torch.testing.assert_close(model(padded, attention_mask=mask).logits, model(ids).logits, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------------- sparse MLM
def test_sparse_prediction_equals_dense_loss_and_gradients():
    ids = random_ids(3, 16)
    labels = masked_labels(ids, rate=0.2)
    sparse = make_model(PretrainEncoderForMaskedLM, sparse_prediction=True).train()
    dense = make_model(PretrainEncoderForMaskedLM, sparse_prediction=False).train()

    sparse_out = sparse(ids, labels=labels)
    dense_out = dense(ids, labels=labels)
    sparse_out.loss.backward()
    dense_out.loss.backward()

    assert dense_out.logits.shape == (3, 16, VOCAB)
    torch.testing.assert_close(sparse_out.logits, dense_out.logits[labels != -100], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sparse_out.loss, dense_out.loss, atol=1e-6, rtol=1e-6)
    sparse_grads, dense_grads = gradients(sparse), gradients(dense)
    assert sparse_grads.keys() == dense_grads.keys() and len(sparse_grads) > 10
    for name in sparse_grads:
        torch.testing.assert_close(sparse_grads[name], dense_grads[name], atol=1e-6, rtol=1e-5, msg=name)


def test_batch_without_masked_tokens_gives_zero_loss_not_nan():
    model = make_model(PretrainEncoderForMaskedLM).train()
    ids = random_ids(2, 8)
    for sparse in (True, False):
        model.config.sparse_prediction = sparse
        loss = model(ids, labels=torch.full_like(ids, -100)).loss
        assert loss.item() == 0.0
        loss.backward()  # still part of the graph


def test_mlm_head_is_tied_to_input_embeddings_and_resize_keeps_the_tie():
    model = make_model(PretrainEncoderForMaskedLM)
    embeddings = model.get_input_embeddings()
    assert model.decoder.weight is embeddings.weight
    model.resize_token_embeddings(VOCAB + 10)
    assert model.get_input_embeddings().weight.shape == (VOCAB + 10, 32)
    assert model.decoder.weight is model.get_input_embeddings().weight
    assert model.decoder.bias.shape == (VOCAB + 10,)
    assert model(random_ids(1, 5)).logits.shape == (1, 5, VOCAB + 10)


def test_untied_mlm_head_keeps_its_own_matrix_through_save_and_load(tmp_path):
    """tie_word_embeddings=False (the small recipes): the decoder is a separate matrix, so an input embedding gets
    gradient only from the tokens that occur in the input — the softmax no longer pushes every rare token's
    embedding into one shared direction."""
    model = make_model(PretrainEncoderForMaskedLM, tie_word_embeddings=False)
    assert model.decoder.weight is not model.get_input_embeddings().weight
    assert not torch.equal(model.decoder.weight, model.get_input_embeddings().weight)
    ids = torch.randint(5, VOCAB // 2, (2, 9), generator=torch.Generator().manual_seed(4))  # lower half only
    model.train()
    model(ids, labels=masked_labels(ids)).loss.backward()
    input_grad = model.get_input_embeddings().weight.grad
    assert input_grad[VOCAB // 2 :].abs().sum() == 0  # absent tokens: untouched input embeddings
    assert model.decoder.weight.grad[VOCAB // 2 :].abs().sum() > 0  # ...while their output rows still train
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForMaskedLM.from_pretrained(tmp_path).eval()
    assert reloaded.decoder.weight is not reloaded.get_input_embeddings().weight
    assert torch.equal(reloaded.decoder.weight, model.decoder.weight)
    assert torch.equal(model.eval()(ids).logits, reloaded(ids).logits)


# --------------------------------------------------------------------------------------------------- packing
@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_packed_row_matches_documents_run_separately(attn_implementation):
    model = make_model(PretrainEncoderForMaskedLM, attn_implementation=attn_implementation)
    first, second = random_ids(1, 7, seed=3), random_ids(1, 5, seed=4)
    packed = torch.cat((first, second), dim=1)
    positions = torch.cat((torch.arange(7), torch.arange(5)))[None]

    packed_logits = model(packed, position_ids=positions).logits
    torch.testing.assert_close(packed_logits[:, :7], model(first).logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed_logits[:, 7:], model(second).logits, atol=1e-5, rtol=1e-5)

    # Without the document restriction the second document sees the first: outputs must differ.
    model.config.attention_within_documents = False
    leaked = model(packed, position_ids=positions).logits
    assert not torch.allclose(leaked[:, 7:], packed_logits[:, 7:], atol=1e-3)


def test_packed_rows_with_padding_and_a_continued_document():
    model = make_model(PretrainEncoderModel)
    ids = random_ids(2, 10, seed=5)
    # Row 0: a document continued from a previous row (starts at position 4), then a new one.
    positions = torch.tensor([[4, 5, 6, 7, 0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5, 6, 0, 1, 2]])
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # row 1 ends with padding instead of a third document
    packed = model(ids, attention_mask=mask, position_ids=positions).last_hidden_state
    alone = model(ids[:1, :4], position_ids=positions[:1, :4]).last_hidden_state
    torch.testing.assert_close(packed[:1, :4], alone, atol=1e-5, rtol=1e-5)
    alone = model(ids[1:, :7]).last_hidden_state
    torch.testing.assert_close(packed[1:, :7], alone, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------------- backends
@pytest.mark.parametrize("position_embedding_type", ["rotary", "absolute"])
def test_eager_and_sdpa_agree(position_embedding_type):
    ids = random_ids(2, 12)
    mask = torch.ones_like(ids)
    mask[0, 9:] = 0
    outputs = {}
    for implementation in ("eager", "sdpa"):
        model = make_model(
            PretrainEncoderForMaskedLM,
            attn_implementation=implementation,
            position_embedding_type=position_embedding_type,
        )
        assert model.config._attn_implementation == implementation
        outputs[implementation] = model(ids, attention_mask=mask).logits
    torch.testing.assert_close(outputs["eager"], outputs["sdpa"], atol=1e-5, rtol=1e-5)


def test_activation_checkpointing_gives_the_same_gradients():
    ids = random_ids(2, 12)
    labels = masked_labels(ids)
    plain = make_model(PretrainEncoderForMaskedLM).train()
    checkpointed = make_model(PretrainEncoderForMaskedLM).train()
    checkpointed.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    assert checkpointed.is_activation_checkpointing
    plain(ids, labels=labels).loss.backward()
    checkpointed(ids, labels=labels).loss.backward()
    for name, grad in gradients(plain).items():
        torch.testing.assert_close(gradients(checkpointed)[name], grad, atol=1e-6, rtol=1e-5, msg=name)


# --------------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "field, value, message",
    [
        ("hidden_size", 30, "hidden_size=30 is not allowed with num_attention_heads=4"),
        ("norm_type", "batchnorm", "norm_type='batchnorm' is not allowed; choose one of 'layernorm', 'rmsnorm'"),
        ("mlp_type", "moe", "mlp_type='moe' is not allowed; choose one of 'gated', 'plain'"),
        ("position_embedding_type", "alibi", "position_embedding_type='alibi' is not allowed"),
        ("hidden_act", "tanhh", "hidden_act='tanhh' is not allowed"),
        ("classifier_pooling", "max", "classifier_pooling='max' is not allowed"),
        ("attention_dropout", 1.5, "attention_dropout=1.5 is not allowed; it must be a number in [0, 1)"),
        ("num_hidden_layers", 0, "num_hidden_layers=0 is not allowed; it must be a positive integer"),
        ("vocab_size", 2.5, "vocab_size=2.5 is not allowed; it must be a positive integer"),
        ("pad_token_id", 500, "pad_token_id=500 is not allowed; it must be in [0, vocab_size=96)"),
        ("norm_eps", 0.0, "norm_eps=0.0 is not allowed"),
    ],
)
def test_config_rejects_bad_values_naming_field_value_and_choices(field, value, message):
    with pytest.raises(ValueError) as error:
        tiny_config(**{field: value})
    assert message in str(error.value)


def test_rotary_needs_an_even_head_dim():
    with pytest.raises(ValueError, match="odd"):
        tiny_config(hidden_size=12, num_attention_heads=4)
    tiny_config(hidden_size=12, num_attention_heads=4, position_embedding_type="absolute")


# --------------------------------------------------------------------------------------------------- save / load
def test_auto_classes_resolve_to_our_family(tmp_path):
    config = tiny_config()
    assert isinstance(AutoConfig.for_model("hf_pretrain_encoder"), PretrainEncoderConfig)
    for auto, cls in (
        (AutoModel, PretrainEncoderModel),
        (AutoModelForMaskedLM, PretrainEncoderForMaskedLM),
        (AutoModelForSequenceClassification, PretrainEncoderForSequenceClassification),
        (AutoModelForTokenClassification, PretrainEncoderForTokenClassification),
        (AutoModelForPreTraining, PretrainEncoderForReplacedTokenDetection),
    ):
        assert type(auto.from_config(config)) is cls


@pytest.mark.parametrize("cls", HEADS, ids=lambda cls: cls.__name__)
def test_save_pretrained_writes_the_full_auto_map_and_code(tmp_path, cls):
    model = make_model(cls)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert set(saved["auto_map"]) == {
        "AutoConfig",
        "AutoModel",
        "AutoModelForMaskedLM",
        "AutoModelForSequenceClassification",
        "AutoModelForTokenClassification",
        "AutoModelForPreTraining",
    }
    for name in ("configuration_pretrain_encoder.py", "modeling_pretrain_encoder.py", "layers.py"):
        source = (tmp_path / name).read_text()
        assert "import hf_pretrain" not in source and "from hf_pretrain" not in source, name
    assert (tmp_path / "model.safetensors").exists()
    assert not list(tmp_path.glob("*.bin"))


def test_round_trip_gives_identical_logits(tmp_path):
    model = make_model(PretrainEncoderForMaskedLM)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForMaskedLM.from_pretrained(tmp_path).eval()
    assert type(reloaded) is PretrainEncoderForMaskedLM
    assert reloaded.decoder.weight is reloaded.get_input_embeddings().weight
    ids = random_ids(2, 9)
    assert torch.equal(model(ids).logits, reloaded(ids).logits)
    # An MLM checkpoint loads into the classification heads (fresh classifier, same encoder).
    classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=2)
    assert torch.equal(
        classifier.model.embeddings.tok_embeddings.weight, model.model.embeddings.tok_embeddings.weight
    )


def test_factorized_embeddings_project_to_the_hidden_size_and_stay_tied(tmp_path):
    """embedding_size < or > hidden_size (ALBERT/ELECTRA's generator): the embedding table has that width, a
    projection maps it to the hidden size, and the masked-LM head maps back to it, so the decoder stays tied."""
    for width in (16, 64):
        model = make_model(PretrainEncoderForMaskedLM, embedding_size=width)
        assert model.get_input_embeddings().weight.shape == (VOCAB, width)
        assert model.decoder.weight is model.get_input_embeddings().weight
        ids = random_ids(2, 9)
        assert model(ids).logits.shape == (2, 9, VOCAB)
        model.save_pretrained(tmp_path / str(width))
        reloaded = AutoModelForMaskedLM.from_pretrained(tmp_path / str(width)).eval()
        assert torch.equal(model(ids).logits, reloaded(ids).logits)
    assert make_model(PretrainEncoderForMaskedLM).model.embeddings.project is None  # the default: no projection
    with pytest.raises(ValueError, match="embedding_size=0 is not allowed"):
        tiny_config(embedding_size=0)


FRESH_PROCESS_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["hf_pretrain"] = None  # `import hf_pretrain` now raises ImportError: prove we never need it
    import torch
    from transformers import AutoModelForMaskedLM, AutoModelForPreTraining, AutoModelForTokenClassification
    from safetensors.torch import load_file

    folder, reference = sys.argv[1], sys.argv[2]
    try:
        import hf_pretrain  # noqa: F401
        raise SystemExit("hf_pretrain was importable")
    except ImportError:
        pass
    model = AutoModelForMaskedLM.from_pretrained(folder, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    tensors = load_file(reference)
    logits = model(tensors["input_ids"]).logits
    assert torch.equal(logits, tensors["logits"]), (logits - tensors["logits"]).abs().max()
    tagger = AutoModelForTokenClassification.from_pretrained(folder, trust_remote_code=True, num_labels=5)
    assert tagger(tensors["input_ids"]).logits.shape[-1] == 5
    detector = AutoModelForPreTraining.from_pretrained(folder, trust_remote_code=True)  # an ELECTRA discriminator
    assert detector(tensors["input_ids"]).logits.shape == tensors["input_ids"].shape
    print("FRESH-PROCESS-OK", type(model).__name__)
    """
)


def test_saved_folder_loads_with_remote_code_in_a_process_without_hf_pretrain(tmp_path):
    from safetensors.torch import save_file

    folder = tmp_path / "model"
    model = make_model(PretrainEncoderForMaskedLM)
    model.save_pretrained(folder)
    ids = random_ids(2, 9)
    save_file({"input_ids": ids, "logits": model(ids).logits.detach()}, str(tmp_path / "reference.safetensors"))
    script = tmp_path / "load.py"
    script.write_text(FRESH_PROCESS_SCRIPT)

    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
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
    assert "FRESH-PROCESS-OK PretrainEncoderForMaskedLM" in result.stdout


def tiny_wordpiece_tokenizer():
    """A word-level WordPiece tokenizer over a handful of words, built in memory (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = "the cat sat on a mat dog ran to park".split()
    vocab = {token: index for index, token in enumerate(specials + words)}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def test_fill_mask_pipeline_on_a_saved_model(tmp_path):
    from transformers import pipeline

    tokenizer = tiny_wordpiece_tokenizer()
    model = make_model(PretrainEncoderForMaskedLM, vocab_size=len(tokenizer))
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    fill = pipeline("fill-mask", model=str(tmp_path), trust_remote_code=True, top_k=3)
    predictions = fill("the cat [MASK] on a mat")
    assert len(predictions) == 3
    scores = [p["score"] for p in predictions]
    assert scores == sorted(scores, reverse=True) and all(0 < s <= 1 for s in scores)
    assert all("[MASK]" not in p["sequence"] for p in predictions)


# --------------------------------------------------------------------------------------------------- Trainer
def _train_one_step(tmp_path, batch_size: int, accumulation: int, examples, model):
    from transformers import Trainer, TrainingArguments

    class CaptureGradNorm(Trainer):
        def training_step(self, *args, **kwargs):
            loss = super().training_step(*args, **kwargs)
            self.step_losses.append(loss.item())
            return loss

    args = TrainingArguments(
        output_dir=str(tmp_path / f"ga{accumulation}"),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        learning_rate=0.0,  # keep the weights: compare the first step's loss and gradient only
        max_grad_norm=1e9,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        dataloader_drop_last=False,
        seed=0,
    )
    trainer = CaptureGradNorm(model=model, args=args, train_dataset=examples)
    trainer.step_losses = []
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "grad_norm" in entry][0]
    return logged["loss"], logged["grad_norm"]


def test_gradient_accumulation_matches_a_full_batch_under_trainer(tmp_path):
    from torch.utils.data import Dataset

    ids = random_ids(16, 12, seed=7)
    # Uneven masking per example: averaging per micro-batch instead of per token would change the result.
    labels = torch.full_like(ids, -100)
    generator = torch.Generator().manual_seed(8)
    for row in range(16):
        count = 1 + row % 6
        positions = torch.randperm(12, generator=generator)[:count]
        labels[row, positions] = ids[row, positions]

    class Examples(Dataset):
        def __len__(self):
            return 16

        def __getitem__(self, index):
            return {"input_ids": ids[index], "labels": labels[index]}

    full = _train_one_step(tmp_path, 16, 1, Examples(), make_model(PretrainEncoderForMaskedLM).train())
    accumulated = _train_one_step(tmp_path, 8, 2, Examples(), make_model(PretrainEncoderForMaskedLM).train())
    assert full[0] == pytest.approx(accumulated[0], rel=1e-5)
    assert full[1] == pytest.approx(accumulated[1], rel=1e-4)

    # The same holds for the per-example classification losses.
    class Sentences(Examples):
        def __getitem__(self, index):
            return {"input_ids": ids[index], "labels": index % 3}

    full = _train_one_step(tmp_path, 16, 1, Sentences(), make_model(PretrainEncoderForSequenceClassification).train())
    accumulated = _train_one_step(
        tmp_path, 8, 2, Sentences(), make_model(PretrainEncoderForSequenceClassification).train()
    )
    assert full[0] == pytest.approx(accumulated[0], rel=1e-5)
    assert full[1] == pytest.approx(accumulated[1], rel=1e-4)


def test_run_mlm_metric_code_works_inside_a_users_trainer(tmp_path):
    """run_mlm.py's evaluation (preprocess_logits_for_metrics = argmax, then accuracy over labels != -100) reads
    logits of shape (B, L, V); in eval mode ours has that shape, so the user's own Trainer code runs as written."""
    from torch.utils.data import Dataset
    from transformers import Trainer, TrainingArguments

    ids = random_ids(12, 10, seed=3)
    labels = masked_labels(ids)

    class Examples(Dataset):
        def __len__(self):
            return 12

        def __getitem__(self, index):
            return {"input_ids": ids[index], "labels": labels[index]}

    def preprocess_logits_for_metrics(logits, labels):  # as in run_mlm.py
        if isinstance(logits, tuple):
            logits = logits[0]
        return logits.argmax(dim=-1)

    def compute_metrics(eval_preds):  # as in run_mlm.py, with the accuracy computed here instead of evaluate.load
        preds, refs = eval_preds
        refs, preds = refs.reshape(-1), preds.reshape(-1)
        mask = refs != -100
        return {"accuracy": float((preds[mask] == refs[mask]).mean())}

    model = make_model(PretrainEncoderForMaskedLM)
    args = TrainingArguments(output_dir=str(tmp_path / "trainer"), per_device_eval_batch_size=5, report_to="none",
                             use_cpu=True)
    trainer = Trainer(model=model, args=args, eval_dataset=Examples(), compute_metrics=compute_metrics,
                      preprocess_logits_for_metrics=preprocess_logits_for_metrics)
    metrics = trainer.evaluate()
    with torch.no_grad():
        expected = (model(ids, labels=labels).logits.argmax(-1)[labels != -100] == labels[labels != -100]).float()
    assert metrics["eval_accuracy"] == pytest.approx(expected.mean().item())
    assert math.isfinite(metrics["eval_loss"])  # Trainer's mean of per-batch losses


def test_deepcopy_and_train_eval_modes_do_not_change_outputs_without_dropout():
    model = make_model(PretrainEncoderForMaskedLM)
    clone = copy.deepcopy(model).train()
    ids = random_ids(1, 6)
    torch.testing.assert_close(model(ids).logits, clone(ids).logits)


def test_output_positions_compute_the_same_final_states_at_those_positions_only():
    model = make_model(PretrainEncoderModel)
    ids = random_ids(2, 10)
    positions = masked_labels(ids, rate=0.3) != -100
    full = model(ids).last_hidden_state
    selected = model(ids, output_positions=positions).last_hidden_state
    assert selected.shape == (int(positions.sum()), 32)
    torch.testing.assert_close(selected, full[positions], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="output_positions cannot be combined"):
        model(ids, output_positions=positions, output_hidden_states=True)
