"""More than one process through the real CLI (gloo on CPU, launched by torchrun or `accelerate launch`): 2
processes train like 1 and only rank 0 writes; one lr on every rank; a run stopped on 2 processes resumes on 2, on
1 and on 2 again, bit for bit. Separate from test_pretrain_cli.py so that pytest -n 2 can run the two files side by
side."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_pretrain_cli import (  # noqa: E402, F401  (shared_tokenizer, tiny_recipe_fixed_tokenizer: fixtures)
    DAE_SETTINGS,
    REPO_ROOT,
    TINY_RECIPE,
    assert_same_weights,
    cli_env,
    final_weights,
    free_port,
    run_cli,
    shared_tokenizer,
    step_losses,
    tiny_recipe_fixed_tokenizer,
    wait_for_step,
)

@pytest.mark.skipif(sys.platform != "linux", reason="gloo multi-process test written for Linux")
def test_two_processes_match_one_process_and_only_rank_zero_writes(tmp_path, tiny_recipe_fixed_tokenizer):
    """The same global batch on 1 or 2 processes gives the same losses: the ranks split every global batch
    without overlap, and only rank 0 writes. (A streamed corpus is read by each process in its own shards, so 1 and
    2 processes read other blocks: test_stream_training.py.)"""
    one = tmp_path / "one"
    run_cli(tmp_path, "pretrain", str(tiny_recipe_fixed_tokenizer), f"output.dir={one}", "train.max_steps=6",
            "train.batch_size=8")
    two = tmp_path / "two"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
         "-m", "hf_pretrain", "pretrain", str(tiny_recipe_fixed_tokenizer), f"output.dir={two}", "train.max_steps=6",
         "train.batch_size=4"],
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


RANK_RECORDER = """\
import hashlib, json, sys
from hf_pretrain.recipe import load_recipe
from hf_pretrain.training.loop import Pretraining

class Recorder(Pretraining):  # the lr each rank trains every micro-batch with
    def forward_loss(self, batch, items_in_step):
        self.lrs.append(self.optimizer.param_groups[0]["lr"])
        return super().forward_loss(batch, items_in_step)

run = Recorder(load_recipe(sys.argv[1], sys.argv[3:]))
run.lrs = []
run.run()
model = run.accelerator.unwrap_model(run.model)
weights = {k: hashlib.sha256(v.detach().contiguous().numpy().tobytes()).hexdigest() for k, v in model.state_dict().items()}
record = {"lrs": run.lrs, "weights": weights, "tokens": run.state.tokens_seen, "steps": run.state.step}
open(f"{sys.argv[2]}/rank{run.accelerator.process_index}.json", "w").write(json.dumps(record))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="gloo multi-process test written for Linux")
def test_two_ranks_keep_one_learning_rate_under_a_token_budget_with_documents_of_different_lengths(
        tmp_path, tiny_recipe_fixed_tokenizer):
    """Under train.max_tokens the lr follows the tokens seen; the denoising objective's batches hold documents of
    different lengths, so each rank's own count differs. Counted over both ranks, every rank trains every step with
    the same lr, and the replicas stay identical."""
    script = tmp_path / "record_ranks.py"
    script.write_text(RANK_RECORDER)
    out = tmp_path / "ranks"
    out.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
         str(script), str(tiny_recipe_fixed_tokenizer), str(out), f"output.dir={tmp_path / 'run'}", *DAE_SETTINGS,
         "train.max_steps=null", "train.max_tokens=6000", "train.schedule=linear", "train.warmup=0.3",
         "train.batch_size=4"],
        env=cli_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    first, second = (json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1))
    assert first["steps"] == second["steps"] >= 4 and first["tokens"] == second["tokens"] >= 6000
    assert len(set(first["lrs"])) > 2  # the schedule moved, so equal lrs are not trivially equal
    assert first["lrs"] == second["lrs"]
    assert first["weights"] == second["weights"]


