"""benchmarks/gpu_check.sh and gpu_check.py in their CPU mode (--tiny --device cpu, fp32): every part runs and
reports measured figures; sdpa equals eager, a packed row equals its documents one by one, an FSDP2 checkpoint
resumes exactly, the loop skips a non-finite step; a part that overruns its time limit is killed.

What needs a GPU (bf16 figures, MFU against a datasheet peak, flash attention, nccl, Accelerate's CUDA GradScaler)
is not run here; the fp16 part's CPU run with a GradScaler stands in for the last."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
MODULE = REPO / "benchmarks" / "gpu_check.py"
PARTS = ["speed", "attention", "fsdp", "fp16"]


def environment(**extra) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHON": sys.executable, **extra,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The whole check through the shell script, tiny and on the CPU, once for this module."""
    out = tmp_path_factory.mktemp("gpu_check") / "results.json"
    result = subprocess.run(["bash", str(SCRIPT), "--tiny", "--device", "cpu", "--out", str(out)],
                            env=environment(), capture_output=True, text=True, timeout=400)
    assert out.exists(), result.stdout + result.stderr
    return {"returncode": result.returncode, "stdout": result.stdout, "out": out,
            "report": json.loads(out.read_text())}


def checks_of(report: dict, part: str) -> dict:
    return {c["name"]: c for c in report["parts"][part]["checks"]}


def test_the_shell_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.slow
def test_every_part_reports_a_status_and_the_results_name_device_versions_and_commit(tiny_run):
    report = tiny_run["report"]
    assert list(report["parts"]) == PARTS
    for part, result in report["parts"].items():
        assert result["status"] in ("pass", "miss", "fail"), (part, result.get("error"), result.get("traceback_tail"))
        assert result["checks"] and result["seconds"] > 0
        assert all(isinstance(c["passed"], bool) for c in result["checks"]), part
        assert f"{part}: {result['status']}" in tiny_run["stdout"]
    env = report["environment"]
    assert env["device"].startswith("CPU") and env["torch"] == torch.__version__
    assert env["transformers"] and env["commit"]
    assert report["tiny"] is True
    table = tiny_run["out"].with_suffix(".md").read_text()
    for part in PARTS:
        assert f"| {part} | {report['parts'][part]['status']} |" in table
    assert env["device"] in table and env["commit"] in table
    # The exit status says whether everything passed.
    everything_passed = all(r["status"] == "pass" for r in report["parts"].values())
    assert tiny_run["returncode"] == (0 if everything_passed else 1)


@pytest.mark.slow
def test_speed_measures_ours_bert_and_modernbert_on_the_same_batches(tiny_run):
    speed = tiny_run["report"]["parts"]["speed"]
    figures = speed["figures"]
    models = figures["models"]
    assert list(models) == ["ours", "ours, packed documents", "BertForMaskedLM", "ModernBertForMaskedLM"]
    for row, measured in models.items():
        assert measured["tokens_per_s"] > 0 and measured["step_seconds"] > 0, row
        assert 0 < measured["mfu"] < 1.5, row  # against the measured 1-thread fp32 GEMM peak of this CPU
        assert measured["last_loss"] > 0, row
    # Equal size: the same hidden/layers/heads/vocabulary and MLP weights; parameter counts within a few percent.
    for row, ratio in figures["parameters_relative_to_ours"].items():
        assert 0.9 < ratio < 1.15, (row, ratio)
    assert figures["tokens_per_step"] == figures["batch"] * figures["seq"]
    assert figures["masked_per_step"] == round(0.15 * figures["tokens_per_step"])
    assert figures["dtype"] == "float32" and figures["peak_source"].startswith("measured")
    ratio = models["ours"]["tokens_per_s"] / models["ModernBertForMaskedLM"]["tokens_per_s"]
    assert figures["ours_over_modernbert_tokens_per_s"] == pytest.approx(ratio)
    targets = checks_of(tiny_run["report"], "speed")
    assert targets["ours MFU"]["passed"] == (models["ours"]["mfu"] >= 0.45)
    assert targets["ours / ModernBERT tokens/s"]["passed"] == (ratio >= 1.5)
    assert speed["status"] == ("pass" if all(c["passed"] for c in targets.values()) else "miss")


