"""Stock transformers architectures trained from scratch through the real CLI (`model.architecture`): golden losses
for each family, the special tokens each family names, per-document positions and attention for the decoders
(the loss of a packed row is the sum of its documents' own losses), ELECTRA's shared embeddings, final folders that
load where hf_pretrain is not installed, and an exact resume after kill -9."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_pretrain_cli import (  # noqa: E402
    assert_same_weights,
    cli_env,
    final_weights,
    kill_when_step_logged,
    run_cli,
    step_losses,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = "hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64"
CONFIGS = {"gpt2": "n_embd: 32, n_layer: 2, n_head: 2", "electra": TINY + ", embedding_size: 32"}
FAMILIES = {"bert": "mlm", "roberta": "mlm", "modernbert": "mlm", "llama": "clm", "gpt2": "clm", "electra": "rtd",
            "modernbert-rtd": "rtd"}


def stock_recipe(folder: Path, family: str) -> Path:
    architecture, objective = family.removesuffix("-rtd"), FAMILIES[family]
    path = folder / f"{family}.yaml"
    path.write_text(textwrap.dedent(f"""\
        objective: {objective}
        model:
          architecture: {architecture}
          config: {{{CONFIGS.get(architecture, TINY)}}}
        tokenizer: {{kind: bpe, vocab_size: 320}}
        data: {{source: builtin, block_size: 32, max_documents: 300, validation_fraction: 0.1}}
        train: {{batch_size: 8, lr: 3.0e-3, max_steps: 6, eval_every: 3, eval_batches: 2, save_every: 3, seed: 3}}
        output: {{log_with: [], progress_bar: false}}
        """))
    return path


def run_in_process(tmp_path: Path, monkeypatch, *args: str) -> int:
    from hf_pretrain.cli import main

    monkeypatch.setenv("HF_PRETRAIN_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return main(list(args))


# The first steps of each family's tiny recipe, fixed seed, fp32 on CPU (the families' own initializations).
GOLDEN_FIRST_LOSSES = {
    "bert": [5.7815, 5.73, 5.6597, 5.636],
    "roberta": [5.791, 5.7374, 5.6601, 5.6454],
    "modernbert": [5.7461, 5.7446, 5.6729, 5.675],
    "llama": [5.7663, 5.7334, 5.6941, 5.6562],
    "gpt2": [5.7766, 5.7059, 5.5911, 5.5377],
    "electra": [40.3674, 40.0646, 39.5835, 38.9614],
    "modernbert-rtd": [44.3983, 41.1926, 30.3492, 23.4571],
}
FINAL_CLASSES = {"bert": "BertForMaskedLM", "roberta": "RobertaForMaskedLM", "modernbert": "ModernBertForMaskedLM",
                 "llama": "LlamaForCausalLM", "gpt2": "GPT2LMHeadModel", "electra": "ElectraForPreTraining",
                 "modernbert-rtd": "ModernBertForTokenClassification"}


@pytest.fixture(scope="module")
def stock_runs(tmp_path_factory):
    """Each family trained once through `hf-pretrain pretrain` (in this process), {family: run folder}."""
    from hf_pretrain.cli import main

    folder = tmp_path_factory.mktemp("stock")
    runs = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_PRETRAIN_CACHE", str(folder / "cache"))
        patch.chdir(folder)
        for family in FAMILIES:
            runs[family] = folder / family
            assert main(["pretrain", str(stock_recipe(folder, family)), f"output.dir={runs[family]}", "--quiet"]) == 0
    return runs


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_stock_family_trains_to_its_golden_losses_and_writes_its_own_class(stock_runs, family):
    run = stock_runs[family]
    losses = step_losses(run)
    assert sorted(losses) == list(range(1, 7))
    assert [losses[step] for step in range(1, 5)] == pytest.approx(GOLDEN_FIRST_LOSSES[family], abs=2e-4)
    config = json.loads((run / "final" / "config.json").read_text())
    assert config["architectures"] == [FINAL_CLASSES[family]] and "auto_map" not in config
    assert not list((run / "final").glob("*.py"))  # no model code of ours: a stock folder
    if family == "modernbert":  # the registry's config default: [CLS] is never trained by masked-LM pretraining
        assert config["classifier_pooling"] == "mean"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final_eval"]["loss"] < summary["initial_eval"]["loss"]


def test_the_tokenizer_names_the_special_tokens_as_each_family_does(stock_runs):
    from transformers import AutoTokenizer

    expected = {"bert": ("[CLS]", "[SEP]", "[MASK]"), "modernbert": ("[CLS]", "[SEP]", "[MASK]"),
                "roberta": ("<s>", "</s>", "<mask>"), "llama": ("<s>", "</s>", None),
                "gpt2": ("<|startoftext|>", "<|endoftext|>", None)}
    for family, (start, end, mask) in expected.items():
        tokenizer = AutoTokenizer.from_pretrained(stock_runs[family] / "final")
        ids = tokenizer("some text")["input_ids"]
        assert tokenizer.convert_ids_to_tokens(ids[0]) == start, family
        if FAMILIES[family] == "mlm":
            assert tokenizer.convert_ids_to_tokens(ids[-1]) == end and tokenizer.mask_token == mask, family
        else:  # a decoder's document ends with eos in packing, a prompt does not
            assert tokenizer.eos_token == end and tokenizer.convert_ids_to_tokens(ids[-1]) != end, family
    roberta = json.loads((stock_runs["roberta"] / "final" / "config.json").read_text())
    assert roberta["max_position_embeddings"] >= 32 + roberta["pad_token_id"] + 1  # positions start after padding


def test_electra_shares_its_embeddings_between_generator_and_discriminator(stock_runs):
    from safetensors.torch import load_file
    from transformers import ElectraForMaskedLM, ElectraForPreTraining

    run = stock_runs["electra"]
    discriminator = ElectraForPreTraining.from_pretrained(run / "final")
    generator = ElectraForMaskedLM.from_pretrained(run / "generator")
    assert torch.equal(discriminator.get_input_embeddings().weight, generator.get_input_embeddings().weight)
    assert generator.config.hidden_size < discriminator.config.hidden_size  # rtd.generator_width: a quarter
    checkpoint = sorted((run / "checkpoints").glob("step-*"))[-1] / "model" / "model.safetensors"
    assert not [name for name in load_file(str(checkpoint)) if name.startswith("generator.") and "word_embeddings" in name]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_a_packed_decoder_row_costs_the_sum_of_its_documents_own_losses(tmp_path, monkeypatch, family):
    """Per-document positions on a packed row (and no cache): each document attends only to itself, and the loss
    the loop trains on equals the model's own loss on each document alone, summed (a one-document block is the
    model's own loss)."""
    from hf_pretrain.recipe import load_recipe
    from hf_pretrain.training.loop import Pretraining

    monkeypatch.setenv("HF_PRETRAIN_CACHE", str(tmp_path / "cache"))
    recipe = load_recipe(str(stock_recipe(tmp_path, family)), [f"output.dir={tmp_path / 'run'}"])
    run = Pretraining(recipe)
    objective, model = run.objective, run.accelerator.unwrap_model(run.model).eval()
    batch = next(iter(run.batches.loader))
    assert "position_ids" in batch
    pieces = 0
    with torch.no_grad():
        packed = objective.loss(model, batch, objective.count_items(batch)) * objective.count_items(batch)
        separate = torch.zeros(())
        for row, positions in zip(batch["input_ids"], batch["position_ids"]):
            starts = sorted({0, *(positions == 0).nonzero().flatten().tolist()}) + [len(positions)]
            for start, end in zip(starts[:-1], starts[1:]):
                document = row[start:end][None]  # (1, n): alone, the model's own positions and its own loss
                if document.shape[1] > 1:
                    separate += model(document, labels=document, num_items_in_batch=torch.tensor(1)).loss
                    pieces += 1
    assert pieces > len(batch["input_ids"])  # rows hold several documents
    assert float(packed) == pytest.approx(float(separate), rel=1e-6)


