"""The feature (continuous-input) denoising autoencoder through the real CLI (`hf_pretrain.cli.main`, in process):
digits by default, your own .npy vectors, errors before any training, exact resume, gradient accumulation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hf_pretrain.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = """\
# tiny feature autoencoder for the tests
objective: dae-features
model:
  config: {hidden_size: 32, num_hidden_layers: 1, decoder_layers: 1, num_attention_heads: 2, intermediate_size: 64,
           bottleneck: pooled, pooling: cls}
features: {source: digits, validation_fraction: 0.1, feature_tokens: 8, gaussian_std: 0.1, mask_rate: 0.25}
train: {batch_size: 32, lr: 3.0e-3, schedule: cosine, warmup: 0.1, max_steps: 30, eval_every: 100, eval_batches: 2,
        save_every: 100, seed: 1}
output: {log_with: [], progress_bar: false}
"""


@pytest.fixture()
def tiny_recipe(tmp_path) -> Path:
    path = tmp_path / "tiny-features.yaml"
    path.write_text(TINY)
    return path


@pytest.fixture()
def low_rank_npy(tmp_path) -> Path:
    """60 vectors of 12 values on a rank-2 subspace (noise-free), as a user's .npy file."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(60, 2)) @ rng.normal(size=(2, 12)) * 0.5
    path = tmp_path / "vectors.npy"
    np.save(path, vectors.astype(np.float32))
    return path


def pretrain(recipe: Path, run_dir: Path, *overrides: str) -> int:
    return main(["pretrain", str(recipe), f"output.dir={run_dir}", *overrides])


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def step_losses(run_dir: Path) -> dict[int, float]:
    losses = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "loss" in record:
            assert record["step"] not in losses, f"step {record['step']} logged twice"
            losses[record["step"]] = record["loss"]
    return losses


# ----------------------------------------------------------------------------------------------- tests
def test_digits_by_default_eval_mse_goes_down(tmp_path, tiny_recipe, capsys):
    run_dir = tmp_path / "digits"
    assert pretrain(tiny_recipe, run_dir) == 0
    captured = capsys.readouterr()
    assert "scikit-learn digits: 1,797 8x8 images" in captured.err and "train 1,617, validation 180 vectors" in captured.err
    assert "reconstruction MSE, noisy input" in captured.out and "R^2" in captured.out
    before, after = summary(run_dir)["initial_eval"], summary(run_dir)["final_eval"]
    assert {"loss", "mse", "clean_mse", "baseline_mse", "r2"} <= set(after)
    assert after["mse"] < before["mse"] and after["clean_mse"] < before["clean_mse"]
    assert not (run_dir / "final" / "tokenizer_config.json").exists()  # no tokenizer anywhere
    assert sorted(step_losses(run_dir)) == list(range(1, 31))


def test_own_npy_vectors_train_and_the_final_folder_loads_with_automodel(tmp_path, tiny_recipe, low_rank_npy):
    run_dir = tmp_path / "npy"
    code = pretrain(tiny_recipe, run_dir, "features.source=files", f"features.train_files={low_rank_npy}",
                    "features.feature_tokens=3", "features.validation_fraction=0.2", "train.batch_size=8",
                    "train.max_steps=12")
    assert code == 0
    result = summary(run_dir)
    assert result["final_eval"]["mse"] < result["initial_eval"]["mse"]
    from transformers import AutoModel

    model = AutoModel.from_pretrained(run_dir / "final", trust_remote_code=True).eval()
    assert model.config.model_type == "hf_pretrain_dae_features" and model.config.feature_size == 4
    vectors = torch.from_numpy(np.load(low_rank_npy)[:5])
    with torch.no_grad():
        outputs = model(vectors)
    assert outputs.pooler_output.shape == (5, 32)
    assert outputs.reconstruction.shape == (5, 12)

    # Export (no tokenizer to copy) writes a card that describes vectors, not text; embedding text refuses it.
    
    assert main(["export", str(run_dir)]) == 0
    card = (run_dir / "export" / "README.md").read_text()
    assert "mean squared error" in card and "local feature vectors" in card and "torch.rand(2, 12)" in card
    assert "masked language modeling" not in card and not (run_dir / "export" / "tokenizer_config.json").exists()
    texts = tmp_path / "texts.txt"
    texts.write_text("one\ntwo\n")
    assert main(["embed", str(run_dir), str(texts), "--out", str(tmp_path / "v.npy")]) == 2


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["features.feature_tokens=5"], "features.feature_tokens=5 does not divide the 64 values of each vector; "
                                        "choose one of [1, 2, 4, 8, 16, 32, 64]"),
        (["features.source=files", "features.train_files=missing.npy"],
         "features.train_files=['missing.npy']: file pattern 'missing.npy' matches no file"),
        (["features.feature_tokens=16", "model.config.max_position_embeddings=9"],
         "features.feature_tokens=16 needs model.config.max_position_embeddings >= 17"),
        (["features.source=files"], "features.source='files' needs features.train_files"),
        (["features.mask_rate=1"], "features.mask_rate=1.0 is not allowed; it must be <= 0.99"),
        (["features.source=mnist"], "features.source='mnist' is not allowed; choose one of 'digits', 'files'"),
        (["data.block_size=64"], "data.block_size=64: objective 'dae-features' reads float vectors, not text"),
        (["objective=mlm", "features.mask_rate=0.5"],
         "features.mask_rate=0.5: the features section is read by objective dae-features only; objective 'mlm' "
         "would ignore it"),
    ],
    ids=["tokens-do-not-divide", "missing-file", "positions", "files-without-paths", "mask-rate", "source",
         "text-section", "features-on-mlm"],
)
def test_bad_settings_fail_with_a_clear_error_before_training(tmp_path, tiny_recipe, capsys, overrides, message):
    run_dir = tmp_path / "bad"
    assert pretrain(tiny_recipe, run_dir, *overrides) == 2
    assert message in capsys.readouterr().err
    assert not (run_dir / "metrics.jsonl").exists() and not (run_dir / "checkpoints").exists()