# ----------------------------------------------------------------------------------------------- 2 processes, resume
def accelerate_launch(tmp_path: Path, recipe: Path, run_dir: Path, *settings: str) -> subprocess.Popen:
    """`accelerate launch --config_file recipes/accelerate/cpu-2proc.yaml -m hf_pretrain pretrain ...`."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(REPO_ROOT / "recipes" / "accelerate" / "cpu-2proc.yaml"), "--main_process_port", str(free_port()),
               "-m", "hf_pretrain", "pretrain", str(recipe), f"output.dir={run_dir}", *settings]
    return subprocess.Popen(command, env=cli_env(tmp_path), cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen, timeout: int = 300) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-4000:]
    return output


def stop_with_sigterm_after(process: subprocess.Popen, run_dir: Path, step: int) -> tuple[dict, str]:
    """SIGTERM once `step` is logged; returns the trainer state of the checkpoint the stop saved, and the output."""
    wait_for_step(process, run_dir / "metrics.jsonl", step)
    process.send_signal(signal.SIGTERM)  # the launcher passes it on to both ranks, which agree on one step to stop at
    output, _ = process.communicate(timeout=120)
    assert process.returncode != 0 and "Run the same command again to resume" in output, output[-3000:]
    assert not (run_dir / "final").exists()
    return newest_trainer_state(run_dir), output


def newest_trainer_state(run_dir: Path) -> dict:
    return json.loads((sorted((run_dir / "checkpoints").glob("step-*"))[-1] / "trainer_state.json").read_text())


# 2 processes x 4 rows = 1 process x 8 rows: the same global batch. 16 documents make an epoch of 9 steps, so
# the runs cross epoch boundaries.
TWO_PROCESS_SETTINGS = ["train.max_steps=14", "train.save_every=100", "data.max_documents=16"]


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory, shared_tokenizer):
    """An uninterrupted 2-process run, and the same command stopped by SIGTERM after step 3; both through
    `accelerate launch` with recipes/accelerate/cpu-2proc.yaml."""
    tmp_path = tmp_path_factory.mktemp("two-processes")
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY_RECIPE.replace("tokenizer: {kind: bpe, vocab_size: 512}", f"tokenizer: {{path: {shared_tokenizer}}}"))
    reference, stopped = tmp_path / "reference", tmp_path / "stopped"
    finish(accelerate_launch(tmp_path, recipe, reference, *TWO_PROCESS_SETTINGS, "train.batch_size=4"))
    state, _ = stop_with_sigterm_after(
        accelerate_launch(tmp_path, recipe, stopped, *TWO_PROCESS_SETTINGS, "train.batch_size=4"), stopped, step=3)
    assert state["num_processes"] == 2 and 3 <= state["step"] < 7, state
    return tmp_path, recipe, reference, stopped


@pytest.mark.skipif(sys.platform != "linux", reason="gloo multi-process test written for Linux")
def test_two_processes_stopped_and_resumed_end_like_the_uninterrupted_run(two_process_runs):
    """SIGTERM to `accelerate launch` mid-run: both ranks stop after the same step and save it; the same command
    again ends with the uninterrupted run's per-step losses and final weights, bit for bit."""
    tmp_path, recipe, reference, stopped = two_process_runs
    resumed = tmp_path / "resumed-on-two"
    shutil.copytree(stopped, resumed)
    output = finish(accelerate_launch(tmp_path, recipe, resumed, *TWO_PROCESS_SETTINGS, "train.batch_size=4"))
    assert "resumed from" in output and "instead of" not in output
    assert step_losses(resumed) == step_losses(reference)
    assert_same_weights(final_weights(resumed), final_weights(reference))
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["hardware"].endswith("x 2 process(es), fp32") and summary["steps"] == 14


@pytest.mark.skipif(sys.platform != "linux", reason="gloo multi-process test written for Linux")
def test_a_run_resumes_on_one_process_then_on_two_at_the_same_step_and_example(two_process_runs):
    """2 processes -> 1 (train.batch_size 4 -> 8, the same global batch) -> 2 again: each resume continues at the
    checkpoint's step with the examples a run that never stopped reads next, so the losses and weights are the
    uninterrupted 2-process run's (to float rounding: 1 and 2 processes sum in another order)."""
    tmp_path, recipe, reference, stopped = two_process_runs
    run_dir = tmp_path / "two-one-two"
    shutil.copytree(stopped, run_dir)
    stopped_on_two = newest_trainer_state(run_dir)
    one_process = subprocess.Popen(
        [sys.executable, "-m", "hf_pretrain", "pretrain", str(recipe), f"output.dir={run_dir}", *TWO_PROCESS_SETTINGS,
         "train.batch_size=8"], env=cli_env(tmp_path), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    stopped, output = stop_with_sigterm_after(one_process, run_dir, step=10)
    assert f"resuming with 1 process(es) instead of 2: step {stopped_on_two['step']}" in output
    assert "train.batch_size: 4 -> 8 (the global batch stays 8" in output
    assert stopped["num_processes"] == 1 and stopped["batch_size"] == 8 and stopped["step"] >= 10
    assert stopped["epoch"] > stopped_on_two["epoch"]  # the run on one process crossed an epoch boundary

    output = finish(accelerate_launch(tmp_path, recipe, run_dir, *TWO_PROCESS_SETTINGS, "train.batch_size=4"))
    assert f"resuming with 2 process(es) instead of 1: step {stopped['step']}" in output
    losses, expected = step_losses(run_dir), step_losses(reference)
    assert sorted(losses) == sorted(expected) == list(range(1, 15))
    for step in expected:
        assert losses[step] == pytest.approx(expected[step], abs=1e-5), step
    assert json.loads((run_dir / "summary.json").read_text())["tokens"] == json.loads(
        (reference / "summary.json").read_text())["tokens"]
    for name, weight in final_weights(reference).items():
        torch.testing.assert_close(final_weights(run_dir)[name], weight, atol=1e-5, rtol=1e-4)
