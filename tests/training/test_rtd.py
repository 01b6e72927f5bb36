"""Replaced-token detection (`objective: rtd`, ELECTRA): the generator/discriminator model (shared embeddings,
replacements sampled from the collator's draws, what each loss sees), the real CLI on a tiny model (golden first
losses, exact resume after a kill, two processes equal one), and the folders a run hands on: the discriminator as
an ordinary encoder checkpoint, the generator as a fill-mask model."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file

from hf_pretrain.data.builtin import load_builtin_corpus
from hf_pretrain.data.masking import ReplacedTokenCollator
from hf_pretrain.data.packing import pack_dataset
from hf_pretrain.data.tokenizer import train_tokenizer
from hf_pretrain.models import PretrainEncoderConfig, PretrainEncoderForMaskedLM
from hf_pretrain.models.replaced_token_detection import ReplacedTokenDetectionPretrainer, generator_config
from hf_pretrain.recipe import RecipeError, load_recipe

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_pretrain_cli import (  # noqa: E402
    assert_same_weights,
    cli_env,
    final_weights,
    free_port,
    kill_when_step_logged,
    run_cli,
    run_reference_and_start_another,
    step_losses,
)

TINY_RTD = """\
objective: rtd
model:
  config: {hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64,
           max_position_embeddings: 32}
tokenizer: {kind: bpe, vocab_size: 512}
data: {source: builtin, block_size: 32, max_documents: 300, validation_fraction: 0.1}
masking: {mlm_probability: 0.15}
rtd: {generator_width: 0.5}
train: {batch_size: 8, lr: 3.0e-3, schedule: wsd, warmup: 0.2, max_steps: 12, eval_every: 6, eval_batches: 2,
        save_every: 3, keep_last: 10, seed: 3}
