"""`hf-pretrain export RUN --as llama|modernbert|stock`: our families converted to stock transformers classes, only
where the conversion is exact (fp32 logits within 1e-5 on a padded batch of varied lengths, greedy generate()'s
tokens), refused before anything is written otherwise; the folder is an ordinary model: it loads without
trust_remote_code where hf_pretrain is not installed, its card says what it was converted from, and fine-tuning,
embed and sentence-transformers take it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import tiny_models
import torch

from hf_pretrain.cli import main
from hf_pretrain.hub.stock_export import PARITY_TOLERANCE, check_parity, stock_problems, to_stock


def randomize(model) -> None:
    """Norm gains and biases away from their 1 and 0, so a wrong mapping of any of them shows."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm.weight" in name:
                parameter.copy_(1 + 0.2 * torch.randn(parameter.shape, generator=generator))
            else:
                parameter.copy_((0.05 if name.endswith("bias") else 0.08) * torch.randn(parameter.shape,
                                                                                        generator=generator))


def encoder(cls, **config):
    from hf_pretrain.models import PretrainEncoderConfig

    settings = dict(vocab_size=128, hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=96,
                    num_labels=3, first_layer_attn_norm=False, **config)
    model = cls(PretrainEncoderConfig(**settings))
    randomize(model)
    return model.eval()


@pytest.mark.parametrize("tied", [True, False])
def test_the_decoder_is_exactly_llama_logits_and_greedy_tokens(tied):
    from hf_pretrain.models import PretrainDecoderConfig, PretrainDecoderForCausalLM

    ours = PretrainDecoderForCausalLM(PretrainDecoderConfig(
        vocab_size=128, hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=96,
        bos_token_id=1, eos_token_id=2, tie_word_embeddings=tied, attention_bias=not tied, mlp_bias=not tied))
    randomize(ours)
    stock = to_stock(ours, "llama")
    assert type(stock).__name__ == "LlamaForCausalLM"
    report = check_parity(ours, stock, pad_id=0)
    assert report["max_abs_logit_difference"] <= PARITY_TOLERANCE and report["greedy_tokens_equal"]


@pytest.mark.parametrize("head, stock_class", [
    ("PretrainEncoderForMaskedLM", "ModernBertForMaskedLM"),
    ("PretrainEncoderForReplacedTokenDetection", "ModernBertForTokenClassification"),
    ("PretrainEncoderForSequenceClassification", "ModernBertForSequenceClassification"),
    ("PretrainEncoderForTokenClassification", "ModernBertForTokenClassification"),
])
@pytest.mark.parametrize("tied", [True, False])
def test_the_encoder_without_a_first_attention_norm_is_exactly_modernbert(head, stock_class, tied):
    import hf_pretrain.models as models

    ours = encoder(getattr(models, head), tie_word_embeddings=tied, norm_bias=tied, attention_bias=tied, mlp_bias=tied)
    stock = to_stock(ours, "modernbert")
    assert type(stock).__name__ == stock_class
    assert check_parity(ours, stock, pad_id=0)["max_abs_logit_difference"] <= PARITY_TOLERANCE


@pytest.mark.parametrize("recipe", ["mlm-tiny", "clm-tiny"])
def test_the_quickstart_and_clm_tiny_recipes_convert_to_stock_classes(recipe):
    """The shipped tiny recipes' model configs have an exact stock equivalent (mlm-tiny since it sets
    first_layer_attn_norm: false), so `export --as modernbert` / `--as llama` takes their runs."""
    from hf_pretrain.models import PretrainDecoderConfig, PretrainEncoderConfig
    from hf_pretrain.recipe import load_recipe

    config = load_recipe(recipe).model.config
    family, stock = (PretrainEncoderConfig, "modernbert") if recipe == "mlm-tiny" else (PretrainDecoderConfig, "llama")
    assert stock_problems(family(**config), stock) == []


