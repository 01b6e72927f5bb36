"""The pretraining engine through the real CLI on a tiny recipe: golden losses, kill-and-resume exactness,
corrupted-checkpoint fallback, the NaN guard and recipe errors (more than one process: test_multiprocess_cli.py)."""

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


# The checkout these tests belong to: subprocesses import its hf_pretrain, not whichever copy is installed.
REPO_ROOT = Path(__file__).resolve().parents[2]


def cli_env(tmp_path: Path) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_PRETRAIN_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(REPO_ROOT)}


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


def run_cli_in_process(tmp_path: Path, monkeypatch, capsys, *args: str) -> subprocess.CompletedProcess:
    """`hf-pretrain ARGS` through the CLI's main() in this process, for commands refused before any work: the same
    exit status and messages as run_cli, without a subprocess's ~6 s of imports."""
    from hf_pretrain.cli import main

    monkeypatch.setenv("HF_PRETRAIN_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    try:
        returncode = main(list(args))
    except SystemExit as exit_:  # argparse's own errors
        returncode = exit_.code
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, returncode, captured.out, captured.err)


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


def eval_records(run_dir: Path) -> dict[int, dict]:
    """step -> the eval record's values, without the probe's seconds (timings differ between runs)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: {k: v for k, v in r.items() if k.startswith("eval/") and k not in
                        ("eval/probe_seconds", "eval/probe_share")}
            for r in records if "eval/loss" in r}


def test_the_probe_is_logged_at_step_0_and_every_eval_and_shown_with_the_loss(tmp_path, tiny_recipe):
    """The built-in data's recipe probes the built-in task (probe.source=auto): accuracy and macro F1 at step 0 and
    at every eval, its time as a share of the training time since the previous eval, and the summary's lines."""
    run_dir = tmp_path / "run"
    result = run_cli(tmp_path, "pretrain", str(tiny_recipe), f"output.dir={run_dir}", "train.max_steps=8",
                     "train.eval_every=4")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    probes = {r["step"]: r for r in records if "eval/probe_accuracy" in r}
    assert sorted(probes) == [0, 4, 8]
    for step, record in probes.items():
        assert 0.0 < record["eval/probe_accuracy"] <= 1.0 and 0.0 < record["eval/probe_macro_f1"] <= 1.0
        assert record["eval/probe_seconds"] > 0
        assert ("eval/probe_share" in record) == (step > 0)
    # 8 balanced classes (chance 12.5%): the tiny model's features are already well above it (38% measured).
    assert probes[8]["eval/probe_accuracy"] > 0.25
    assert "linear probe accuracy (frozen features)" in result.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final_eval"]["probe_accuracy"] == probes[8]["eval/probe_accuracy"]

    # No probe when the recipe says so: the same run's losses, no probe records.
    quiet = tmp_path / "no-probe"
    run_cli(tmp_path, "pretrain", str(tiny_recipe), f"output.dir={quiet}", "train.max_steps=8", "train.eval_every=4",
            "probe.source=none")
    assert step_losses(quiet) == step_losses(run_dir)
    assert not any("eval/probe_accuracy" in line for line in (quiet / "metrics.jsonl").read_text().splitlines())


def test_a_bad_probe_file_is_refused_before_any_work(tmp_path, tiny_recipe, monkeypatch, capsys):
    bad = tmp_path / "probe.jsonl"
    bad.write_text('{"text": "a b c", "topic": "x"}\n{"text": "d e f", "topic": "y"}\n')
    run_dir = tmp_path / "run"
    result = run_cli_in_process(tmp_path, monkeypatch, capsys, "pretrain", str(tiny_recipe), f"output.dir={run_dir}",
                                "probe.source=files", f"probe.files=[{bad}]")
    assert result.returncode == 2
    assert f"{bad} has no column 'label'" in result.stderr and "its columns: text, topic" in result.stderr
    assert not run_dir.exists() and not (tmp_path / "cache").exists()  # no run folder, no tokenization