output: {log_with: [], progress_bar: false}
"""

# The first steps of the tiny rtd recipe (generator MLM loss + 50 x detection loss), fixed seed, fp32 on CPU. If a
# change alters them on purpose, update them and say why in the commit.
GOLDEN_FIRST_LOSSES = [40.7151, 40.7455, 39.0594, 36.8175, 35.2886]


@pytest.fixture(scope="module")
def tokenizer():
    texts = load_builtin_corpus()["text"][:300]
    return train_tokenizer(texts, kind="bpe", vocab_size=320, layout="encoder", model_max_length=64)


@pytest.fixture(scope="module")
def batch(tokenizer):
    import datasets

    texts = load_builtin_corpus()["text"][:40]
    packed = pack_dataset(datasets.Dataset.from_dict({"text": texts}), tokenizer, block_size=32,
                          with_word_starts=False, use_cache=False).dataset
    rows = [packed.with_format("numpy")[i] for i in range(4)]
    rows = [{key: (value.tolist() if hasattr(value, "tolist") else value) for key, value in row.items()} for row in rows]
    return ReplacedTokenCollator(tokenizer, mlm_probability=0.3, seed=1)(rows)


def tiny_pretrainer(tokenizer, tie: bool = True) -> ReplacedTokenDetectionPretrainer:
    torch.manual_seed(0)
    discriminator = PretrainEncoderConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                          num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
                                          tie_word_embeddings=tie)
    return ReplacedTokenDetectionPretrainer(discriminator, generator_config(discriminator, 0.25, None))


@pytest.fixture()
def tiny_rtd(tmp_path) -> Path:
    path = tmp_path / "tiny-rtd.yaml"
    path.write_text(TINY_RTD)
    return path


# ----------------------------------------------------------------------------------------------- the model
def test_the_generator_is_a_narrow_encoder_reading_the_discriminators_embeddings(tokenizer):
    model = tiny_pretrainer(tokenizer)
    generator, discriminator = model.generator.config, model.discriminator.config
    assert (generator.hidden_size, generator.num_attention_heads) == (8, 1)  # 1/4 wide, head dimension kept (8)
    assert generator.embedding_size == discriminator.hidden_size == 32
    assert generator.intermediate_size == 16 and generator.num_hidden_layers == 2
    shared = model.discriminator.model.embeddings.tok_embeddings.weight
    assert model.generator.model.embeddings.tok_embeddings.weight is shared
    assert model.generator.decoder.weight is shared  # tied output rows: the shared matrix too
    assert model.get_input_embeddings().weight is shared
    untied = tiny_pretrainer(tokenizer, tie=False)
    assert untied.generator.decoder.weight is not untied.discriminator.model.embeddings.tok_embeddings.weight


def test_replacements_come_from_the_draws_and_only_replaced_tokens_are_labelled_replaced(tokenizer, batch):
    model = tiny_pretrainer(tokenizer).eval()
    seen = {}
    model.discriminator.register_forward_pre_hook(lambda module, args: seen.update(ids=args[0].clone()))
    sums = model(**batch)
    masked = batch["labels"] != -100
    original = torch.where(masked, batch["labels"], batch["input_ids"])
    assert torch.equal(seen["ids"][~masked], original[~masked])  # unmasked positions: the original tokens
    replaced = (seen["ids"] != original)
    assert not replaced[~masked].any()
    assert int(sums.replaced) == int(replaced.sum()) and int(sums.masked) == int(masked.sum())
    assert int(sums.scored) == batch["input_ids"].numel()  # packed rows: every token is scored
    # The same draws give the same replacements; other draws give other ones.
    again = model(**batch)
    assert torch.equal(again.replaced, sums.replaced)
    first = seen["ids"].clone()
    model(**{**batch, "sampling_uniforms": 1 - batch["sampling_uniforms"]})
    assert not torch.equal(seen["ids"][masked], first[masked])


def test_sampling_follows_the_generators_distribution(tokenizer, batch):
    """With draws u, the sample is the first token whose cumulative probability exceeds u: at u = 0 the first
    token with non-zero probability (id 0 here, as softmax probabilities are all positive)."""
    model = tiny_pretrainer(tokenizer).eval()
    seen = {}
    model.discriminator.register_forward_pre_hook(lambda module, args: seen.update(ids=args[0].clone()))
    model(**{**batch, "sampling_uniforms": torch.zeros_like(batch["sampling_uniforms"])})
    masked = batch["labels"] != -100
    assert (seen["ids"][masked] == 0).all()


def test_the_generator_loss_is_its_masked_lm_loss_and_gets_no_gradient_from_detection(tokenizer, batch):
    model = tiny_pretrainer(tokenizer).train()
    sums = model(**batch)
    reference = PretrainEncoderForMaskedLM(model.generator.config)
    reference.load_state_dict(model.generator.state_dict())
    reference.train()
    items = (batch["labels"] != -100).sum()
    expected = reference(input_ids=batch["input_ids"], labels=batch["labels"], position_ids=batch["position_ids"]).loss
    assert (sums.generator_loss_sum / items).item() == pytest.approx(expected.item(), abs=1e-5)

    sums.detection_loss_sum.backward()
    generator_only = [p for n, p in model.generator.named_parameters() if "tok_embeddings" not in n]
    assert all(p.grad is None or not p.grad.any() for p in generator_only)  # sampling is not differentiated
    assert model.discriminator.detector.weight.grad.abs().sum() > 0
    assert model.get_input_embeddings().weight.grad.abs().sum() > 0  # the shared rows learn from detection too


def test_collator_draws_depend_on_the_example_not_the_batch(tokenizer):
    rows = [{"input_ids": list(range(5, 25)), "position_ids": list(range(20)), "example_index": i} for i in range(3)]
    collator = ReplacedTokenCollator(tokenizer, seed=4)
    together = collator(rows)["sampling_uniforms"]
    alone = collator([rows[2]])["sampling_uniforms"]
    assert torch.equal(together[2], alone[0]) and not torch.equal(together[0], together[1])
    collator.set_epoch(1)
    assert not torch.equal(collator([rows[2]])["sampling_uniforms"], alone)


# ----------------------------------------------------------------------------------------------- the recipe
def test_recipe_rules_for_rtd(tmp_path, tiny_rtd):
    assert load_recipe(str(tiny_rtd)).rtd.generator_width == 0.5
    with pytest.raises(RecipeError, match="rtd.generator_width=0.5.*objective rtd"):
        load_recipe(str(tiny_rtd), ["objective=mlm"])
    with pytest.raises(RecipeError, match="rtd.generator_width"):
        load_recipe(str(tiny_rtd), ["rtd.generator_width=0"])
    with pytest.raises(RecipeError, match="model.init_from"):
        load_recipe(str(tiny_rtd), [f"model.init_from={tmp_path}"])


# ----------------------------------------------------------------------------------------------- the real CLI
def test_tiny_rtd_run_through_the_cli_hands_on_a_discriminator_and_a_generator(tmp_path, tiny_rtd, caplog):
    run_dir = tmp_path / "run"
    result = run_cli(tmp_path, "pretrain", str(tiny_rtd), f"output.dir={run_dir}")
    losses = step_losses(run_dir)
    assert sorted(losses) == list(range(1, 13))
    assert [losses[s] for s in range(1, 6)] == pytest.approx(GOLDEN_FIRST_LOSSES, abs=2e-4)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final_eval"]["loss"] < summary["initial_eval"]["loss"]
    assert "detection accuracy" in result.stdout

    # final/: the discriminator, an ordinary encoder-family checkpoint; its encoder loads into every head.
    config = json.loads((run_dir / "final" / "config.json").read_text())
    assert config["architectures"] == ["PretrainEncoderForReplacedTokenDetection"]
    discriminator = transformers.AutoModelForPreTraining.from_pretrained(run_dir / "final")
    from hf_pretrain.cli.pretraining import check_final_folder_loads  # the quickstart's check, with its saved head

    caplog.set_level(logging.DEBUG, logger="hf_pretrain")
    check_final_folder_loads(str(run_dir / "final"))
    assert "AutoModelForPreTraining.from_pretrained" in caplog.text
    classifier, info = transformers.AutoModelForSequenceClassification.from_pretrained(
        run_dir / "final", num_labels=3, output_loading_info=True)
    assert set(info["missing_keys"]) == {"classifier.weight", "classifier.bias"}
    assert torch.equal(classifier.model.layers[0].attn.qkv_proj.weight, discriminator.model.layers[0].attn.qkv_proj.weight)
    # generator/: a fill-mask model whose embeddings are the discriminator's.
    generator = transformers.AutoModelForMaskedLM.from_pretrained(run_dir / "generator")
    assert torch.equal(generator.model.embeddings.tok_embeddings.weight,
                       discriminator.model.embeddings.tok_embeddings.weight)
    tokenizer = transformers.AutoTokenizer.from_pretrained(run_dir / "generator")
    fill = transformers.pipeline("fill-mask", model=generator, tokenizer=tokenizer)
    assert len(fill(f"def open({tokenizer.mask_token}):")) == 5

    run_cli(tmp_path, "export", str(run_dir))
    from huggingface_hub import ModelCard

    card = ModelCard.load(run_dir / "export" / "README.md")
    assert card.data.pipeline_tag == "feature-extraction" and "replaced-token detection" in card.text
    exported = json.loads((run_dir / "export" / "config.json").read_text())
    assert exported["auto_map"]["AutoModelForPreTraining"].endswith("PretrainEncoderForReplacedTokenDetection")


def test_killed_rtd_run_resumes_exactly(tmp_path, tiny_rtd):
    reference, resumed, command, process = run_reference_and_start_another(tmp_path, tiny_rtd, [])
    kill_when_step_logged(process, resumed / "metrics.jsonl", step=7)
    run_cli(tmp_path, *command[3:])
    assert step_losses(resumed) == step_losses(reference)
    assert_same_weights(final_weights(resumed), final_weights(reference))
    assert_same_weights(load_file(str(resumed / "generator" / "model.safetensors")),
                        load_file(str(reference / "generator" / "model.safetensors")))


@pytest.mark.skipif(sys.platform != "linux", reason="gloo multi-process test written for Linux")
def test_two_processes_train_rtd_like_one(tmp_path, tiny_rtd):
    one, two = tmp_path / "one", tmp_path / "two"
    run_cli(tmp_path, "pretrain", str(tiny_rtd), f"output.dir={one}", "train.max_steps=4")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
         "-m", "hf_pretrain", "pretrain", str(tiny_rtd), f"output.dir={two}", "train.max_steps=4",
         "train.batch_size=4"],
        env=cli_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    single, double = step_losses(one), step_losses(two)
    assert sorted(single) == sorted(double) == [1, 2, 3, 4]
    for step in single:
        assert double[step] == pytest.approx(single[step], abs=1e-4), step
