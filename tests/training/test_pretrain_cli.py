"""The pretraining engine through the real CLI on a tiny recipe: golden losses, kill-and-resume exactness,
corrupted-checkpoint fallback, the NaN guard, 2-process equivalence and recipe errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

TINY_RECIPE = """\
# tiny: the engine tests' recipe
objective: mlm
model:
  config: {hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64,
           max_position_embeddings: 32}
tokenizer: {kind: bpe, vocab_size: 512}
data: {source: builtin, block_size: 32, max_documents: 400, validation_fraction: 0.1}
masking: {mlm_probability: 0.3}
train: {batch_size: 8, lr: 3.0e-3, schedule: wsd, warmup: 0.2, max_steps: 16, eval_every: 8, eval_batches: 2,
        save_every: 4, keep_last: 10, seed: 3}
output: {log_with: [], progress_bar: false}
"""

# The first steps of the tiny recipe, fixed seed, fp32 on CPU. If a change alters them on purpose (a new
# initialization, another masking rule), update them and say why in the commit.
GOLDEN_FIRST_LOSSES = [6.2258, 6.2036, 6.176, 6.1745, 6.1039]


@pytest.fixture(scope="module")
def shared_tokenizer(tmp_path_factory) -> Path:
    """One tokenizer for the tests that compare runs: those test the loop, not tokenizer training."""
    from hf_pretrain.data.builtin import load_builtin_corpus
    from hf_pretrain.data.tokenizer import train_tokenizer

    folder = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(load_builtin_corpus()["text"][:400], kind="bpe", vocab_size=512).save_pretrained(folder)
    return folder


@pytest.fixture()
def tiny_recipe(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_RECIPE)
    return path


@pytest.fixture()
def tiny_recipe_fixed_tokenizer(tmp_path, shared_tokenizer) -> Path:
    path = tmp_path / "tiny-fixed-tokenizer.yaml"
    path.write_text(TINY_RECIPE.replace("tokenizer: {kind: bpe, vocab_size: 512}", f"tokenizer: {{path: {shared_tokenizer}}}"))
    return path


def cli_env(tmp_path: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_PRETRAIN_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    return env


def run_cli(tmp_path: Path, *args: str, check: bool = True, timeout: int = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "hf_pretrain", *args],
        env=cli_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check:
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def step_losses(run_dir: Path) -> dict[int, float]:
    losses = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "loss" in record:
            assert record["step"] not in losses, f"step {record['step']} logged twice"
            losses[record["step"]] = record["loss"]
    return losses


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "final" / "model.safetensors"))


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


# ----------------------------------------------------------------------------------------------- tests
def test_tiny_run_trains_logs_and_leaves_a_loadable_final_folder(tmp_path, tiny_recipe):
    run_dir = tmp_path / "run"
    result = run_cli(tmp_path, "pretrain", str(tiny_recipe), f"output.dir={run_dir}")
    losses = step_losses(run_dir)
    assert sorted(losses) == list(range(1, 17))
    assert [losses[s] for s in range(1, 6)] == pytest.approx(GOLDEN_FIRST_LOSSES, abs=2e-4)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final_eval"]["loss"] < summary["initial_eval"]["loss"]
    assert "eval loss" in result.stdout and "masked-token accuracy" in result.stdout
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_record = next(r for r in records if "loss" in r)
    for key in ("lr", "grad_norm", "tokens_per_s", "mfu", "data_wait"):
        assert key in train_record
    assert (run_dir / "recipe.yaml").exists() and (run_dir / "tokenizer" / "tokenizer.json").exists()
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    model = AutoModelForMaskedLM.from_pretrained(run_dir / "final", trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "final")
    assert model(**tokenizer("def open(path): return a file", return_tensors="pt")).logits.shape[-1] >= len(tokenizer)


def test_the_same_seed_gives_the_same_losses(tmp_path, tiny_recipe_fixed_tokenizer):
    first = run_cli(tmp_path, "pretrain", str(tiny_recipe_fixed_tokenizer), f"output.dir={tmp_path / 'a'}", "train.max_steps=4")
    second = run_cli(tmp_path, "pretrain", str(tiny_recipe_fixed_tokenizer), f"output.dir={tmp_path / 'b'}", "train.max_steps=4")
    assert first.returncode == second.returncode == 0
    assert step_losses(tmp_path / "a") == step_losses(tmp_path / "b")


def kill_when_step_logged(process: subprocess.Popen, metrics: Path, step: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the run ended before step {step} (exit {process.returncode})")
        if metrics.exists() and any(
            json.loads(line).get("step", 0) >= step and "loss" in json.loads(line)
            for line in metrics.read_text().splitlines()
            if line.strip()
        ):
            process.send_signal(signal.SIGKILL)
            process.wait()
            return
        time.sleep(0.02)
    process.kill()
    raise AssertionError(f"step {step} never logged")


DAE_SETTINGS = ["objective=dae", "model.config.decoder_layers=1", "noise.word_delete_rate=0.6"]


@pytest.mark.parametrize("objective", ["mlm", "dae"])
def test_killed_run_resumes_exactly(tmp_path, tiny_recipe_fixed_tokenizer, objective):
    """SIGKILL mid-epoch in a later epoch, with gradient accumulation and a DataLoader worker; the resumed run
    ends with the uninterrupted run's per-step losses and final weights, bit for bit."""
    settings = ["train.grad_accum=2", "train.num_workers=1", "train.max_steps=16", "data.max_documents=40",
                "train.save_every=3", *(DAE_SETTINGS if objective == "dae" else [])]
    reference = tmp_path / "reference"
    run_cli(tmp_path, "pretrain", str(tiny_recipe_fixed_tokenizer), f"output.dir={reference}", *settings)

    resumed = tmp_path / "resumed"
    command = [sys.executable, "-m", "hf_pretrain", "pretrain", str(tiny_recipe_fixed_tokenizer), f"output.dir={resumed}", *settings]
    process = subprocess.Popen(command, env=cli_env(tmp_path), cwd=tmp_path, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    kill_when_step_logged(process, resumed / "metrics.jsonl", step=10)
    assert not (resumed / "final").exists()
    state = json.loads((sorted((resumed / "checkpoints").glob("step-*"))[-1] / "trainer_state.json").read_text())
    assert state["epoch"] >= 1 and state["batches_in_epoch"] > 0, state  # the kill was mid-epoch, not in epoch 0

    result = run_cli(tmp_path, *command[3:])
    assert "resumed from" in result.stdout
    assert step_losses(resumed) == step_losses(reference)
    assert_same_weights(final_weights(resumed), final_weights(reference))


def test_corrupted_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, tiny_recipe):
    run_dir = tmp_path / "run"
    settings = ["train.max_steps=8", f"output.dir={run_dir}"]
    run_cli(tmp_path, "pretrain", str(tiny_recipe), *settings)
    reference_losses, reference_weights = step_losses(run_dir), final_weights(run_dir)
    newest = sorted((run_dir / "checkpoints").glob("step-*"))[-1]
    assert newest.name == "step-00000008"
    weights = newest / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: len(weights.read_bytes()) // 2])  # a torn write
    result = run_cli(tmp_path, "pretrain", str(tiny_recipe), *settings)
    assert "step-00000008 is unusable" in result.stdout and "falling back" in result.stdout
    assert "resumed from" in result.stdout and "step-00000004" in result.stdout
    assert step_losses(run_dir) == reference_losses  # steps 5-8 were trained again, identically
    assert_same_weights(final_weights(run_dir), reference_weights)