def test_a_rerun_resumes_from_the_checkpoint_exactly(tmp_path, tiny_recipe, low_rank_npy, capsys):
    """Stopped at step 5 mid-epoch (a budget of 5 steps), run again with a budget of 12: it resumes from the step-5
    checkpoint and ends with the per-step losses and weights of an uninterrupted 12-step run, bit for bit (constant
    lr, so both budgets schedule the same lr)."""
    settings = ["features.source=files", f"features.train_files={low_rank_npy}", "features.feature_tokens=3",
                "features.validation_fraction=0.2", "train.batch_size=8", "train.grad_accum=2",
                "train.schedule=constant", "train.warmup=0", "train.save_every=100"]
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    assert pretrain(tiny_recipe, reference, *settings, "train.max_steps=12") == 0
    assert pretrain(tiny_recipe, resumed, *settings, "train.max_steps=5") == 0
    state = json.loads((resumed / "checkpoints" / "step-00000005" / "trainer_state.json").read_text())
    assert state["epoch"] == 1 and state["batches_in_epoch"] == 4  # 48 vectors / 8 = 6 micro-batches per epoch
    capsys.readouterr()
    assert pretrain(tiny_recipe, resumed, *settings, "train.max_steps=12") == 0
    assert "resumed from" in capsys.readouterr().err
    assert step_losses(resumed) == step_losses(reference)
    weights, expected = load_file(str(resumed / "final" / "model.safetensors")), load_file(
        str(reference / "final" / "model.safetensors"))
    assert weights.keys() == expected.keys()
    for name in weights:
        assert torch.equal(weights[name], expected[name]), name


def test_a_killed_run_resumes_exactly(tmp_path, tiny_recipe, low_rank_npy, capsys):
    """SIGKILL (a real CLI process) mid-run; the same command again resumes from the last checkpoint and ends with
    the per-step losses and weights of an uninterrupted run, bit for bit."""
    settings = ["features.source=files", f"features.train_files={low_rank_npy}", "features.feature_tokens=3",
                "features.validation_fraction=0.2", "train.batch_size=8", "train.grad_accum=2", "train.max_steps=150",
                "train.save_every=7"]
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    assert pretrain(tiny_recipe, reference, *settings) == 0
    # One thread, as in this process; this checkout's hf_pretrain, as in this process.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    command = [sys.executable, "-m", "hf_pretrain", "pretrain", str(tiny_recipe), f"output.dir={resumed}", *settings]
    process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when_step_logged(process, resumed / "metrics.jsonl", step=60)
    assert not (resumed / "final").exists()
    capsys.readouterr()
    assert pretrain(tiny_recipe, resumed, *settings) == 0
    assert "resumed from" in capsys.readouterr().err
    assert step_losses(resumed) == step_losses(reference)
    weights, expected = load_file(str(resumed / "final" / "model.safetensors")), load_file(
        str(reference / "final" / "model.safetensors"))
    for name in expected:
        assert torch.equal(weights[name], expected[name]), name


def kill_when_step_logged(process: subprocess.Popen, metrics: Path, step: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the run ended before step {step} was seen (exit {process.returncode})")
        if metrics.exists() and any("loss" in record and record["step"] >= step for record in read_records(metrics)):
            process.send_signal(signal.SIGKILL)
            process.wait()
            return
        time.sleep(0.01)
    process.kill()
    raise AssertionError(f"step {step} never logged")


def read_records(metrics: Path) -> list[dict]:
    """The complete records of a metrics file that is being written (a torn last line is skipped)."""
    records = []
    for line in metrics.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return records


def test_gradient_accumulation_gives_the_gradient_of_one_big_batch(tmp_path, tiny_recipe, low_rank_npy):
    """The MSE is a mean per micro-batch; the loop weights each by its share of the step's values, so 2 x 8 rows
    take the same step as 16 rows (same rows: the sampler's permutation does not depend on the batch size)."""
    settings = ["features.source=files", f"features.train_files={low_rank_npy}", "features.feature_tokens=3",
                "features.validation_fraction=0.2", "train.max_steps=2", "train.schedule=constant", "train.warmup=0"]
    pretrain(tiny_recipe, tmp_path / "big", *settings, "train.batch_size=16")
    pretrain(tiny_recipe, tmp_path / "accumulated", *settings, "train.batch_size=8", "train.grad_accum=2")
    big, accumulated = step_losses(tmp_path / "big"), step_losses(tmp_path / "accumulated")
    assert accumulated[1] == pytest.approx(big[1], abs=1e-6)
    assert accumulated[2] == pytest.approx(big[2], abs=1e-5)  # the same first update