def test_a_config_with_no_stock_equivalent_names_the_field_and_what_the_stock_class_needs():
    from hf_pretrain.models import PretrainDecoderConfig, PretrainEncoderConfig

    assert stock_problems(PretrainEncoderConfig(first_layer_attn_norm=False), "modernbert") == []
    default = stock_problems(PretrainEncoderConfig(), "modernbert")
    assert len(default) == 1 and default[0].startswith("first_layer_attn_norm=True: ModernBERT's first block has no "
                                                       "attention norm")
    rms = stock_problems(PretrainEncoderConfig(first_layer_attn_norm=False, norm_type="rmsnorm"), "modernbert")
    assert rms == ["norm_type='rmsnorm': ModernBERT's norms are LayerNorm (norm_type='layernorm')"]
    layernorm = stock_problems(PretrainDecoderConfig(norm_type="layernorm", embedding_norm=True), "llama")
    assert [line.split(":")[0] for line in layernorm] == ["norm_type='layernorm'", "embedding_norm=True"]
    assert stock_problems(PretrainDecoderConfig(), "modernbert") == [
        "model_type='hf_pretrain_decoder' converts to llama, not 'modernbert'"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stock-export")
    return {"clm": tiny_models.make_run_dir(folder / "clm", "clm"),
            "mlm": tiny_models.make_run_dir(folder / "mlm", "mlm", first_layer_attn_norm=False),
            "mlm-default": tiny_models.make_run_dir(folder / "mlm-default", "mlm")}


def test_export_as_stock_writes_an_ordinary_model_folder_with_its_card(runs, capsys):
    assert main(["export", str(runs["clm"]), "--as", "llama"]) == 0
    assert main(["export", str(runs["mlm"]), "--as", "stock"]) == 0  # the one stock class that fits: ModernBERT
    for run, stock_class, model_type in ((runs["clm"] / "export-llama", "LlamaForCausalLM", "llama"),
                                         (runs["mlm"] / "export-modernbert", "ModernBertForMaskedLM", "modernbert")):
        config = json.loads((run / "config.json").read_text())
        assert config["architectures"] == [stock_class] and config["model_type"] == model_type
        assert "auto_map" not in config and not list(run.glob("*.py"))
        assert (run / "tokenizer.json").is_file()
        card = (run / "README.md").read_text()
        metadata = card.split("---")[1]
        assert "custom_code" not in metadata and f"- {model_type}" in metadata
        assert "trust_remote_code" not in card.split("## How to use")[1].split("## Training")[0]
        assert "Converted from `Pretrain" in card and "differ by at most 0.0e+00" in card
    assert "the same greedy tokens" in capsys.readouterr().err


def test_export_refuses_a_conversion_that_is_not_exact_before_writing_anything(runs, capsys):
    out = runs["mlm-default"] / "export-modernbert"
    assert main(["export", str(runs["mlm-default"]), "--as", "modernbert"]) == 2
    error = capsys.readouterr().err
    assert "first_layer_attn_norm=True: ModernBERT's first block has no attention norm" in error
    assert "model.config.first_layer_attn_norm=false" in error and not out.exists()
    assert main(["export", str(runs["clm"]), "--as", "modernbert"]) == 2
    assert "a hf_pretrain_decoder model does not convert to modernbert; it converts to llama" in capsys.readouterr().err


def test_the_stock_folders_load_where_hf_pretrain_is_not_installed(runs, tmp_path):
    for run, flag in ((runs["clm"], "llama"), (runs["mlm"], "modernbert")):
        if not (run / f"export-{flag}").exists():
            assert main(["export", str(run), "--as", flag]) == 0
    script = textwrap.dedent("""
        import sys
        sys.modules["hf_pretrain"] = None  # `import hf_pretrain` now raises ImportError: prove we never need it
        from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, pipeline
        llama, modernbert = sys.argv[1:3]
        AutoModelForCausalLM.from_pretrained(llama)
        print(pipeline("text-generation", model=llama)("alpha", max_new_tokens=4, do_sample=False)[0]["generated_text"])
        AutoModelForMaskedLM.from_pretrained(modernbert)
        print(len(pipeline("fill-mask", model=modernbert)("alpha [MASK] beta")))
    """)
    result = subprocess.run([sys.executable, "-c", script, str(runs["clm"] / "export-llama"),
                             str(runs["mlm"] / "export-modernbert")], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[0].startswith("alpha") and result.stdout.splitlines()[1] == "5"


def test_finetune_embed_and_sentence_transformers_take_the_stock_encoder(runs, tmp_path):
    stock = runs["mlm"] / "export-modernbert"
    if not stock.exists():
        assert main(["export", str(runs["mlm"]), "--as", "modernbert"]) == 0
    rows = tiny_models.write_jsonl(tmp_path / "train.jsonl", tiny_models.sentiment_rows(80, seed=1))
    out = tmp_path / "finetuned"
    assert main(["finetune", "finetune-classification", f"model={stock}", "data.source=files",
                 f"data.train_files={rows}", f"output.dir={out}", "train.epochs=1", "--quiet"]) == 0
    assert json.loads((out / "model" / "config.json").read_text())["architectures"] == [
        "ModernBertForSequenceClassification"]
    texts = tmp_path / "texts.txt"
    texts.write_text("alpha beta\ngamma\n")
    assert main(["embed", str(stock), str(texts), "--out", str(tmp_path / "v.npy"), "--quiet"]) == 0
    from sentence_transformers import SentenceTransformer

    vectors = SentenceTransformer(str(stock), device="cpu").encode(["alpha beta", "gamma"])
    assert vectors.shape == (2, 32)