def test_the_same_seed_gives_the_same_losses(tmp_path, tiny_recipe_fixed_tokenizer):
    first = run_cli(tmp_path, "pretrain", str(tiny_recipe_fixed_tokenizer), f"output.dir={tmp_path / 'a'}", "train.max_steps=4")
    second = run_cli(tmp_path, "pretrain", str(tiny_recipe_fixed_tokenizer), f"output.dir={tmp_path / 'b'}", "train.max_steps=4")
    assert first.returncode == second.returncode == 0
    assert step_losses(tmp_path / "a") == step_losses(tmp_path / "b")


def wait_for_step(process: subprocess.Popen, metrics: Path, step: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the run ended before step {step} (exit {process.returncode})"
        if metrics.exists() and step in step_losses_tolerant(metrics):
            return
        time.sleep(0.02)
    process.kill()
    raise AssertionError(f"step {step} never logged")


def step_losses_tolerant(metrics: Path) -> set[int]:
    steps = set()
    for line in metrics.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # the line being written right now
            continue
        if "loss" in record:
            steps.add(record["step"])
    return steps


def kill_when_step_logged(process: subprocess.Popen, metrics: Path, step: int, timeout: float = 240) -> None:
    wait_for_step(process, metrics, step, timeout)
    process.send_signal(signal.SIGKILL)
    process.wait()


def run_reference_and_start_another(tmp_path: Path, recipe: Path, settings: list[str], **popen_options):
    """An uninterrupted run into tmp_path/reference, then the same command into tmp_path/run started in the
    background (to be interrupted). Returns (reference, run_dir, command, process)."""
    reference, run_dir = tmp_path / "reference", tmp_path / "run"
    run_cli(tmp_path, "pretrain", str(recipe), f"output.dir={reference}", *settings)
    command = [sys.executable, "-m", "hf_pretrain", "pretrain", str(recipe), f"output.dir={run_dir}", *settings]
    popen_options = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, **popen_options}
    process = subprocess.Popen(command, env=cli_env(tmp_path), cwd=tmp_path, **popen_options)
    return reference, run_dir, command, process


# The tiny recipe's masking rate goes back to its default: objective dae reads no masking.* (setting one is an error).
DAE_SETTINGS = ["objective=dae", "model.config.decoder_layers=1", "noise.word_delete_rate=0.6",
                "masking.mlm_probability=0.15"]


@pytest.mark.parametrize("objective", ["mlm", "dae"])
def test_killed_run_resumes_exactly(tmp_path, tiny_recipe_fixed_tokenizer, objective):
    """SIGKILL mid-epoch in a later epoch, with gradient accumulation and a DataLoader worker; the resumed run
    ends with the uninterrupted run's per-step losses and final weights, bit for bit."""
    settings = ["train.grad_accum=2", "train.num_workers=1", "train.max_steps=16", "data.max_documents=40",
                "train.save_every=3", *(DAE_SETTINGS if objective == "dae" else [])]
    reference, resumed, command, process = run_reference_and_start_another(
        tmp_path, tiny_recipe_fixed_tokenizer, settings
    )
    kill_when_step_logged(process, resumed / "metrics.jsonl", step=10)
    assert not (resumed / "final").exists()
    state = json.loads((sorted((resumed / "checkpoints").glob("step-*"))[-1] / "trainer_state.json").read_text())
    assert state["epoch"] >= 1 and state["batches_in_epoch"] > 0, state  # the kill was mid-epoch, not in epoch 0

    result = run_cli(tmp_path, *command[3:])
    assert "resumed from" in result.stderr
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
    assert "step-00000008 is unusable" in result.stderr and "falling back" in result.stderr
    assert "resumed from" in result.stderr and "step-00000004" in result.stderr
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