@pytest.mark.slow
def test_attention_sdpa_equals_eager_in_fp32_and_a_packed_row_equals_its_documents(tiny_run):
    attention = tiny_run["report"]["parts"]["attention"]
    assert attention["status"] == "pass", attention["checks"]
    figures = attention["figures"]
    for key in ("encoder/packed", "encoder/padded", "decoder/packed", "decoder/padded"):
        assert figures[key]["max_abs_diff"]["sdpa"] < 1e-4, key
        assert figures[key]["reference_max_abs"] > 0.1, key  # compared real outputs, not zeros
    for key in ("encoder/packed", "decoder/packed"):
        assert figures[key]["documents_alone_max_abs_diff"] < 1e-4, key
    # No CUDA here: flash attention is reported as skipped, with the reason.
    assert set(figures["unavailable"]) == {"flash_attention_2", "flash_attention_3"}
    assert all(reason.startswith("skipped: ") for reason in figures["unavailable"].values())


def test_the_packed_document_check_catches_attention_across_documents():
    """A model that lets tokens attend across documents fails the documents-one-by-one comparison by far."""
    from hf_pretrain import PretrainEncoderConfig, PretrainEncoderForMaskedLM

    gpu_check = load_gpu_check()
    torch.manual_seed(0)
    config = PretrainEncoderConfig(vocab_size=256, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=64, attention_within_documents=False)
    model = PretrainEncoderForMaskedLM(config).model.eval()
    inputs, _ = gpu_check.attention_inputs(48, 1, 256)["packed"]
    positions = inputs["position_ids"][0]
    start = int((positions == 0).nonzero().flatten()[1])  # the second document
    with torch.no_grad():
        packed = model(**inputs).last_hidden_state[0, :start]
        alone = model(input_ids=inputs["input_ids"][:, :start], position_ids=positions[None, :start])
    alone = alone.last_hidden_state[0]
    assert (packed - alone).abs().max() > 100 * gpu_check.FP32_TOLERANCE


@pytest.mark.slow
def test_fsdp2_checkpoint_resumes_into_a_fresh_sharded_model_exactly(tiny_run):
    fsdp = tiny_run["report"]["parts"]["fsdp"]
    assert fsdp["status"] == "pass", fsdp["checks"]
    figures = fsdp["figures"]
    assert figures["backend"] == "gloo" and figures["tensors_different"] == []
    assert figures["tensors_compared"] > 2 * 10  # weights and AdamW's exp_avg, exp_avg_sq, step
    assert figures["losses_resumed"] == {step: figures["losses_uninterrupted"][step] for step in ("3", "4")}
    assert figures["weights_max_abs_diff_after_step_4"] == 0.0


@pytest.mark.slow
def test_the_loop_skips_a_non_finite_step_and_trains_on_in_fp32(tiny_run):
    runs = tiny_run["report"]["parts"]["fp16"]["figures"]["runs"]
    fp32 = runs["fp32 (as Accelerate runs fp16 on a CPU)"]
    assert fp32["finished"] and fp32["skipped_steps"] == 1 and fp32["skipped_in_metrics"] == [3]
    assert fp32["weights_untouched_by_skipped_step"] and fp32["optimizer_untouched_by_skipped_step"]
    assert fp32["weights_changed_after_skip"]
    assert fp32["steps_logged"] == 6
    checks = checks_of(tiny_run["report"], "fp16")
    assert all(c["passed"] for name, c in checks.items() if name.startswith("fp32")), checks


@pytest.mark.slow
def test_with_a_grad_scaler_the_skipped_step_lowers_the_scale_and_training_goes_on(tiny_run):
    scaled = tiny_run["report"]["parts"]["fp16"]["figures"]["runs"]["fp16 with a CPU GradScaler"]
    assert scaled["scaler"] == "GradScaler"
    assert scaled["finished"], scaled.get("error")
    before, after = scaled["scale_before_after"]
    assert after < before
    assert scaled["weights_changed_after_skip"]


@pytest.mark.slow
def test_a_part_that_overruns_its_time_limit_is_killed_and_reported(tmp_path):
    out = tmp_path / "results.json"
    result = subprocess.run([sys.executable, str(MODULE), "--tiny", "--device", "cpu", "--parts", "fsdp",
                             "--part-timeout", "1", "--out", str(out)],
                            env=environment(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    fsdp = json.loads(out.read_text())["parts"]["fsdp"]
    assert fsdp["status"] == "timeout" and fsdp["error"] == "killed after 1 s"
    assert fsdp["seconds"] < 10


@pytest.mark.slow
def test_full_size_without_a_gpu_is_refused_at_once(tmp_path):
    result = subprocess.run([sys.executable, str(MODULE), "--out", str(tmp_path / "r.json")],
                            env=environment(CUDA_VISIBLE_DEVICES=""), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "sees no CUDA device" in result.stderr and not (tmp_path / "r.json").exists()