def test_denoising_autoencoder_trains_through_the_same_cli(tmp_path, tiny_recipe):
    run_dir = tmp_path / "dae"
    result = run_cli(tmp_path, "pretrain", str(tiny_recipe), f"output.dir={run_dir}", *DAE_SETTINGS,
                     "train.max_steps=10")
    assert "reconstruction token accuracy" in result.stdout and "exact match" in result.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final_eval"]["loss"] < summary["initial_eval"]["loss"]
    assert {"loss", "accuracy", "exact_match", "perplexity"} <= set(summary["final_eval"])
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(run_dir / "final", trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "final")
    vectors = model(**tokenizer(["open a file", "close it"], return_tensors="pt", padding=True)).pooler_output
    assert vectors.shape == (2, 32)


def test_recipe_errors_stop_before_any_work(tmp_path, tiny_recipe):
    result = run_cli(tmp_path, "pretrain", str(tiny_recipe), "train.lerning_rate=1", check=False)
    assert result.returncode == 2
    assert "unknown key 'train.lerning_rate'" in result.stderr
    result = run_cli(tmp_path, "pretrain", str(tiny_recipe), "model.config.hiden_size=8", check=False)
    assert result.returncode == 2 and "did you mean 'model.config.hidden_size'" in result.stderr
    result = run_cli(tmp_path, "pretrain", str(tiny_recipe), "model.config.norm_type=batch", check=False)
    assert result.returncode == 2 and "norm_type='batch' is not allowed" in result.stderr
    assert not (tmp_path / "cache").exists()  # no tokenization happened
    result = run_cli(tmp_path, "pretrain", str(tiny_recipe), "model.embedding_init=spectral",
                     "model.init_from=some/checkpoint", check=False)
    assert result.returncode == 2 and "model.embedding_init='spectral' with model.init_from='some/checkpoint'" in result.stderr
    result = run_cli(tmp_path, "quickstart", "--labeled-examples", "-3", f"--out={tmp_path / 'qs'}", check=False)
    assert result.returncode != 0 and "--labeled-examples=-3 is not allowed" in result.stderr
    assert not (tmp_path / "qs").exists() and not (tmp_path / "cache").exists()