def test_recipe_errors_stop_before_any_work(tmp_path, tiny_recipe, monkeypatch, capsys):
    def run(*args):
        return run_cli_in_process(tmp_path, monkeypatch, capsys, *args)

    result = run("pretrain", str(tiny_recipe), "train.lerning_rate=1")
    assert result.returncode == 2
    assert "unknown key 'train.lerning_rate'" in result.stderr
    result = run("pretrain", str(tiny_recipe), "model.config.hiden_size=8")
    assert result.returncode == 2 and "did you mean 'model.config.hidden_size'" in result.stderr
    result = run("pretrain", str(tiny_recipe), "model.config.norm_type=batch")
    assert result.returncode == 2 and "norm_type='batch' is not allowed" in result.stderr
    result = run("pretrain", str(tiny_recipe), "train.optimizer=lion")
    assert result.returncode == 2 and "train.optimizer='lion' is not allowed" in result.stderr
    assert not (tmp_path / "cache").exists()  # no tokenization happened
    result = run("pretrain", str(tiny_recipe), "model.embedding_init=spectral", "model.init_from=some/checkpoint")
    assert result.returncode == 2 and "model.embedding_init='spectral' with model.init_from='some/checkpoint'" in result.stderr
    result = run("quickstart", "--labeled-examples", "-3", f"--out={tmp_path / 'qs'}")
    assert result.returncode != 0 and "--labeled-examples=-3 is not allowed" in result.stderr
    assert not (tmp_path / "qs").exists() and not (tmp_path / "cache").exists()


def test_quickstart_table_names_the_label_budget_and_the_gain():
    from hf_pretrain.cli.pretraining import quickstart_table

    tuned = {"train_examples": 256, "runs": {"pretrained": {"test": {"accuracy": 0.74, "f1": 0.73}},
                                             "scratch": {"test": {"accuracy": 0.652, "f1": 0.64}}}}
    pretraining = {"minutes": 3.0, "tokens": 925_696, "run_dir": "runs/quickstart"}
    table = quickstart_table(pretraining, tuned, Path("runs/quickstart/final"))
    assert "(256 labeled training examples)" in table
    assert "74.0%" in table and "65.2%" in table and "+8.8 points" in table