def test_final_folders_load_where_hf_pretrain_is_not_installed(stock_runs, tmp_path):
    script = textwrap.dedent("""
        import sys
        sys.modules["hf_pretrain"] = None  # `import hf_pretrain` now raises ImportError: prove we never need it
        import torch
        from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForPreTraining, AutoTokenizer
        from transformers import AutoModelForTokenClassification, pipeline
        loaders = {"mlm": AutoModelForMaskedLM, "clm": AutoModelForCausalLM}
        for family, objective, folder in zip(sys.argv[1::3], sys.argv[2::3], sys.argv[3::3]):
            if objective == "rtd":
                loader = AutoModelForPreTraining if family == "electra" else AutoModelForTokenClassification
            else:
                loader = loaders[objective]
            model = loader.from_pretrained(folder)  # no trust_remote_code
            tokenizer = AutoTokenizer.from_pretrained(folder)
            if objective == "mlm":
                print(family, len(pipeline("fill-mask", model=folder)(f"some {tokenizer.mask_token} text")))
            elif objective == "clm":
                print(family, pipeline("text-generation", model=folder)("some", max_new_tokens=3, do_sample=False)[0]["generated_text"][:4])
            else:
                print(family, tuple(model(**tokenizer(["some text"], return_tensors="pt")).logits.shape[:2]))
    """)
    arguments = [str(value) for family in FAMILIES for value in (family, FAMILIES[family], stock_runs[family] / "final")]
    env = {**cli_env(tmp_path), "PYTHONPATH": ""}
    result = subprocess.run([sys.executable, "-c", script, *arguments], env=env, capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [line.split()[0] for line in result.stdout.splitlines()] == list(FAMILIES)


@pytest.mark.slow
def test_a_killed_stock_llama_run_resumes_exactly(tmp_path):
    recipe = stock_recipe(tmp_path, "llama")
    settings = ["train.max_steps=12", "train.save_every=2", "train.eval_every=100"]
    reference, run_dir = tmp_path / "reference", tmp_path / "run"
    run_cli(tmp_path, "pretrain", str(recipe), f"output.dir={reference}", *settings)
    process = subprocess.Popen([sys.executable, "-m", "hf_pretrain", "pretrain", str(recipe), f"output.dir={run_dir}",
                                *settings], env=cli_env(tmp_path), cwd=tmp_path, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    kill_when_step_logged(process, run_dir / "metrics.jsonl", step=5)
    assert not (run_dir / "final").exists()
    result = run_cli(tmp_path, "pretrain", str(recipe), f"output.dir={run_dir}", *settings)
    assert "resumed from" in result.stderr
    assert step_losses(run_dir) == step_losses(reference)
    assert_same_weights(final_weights(run_dir), final_weights(reference))


def test_a_stock_architecture_is_refused_for_an_objective_it_cannot_train(tmp_path, monkeypatch, capsys):
    assert run_in_process(tmp_path, monkeypatch, "pretrain", "clm-tiny", "model.architecture=bert") == 2
    assert "model.architecture='bert' cannot train objective 'clm'; allowed: hf_pretrain, llama, gpt2" in (
        capsys.readouterr().err)
    assert run_in_process(tmp_path, monkeypatch, "pretrain", "mlm-tiny", "model.architecture=modernbert",
                          "model.config.hiden_size=64", "--dry-run") == 2
    assert "unknown key 'model.config.hiden_size' for model.architecture='modernbert' (ModernBertConfig); did you " \
           "mean 'model.config.hidden_size'?" in capsys.readouterr().err


@pytest.mark.parametrize("architecture", ["bert", "roberta", "modernbert"])
def test_a_shipped_recipe_switched_to_a_stock_architecture_leaves_out_its_own_family_keys(
        tmp_path, monkeypatch, capsys, architecture):
    """mlm-tiny sets first_layer_attn_norm (our encoder's field, which no stock config has): switched to a stock
    architecture the recipe still checks, and the stock config is built without that key."""
    from hf_pretrain.recipe import load_recipe
    from hf_pretrain.training.objectives.base import own_family_keys

    assert run_in_process(tmp_path, monkeypatch, "pretrain", "mlm-tiny", f"model.architecture={architecture}",
                          "--dry-run") == 0
    assert own_family_keys(load_recipe("mlm-tiny", [f"model.architecture={architecture}"])) == [
        "first_layer_attn_norm"]