def test_quickstart_table_names_the_label_budget_and_the_gain():
    from hf_pretrain.cli import quickstart_table

    tuned = {"train_examples": 256, "runs": {"pretrained": {"test": {"accuracy": 0.74, "f1": 0.73}},
                                             "scratch": {"test": {"accuracy": 0.652, "f1": 0.64}}}}
    pretraining = {"minutes": 3.0, "tokens": 925_696, "run_dir": "runs/quickstart"}
    table = quickstart_table(pretraining, tuned, Path("runs/quickstart/final"))
    assert "(256 labeled training examples)" in table
    assert "74.0%" in table and "65.2%" in table and "+8.8 points" in table


@pytest.mark.skipif(sys.platform != "linux", reason="gloo multi-process test written for Linux")
@pytest.mark.parametrize("streaming", [False, True], ids=["in-memory", "streaming"])
def test_two_processes_match_one_process_and_only_rank_zero_writes(tmp_path, tiny_recipe_fixed_tokenizer, streaming):
    """The same global batch on 1 or 2 processes gives the same losses: the ranks split every global batch
    without overlap (a stream is read once and dispatched), and only rank 0 writes."""
    streaming_setting = f"data.streaming={str(streaming).lower()}"
    one = tmp_path / "one"
    run_cli(tmp_path, "pretrain", str(tiny_recipe_fixed_tokenizer), f"output.dir={one}", "train.max_steps=6",
            "train.batch_size=8", streaming_setting)
    two = tmp_path / "two"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
         "-m", "hf_pretrain", "pretrain", str(tiny_recipe_fixed_tokenizer), f"output.dir={two}", "train.max_steps=6",
         "train.batch_size=4", streaming_setting],
        env=cli_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    single, double = step_losses(one), step_losses(two)  # step_losses also asserts one record per step
    assert sorted(single) == sorted(double) == list(range(1, 7))
    for step in single:
        assert double[step] == pytest.approx(single[step], abs=1e-5), step
    summary_one = json.loads((one / "summary.json").read_text())
    summary_two = json.loads((two / "summary.json").read_text())
    assert summary_two["tokens"] == summary_one["tokens"]
    assert summary_two["final_eval"]["loss"] == pytest.approx(summary_one["final_eval"]["loss"], abs=1e-4)