def free_port() -> int:
    """A port no other process listens on (a fixed one collides with another test run on the same machine)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]



# ----------------------------------------------------------------------------------------------- resume edges
def test_a_torn_metrics_line_blocks_neither_resume_nor_report(tmp_path, tiny_recipe_fixed_tokenizer):
    """A kill or a full disk mid-write leaves half a record at the end of metrics.jsonl."""
    run_dir = tmp_path / "run"
    settings = [f"output.dir={run_dir}", "train.max_steps=8"]
    run_cli(tmp_path, "pretrain", str(tiny_recipe_fixed_tokenizer), *settings, "train.max_steps=6")
    reference = step_losses(run_dir)
    with open(run_dir / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 7, "loss": 5.1, "lr"')  # torn: no closing brace, no newline
    report = run_cli(tmp_path, "report", str(run_dir))
    assert report.returncode == 0
    result = run_cli(tmp_path, "pretrain", str(tiny_recipe_fixed_tokenizer), *settings)
    assert "dropped 1 unreadable line" in result.stderr and "resumed from" in result.stderr
    losses = step_losses(run_dir)  # parses every line: the torn one is gone
    assert sorted(losses) == list(range(1, 9)) and all(losses[s] == reference[s] for s in range(1, 7))


def test_a_rerun_with_another_recipe_is_refused_naming_the_keys(tmp_path, tiny_recipe_fixed_tokenizer):
    run_dir = tmp_path / "run"
    recipe = str(tiny_recipe_fixed_tokenizer)
    run_cli(tmp_path, "pretrain", recipe, f"output.dir={run_dir}", "train.max_steps=4")
    written = (run_dir / "recipe.yaml").read_text()
    final_weights_before = final_weights(run_dir)

    refused = run_cli(tmp_path, "pretrain", recipe, f"output.dir={run_dir}", "train.max_steps=4", "train.lr=1e-2",
                      "masking.mlm_probability=0.2", check=False)
    assert refused.returncode == 2
    assert "train.lr: 0.003 -> 0.01" in refused.stderr and "masking.mlm_probability: 0.3 -> 0.2" in refused.stderr
    assert "--restart" in refused.stderr
    assert (run_dir / "recipe.yaml").read_text() == written  # the run folder still says what it was trained with
    assert_same_weights(final_weights(run_dir), final_weights_before)

    # A longer budget is a change a resume can take: allowed and said.
    longer = run_cli(tmp_path, "pretrain", recipe, f"output.dir={run_dir}", "train.max_steps=6")
    assert "changed settings: train.max_steps: 4 -> 6" in longer.stderr and "resumed from" in longer.stderr
    assert sorted(step_losses(run_dir)) == list(range(1, 7))

    # --restart moves the earlier run aside (nothing deleted) and trains from step 0 with the new recipe.
    restarted = run_cli(tmp_path, "pretrain", recipe, f"output.dir={run_dir}", "train.max_steps=4", "train.lr=1e-2",
                        "--restart")
    assert "resumed from" not in restarted.stderr
    moved = [p for p in run_dir.iterdir() if p.name.startswith("replaced-")]
    assert len(moved) == 1 and (moved[0] / "final" / "model.safetensors").is_file()
    assert sorted(step_losses(moved[0])) == list(range(1, 7))
    assert sorted(step_losses(run_dir)) == list(range(1, 5))
    assert "lr: 0.01" in (run_dir / "recipe.yaml").read_text()


def test_a_streamed_denoising_recipe_is_accepted_and_read_as_whole_documents(tmp_path, monkeypatch, capsys):
    """objective dae streams its corpus like the packed objectives, one whole document per row (streamed DAE runs
    are trained, killed and resumed in test_stream_training.py)."""
    from hf_pretrain.data.streaming import plan_recipe_stream
    from hf_pretrain.objectives import objective_class
    from hf_pretrain.recipe import load_recipe

    result = run_cli_in_process(tmp_path, monkeypatch, capsys, "pretrain", "dae-sentence", "data.streaming=true",
                                f"output.dir={tmp_path / 'run'}", "--dry-run")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "objective dae" in result.stdout and "streaming: true" in result.stdout
    assert not (tmp_path / "run").exists()
    recipe = load_recipe("dae-sentence", ["data.streaming=true", "train.num_workers=2"])
    plan = plan_recipe_stream(recipe, 1, rows=objective_class(recipe.objective).stream_rows)
    assert plan.rows == "documents" and plan.layout(True)["rows"] == "documents" and plan.readers == 2


def test_non_finite_numbers_are_refused_before_any_work(tmp_path, tiny_recipe, monkeypatch, capsys):
    for override in ("train.max_minutes=nan", "train.lr=.inf", "model.config.hidden_dropout=.nan"):
        result = run_cli_in_process(tmp_path, monkeypatch, capsys, "pretrain", str(tiny_recipe), override,
                                    f"output.dir={tmp_path / 'run'}")
        assert result.returncode == 2 and "must be a finite number" in result.stderr, (override, result.stderr)
        assert override.split("=")[0] in result.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_saves_the_current_step_and_the_rerun_resumes_exactly(tmp_path, tiny_recipe_fixed_tokenizer,
                                                                             stop_signal):
    """A preempted job (SIGTERM) or a Ctrl-C (SIGINT) loses no step: checkpoint at the current step, exit
    128 + signal, and the rerun ends like an uninterrupted run. save_every is far away, so only the signal saves."""
    settings = ["train.max_steps=24", "train.save_every=100", "data.max_documents=60"]
    reference, run_dir, command, process = run_reference_and_start_another(
        tmp_path, tiny_recipe_fixed_tokenizer, settings, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_for_step(process, run_dir / "metrics.jsonl", step=5)
    process.send_signal(stop_signal)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + stop_signal, stderr[-2000:]
    assert "Run the same command again to resume" in stderr
    saved = sorted((run_dir / "checkpoints").glob("step-*"))
    assert len(saved) == 1 and not (run_dir / "final").exists() and not (run_dir / ".lock").exists()
    stopped_at = json.loads((saved[0] / "trainer_state.json").read_text())["step"]
    assert 5 <= stopped_at < 24 and max(step_losses(run_dir)) == stopped_at

    result = run_cli(tmp_path, *command[3:])
    assert f"resumed from {saved[0]}" in result.stderr
    assert step_losses(run_dir) == step_losses(reference)
    assert_same_weights(final_weights(run_dir), final_weights(reference))
    # The built-in probe ran at every eval (the recipe's data is built-in): the same values as the uninterrupted
    # run's, before and after the stop.
    assert eval_records(run_dir) == eval_records(reference)
    assert all("eval/probe_accuracy" in record for record in eval_records(run_dir).values())


def test_a_second_process_on_the_same_run_folder_is_refused(tmp_path, tiny_recipe_fixed_tokenizer):
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "hf_pretrain", "pretrain", str(tiny_recipe_fixed_tokenizer),
               f"output.dir={run_dir}", "train.max_steps=400", "train.save_every=1000"]
    first = subprocess.Popen(command, env=cli_env(tmp_path), cwd=tmp_path, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        wait_for_step(first, run_dir / "metrics.jsonl", step=1)
        second = run_cli(tmp_path, *command[3:], check=False)
        assert second.returncode == 2 and f"in use by process {first.pid}" in second.stderr
    finally:
        first.kill()
        first.wait()
    # The first process was killed (SIGKILL: no chance to clean up): its lock is stale and taken over. It saved
    # no checkpoint, so this run starts from step 0.
    third = run_cli(tmp_path, *command[3:-2], "train.max_steps=2", "train.save_every=1000")
    assert "no longer running" in third.stderr and sorted(step_losses(run_dir)) == [1, 2]


def test_a_corrupt_newer_checkpoint_cannot_evict_the_good_ones(tmp_path, tiny_recipe_fixed_tokenizer):
    """keep_last=1: after resuming from step 4 past a damaged step 8, the checkpoints written next must win over
    the damaged one, so a resumable checkpoint always exists."""
    run_dir = tmp_path / "run"
    settings = [f"output.dir={run_dir}", "train.max_steps=8", "train.keep_last=2"]
    run_cli(tmp_path, "pretrain", str(tiny_recipe_fixed_tokenizer), *settings)
    damaged = run_dir / "checkpoints" / "step-00000008"
    (damaged / "trainer_state.json").write_text("{}")
    result = run_cli(tmp_path, "pretrain", str(tiny_recipe_fixed_tokenizer), *settings[:-1], "train.keep_last=1",
                     "train.max_steps=12")
    assert "step-00000008 is unusable" in result.stderr
    assert [p.name for p in (run_dir / "checkpoints").glob("step-*")] == ["step-00000012"]
    assert (run_dir / "checkpoints" / ".unusable-step-00000008").is_dir()  # set aside for inspection, not deleted


def test_a_streamed_corpus_with_two_workers_resumes_exactly(tmp_path, tiny_recipe_fixed_tokenizer):
    """data.streaming over 4 files read by 2 DataLoader workers (each its own shards): a run killed with SIGKILL
    mid-way resumes from its saved stream positions and ends like the uninterrupted one."""
    from hf_pretrain.data.builtin import load_builtin_corpus

    texts = [" ".join(t.split()) for t in load_builtin_corpus()["text"][:240]]
    for shard in range(4):
        (tmp_path / f"part-{shard}.txt").write_text("\n".join(texts[shard::4]) + "\n")
    settings = ["data.source=files", f"data.train_files={tmp_path}/part-*.txt", "data.streaming=true",
                "data.max_documents=null", "train.num_workers=2", "train.max_steps=14", "train.save_every=4"]
    reference, resumed, command, process = run_reference_and_start_another(
        tmp_path, tiny_recipe_fixed_tokenizer, settings
    )
    kill_when_step_logged(process, resumed / "metrics.jsonl", step=9)
    assert not (resumed / "final").exists()
    result = run_cli(tmp_path, *command[3:])
    assert "resumed from" in result.stderr
    assert "continue from their saved positions" in result.stderr  # the readers' states, nothing read again
    assert step_losses(resumed) == step_losses(reference)
    assert_same_weights(final_weights(resumed), final_weights(reference))
