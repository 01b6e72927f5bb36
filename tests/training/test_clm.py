"""The causal-LM objective (`objective: clm`): its data (tokenizer, packing, labels), the real CLI on a tiny decoder
(golden first losses, exact resume after a kill, two processes equal one), `hf-pretrain generate`, and continued
pretraining of transformers' GPT-2 and Llama with the step-0 loss equal to the model's own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers

from hf_pretrain.data.builtin import load_builtin_corpus
from hf_pretrain.data.collation import IGNORE_INDEX, CausalLMCollator
from hf_pretrain.data.packing import pack_dataset
from hf_pretrain.data.tokenizer import train_tokenizer

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

TINY_CLM = """\
objective: clm
model:
  config: {hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64,
           max_position_embeddings: 32}
tokenizer: {kind: bpe, vocab_size: 512}
data: {source: builtin, block_size: 32, max_documents: 300, validation_fraction: 0.1}
train: {batch_size: 8, lr: 3.0e-3, optimizer: muon, schedule: wsd, warmup: 0.2, max_steps: 12, eval_every: 6,
        eval_batches: 2, save_every: 3, keep_last: 10, seed: 3}
output: {log_with: [], progress_bar: false}
"""

# The first steps of the tiny clm recipe, fixed seed, fp32 on CPU. If a change alters them on purpose, update them
# and say why in the commit. (2026-12-02: the recipe trains with Muon, as clm-tiny does.)
GOLDEN_FIRST_LOSSES = [6.234, 6.2304, 6.1989, 6.1584, 6.1743]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return load_builtin_corpus()["text"][:300]


@pytest.fixture(scope="module")
def clm_tokenizer(texts):
    return train_tokenizer(texts, kind="bpe", vocab_size=320, layout="decoder", model_max_length=64)


@pytest.fixture()
def tiny_clm(tmp_path) -> Path:
    path = tmp_path / "tiny-clm.yaml"
    path.write_text(TINY_CLM)
    return path


# ----------------------------------------------------------------------------------------------- data
def test_a_clm_tokenizer_starts_prompts_with_bos_and_packing_ends_each_document_with_eos(clm_tokenizer, texts):
    import datasets

    ids = clm_tokenizer("def open(path):")["input_ids"]
    assert ids[0] == clm_tokenizer.bos_token_id and clm_tokenizer.eos_token_id not in ids
    short = sorted(texts, key=len)[50:90]  # short docstrings: several documents per block
    packed = pack_dataset(datasets.Dataset.from_dict({"text": short}), clm_tokenizer, block_size=64,
                          with_word_starts=False, use_cache=False).dataset
    starts_seen = 0
    for row in packed.with_format("numpy"):
        ids, positions = row["input_ids"].tolist(), row["position_ids"].tolist()
        for index, position in enumerate(positions[1:], start=1):  # (a row may start inside a long document)
            if position == 0:
                starts_seen += 1
                assert ids[index] == clm_tokenizer.bos_token_id and ids[index - 1] == clm_tokenizer.eos_token_id
    assert starts_seen > len(packed)  # rows hold several documents


def test_labels_never_ask_a_document_to_predict_the_next_ones_start():
    rows = [{"input_ids": [5, 6, 7, 8, 9, 10], "position_ids": [2, 3, 0, 1, 2, 0], "example_index": 0}]
    batch = CausalLMCollator(pad_token_id=0)(rows)
    # position t predicts token t + 1 (the model shifts): no target at the row's start or a document's start
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, IGNORE_INDEX, 8, 9, IGNORE_INDEX]]
    assert batch["position_ids"].tolist() == [[2, 3, 0, 1, 2, 0]]
    assert "position_ids" not in CausalLMCollator(pad_token_id=0, with_position_ids=False)(rows)


# ----------------------------------------------------------------------------------------------- the real CLI
def test_tiny_clm_run_trains_and_generates_through_the_cli(tmp_path, tiny_clm):
    run_dir = tmp_path / "run"
    result = run_cli(tmp_path, "pretrain", str(tiny_clm), f"output.dir={run_dir}")
    losses = step_losses(run_dir)
    assert sorted(losses) == list(range(1, 13))
    assert [losses[s] for s in range(1, 6)] == pytest.approx(GOLDEN_FIRST_LOSSES, abs=2e-4)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final_eval"]["loss"] < summary["initial_eval"]["loss"]
    assert "perplexity" in result.stdout and "per-document positions" in result.stderr
    assert "next-token accuracy" in result.stdout
    model = transformers.AutoModelForCausalLM.from_pretrained(run_dir / "final")
    assert type(model).__name__ == "PretrainDecoderForCausalLM"

    generated = run_cli(tmp_path, "generate", str(run_dir), "def open(path):", "--max-new-tokens", "8")
    assert generated.stdout.startswith("def open(path):")  # then whatever 12 steps of training make of it
    again = run_cli(tmp_path, "generate", str(run_dir), "def open(path):", "--max-new-tokens", "8")
    assert again.stdout == generated.stdout  # temperature 0: greedy, the same text every time
    bad = run_cli(tmp_path, "generate", str(run_dir), "x", "--max-new-tokens", "0", check=False)
    assert bad.returncode == 2 and "--max-new-tokens=0" in bad.stderr
    assert "sample continuations" in result.stdout

    run_cli(tmp_path, "export", str(run_dir))
    from huggingface_hub import ModelCard

    card = ModelCard.load(run_dir / "export" / "README.md")
    assert card.data.pipeline_tag == "text-generation" and 'pipeline("text-generation"' in card.text
    config = json.loads((run_dir / "export" / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"].endswith("PretrainDecoderForCausalLM")


def test_killed_clm_run_resumes_exactly(tmp_path, tiny_clm):
    reference, resumed, command, process = run_reference_and_start_another(tmp_path, tiny_clm, [])
    kill_when_step_logged(process, resumed / "metrics.jsonl", step=7)
    run_cli(tmp_path, *command[3:])
    assert step_losses(resumed) == step_losses(reference)
    assert_same_weights(final_weights(resumed), final_weights(reference))


@pytest.mark.skipif(sys.platform != "linux", reason="gloo multi-process test written for Linux")
def test_two_processes_train_the_clm_like_one(tmp_path, tiny_clm):
    one, two = tmp_path / "one", tmp_path / "two"
    run_cli(tmp_path, "pretrain", str(tiny_clm), f"output.dir={one}", "train.max_steps=4")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
         "-m", "hf_pretrain", "pretrain", str(tiny_clm), f"output.dir={two}", "train.max_steps=4",
         "train.batch_size=4"],
        env=cli_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    single, double = step_losses(one), step_losses(two)
    assert sorted(single) == sorted(double) == [1, 2, 3, 4]
    for step in single:
        assert double[step] == pytest.approx(single[step], abs=1e-5), step


# ----------------------------------------------------------------------------------------------- continuing GPT-2, Llama
def tiny_checkpoint(family: str, tokenizer, folder: Path) -> Path:
    small = dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                 pad_token_id=tokenizer.pad_token_id)
    if family == "gpt2":
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=64,
                                                                     **small))
    else:
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, intermediate_size=64,
            max_position_embeddings=64, **small))
    torch.manual_seed(0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_step_zero_loss_of_a_continued_causal_lm_equals_the_models_own(family, texts, clm_tokenizer, tmp_path):
    import datasets

    folder = tiny_checkpoint(family, clm_tokenizer, tmp_path / family)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    document = max(texts, key=len)
    packed = pack_dataset(datasets.Dataset.from_dict({"text": [document]}), clm_tokenizer, block_size=32,
                          with_word_starts=False, use_cache=False).dataset
    row = packed.with_format("numpy")[0]
    batch = CausalLMCollator(clm_tokenizer.pad_token_id, with_position_ids=False)([row])
    items = (batch["labels"] != IGNORE_INDEX).sum()
    with torch.no_grad():
        ours = model(**batch, num_items_in_batch=items).loss  # what the loop computes
        stock = model(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss
    assert abs(ours.item() - stock.item()) < 1e-5, (family, ours.item(), stock.item())


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_clm_continue_through_the_cli_keeps_the_class(family, clm_tokenizer, tmp_path):
    folder = tiny_checkpoint(family, clm_tokenizer, tmp_path / family)
    run_dir = tmp_path / "run"
    result = run_cli(tmp_path, "pretrain", "clm-continue", f"model.init_from={folder}", f"tokenizer.path={folder}",
                     f"output.dir={run_dir}", "data.max_documents=200", "data.block_size=32", "train.batch_size=4",
                     "train.max_steps=2", "train.eval_batches=1", "output.log_with=[]", "output.progress_bar=false")
    assert "rows of concatenated documents as run_clm.py makes them" in result.stderr
    assert sorted(step_losses(run_dir)) == [1, 2]
    config = json.loads((run_dir / "final" / "config.json").read_text())
    assert config["architectures"] == [type(transformers.AutoModelForCausalLM.from_pretrained(folder)).__name__]
    assert "auto_map" not in config
