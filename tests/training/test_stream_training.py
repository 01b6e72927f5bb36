"""A streamed corpus in the loop: every process and DataLoader worker reads its own shards, never through
Accelerate's dataloader wrappers; 2 processes x 2 workers train every document exactly once per epoch; a run
killed with SIGKILL on 2 processes resumes from its saved stream positions to the uninterrupted run's losses and
weights, bit for bit; a resume on another layout, or after a corpus file was edited, and a corpus with fewer shards
than readers are refused before any step; on one process with 2 workers, a SIGTERM saves the readers' positions
and the rerun ends bit for bit like the uninterrupted run. (One process, 2 workers, SIGKILL: test_pretrain_cli.py's
streamed test; a streamed mixture: test_mixture_cli.py.)"""

from __future__ import annotations

import gzip
import json
import math
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from stream_corpus import (
    document_counts,
    document_word,
    expected_counts,
    numbered_document,
    word_tokenizer,
)
from test_pretrain_cli import (
    DAE_SETTINGS,
    assert_same_weights,
    cli_env,
    final_weights,
    free_port,
    kill_when_step_logged,
    run_cli,
    run_cli_in_process,
    step_losses,
    wait_for_step,
)

from hf_pretrain.recipe import RecipeError, load_recipe
from hf_pretrain.training.loop import Pretraining

# 16 files of 10 numbered documents, each file 90 tokens: with 4 readers (2 processes x 2 workers) a reader's epoch
# is 4 files, 360 tokens, 12 blocks of 30, 2 micro-batches of 6; a step of both processes takes one micro-batch
# each, so steps 1-4 are every reader's epoch 0 and steps 5-8 its epoch 1.
FILES, PER_FILE = 16, 10
STREAM_RECIPE = """\
objective: mlm
model:
  config: {{hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64,
           max_position_embeddings: 32}}
tokenizer: {{path: {tokenizer}}}
data: {{source: files, train_files: '{corpus}/part-*.txt', validation_files: ['{corpus}/valid.txt'], block_size: 30,
        streaming: true, shuffle_buffer: 1}}
masking: {{mlm_probability: 0.3}}
train: {{batch_size: 6, lr: 3.0e-3, max_steps: 8, eval_every: 4, eval_batches: 1, save_every: 2, keep_last: 10,
        seed: 3, num_workers: 2}}
output: {{log_with: [], progress_bar: false}}
"""


@pytest.fixture(scope="module")
def stream_recipe(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("stream")
    corpus = folder / "corpus"
    corpus.mkdir()
    for part in range(FILES):
        numbers = range(part * PER_FILE, (part + 1) * PER_FILE)
        (corpus / f"part-{part:02d}.txt").write_text("\n".join(numbered_document(n) for n in numbers) + "\n")
    (corpus / "valid.txt").write_text("\n".join(numbered_document(n) for n in range(1000, 1060)) + "\n")
    word_tokenizer(folder / "tokenizer", [document_word(n) for n in [*range(FILES * PER_FILE), *range(1000, 1060)]])
    recipe = folder / "stream.yaml"
    recipe.write_text(STREAM_RECIPE.format(tokenizer=folder / "tokenizer", corpus=corpus))
    return recipe


def recipe_in(recipe: Path, run_dir: Path, *overrides: str):
    return load_recipe(str(recipe), [f"output.dir={run_dir}", *overrides])


# ----------------------------------------------------------------------------------------------- one process
def test_the_streamed_loader_is_not_wrapped_by_accelerate_and_an_edited_file_is_refused(tmp_path, stream_recipe,
                                                                                         monkeypatch):
    """Accelerate's wrappers would read the stream on rank 0 alone or drop 1/P of each rank's data: the streamed
    train loader is a plain DataLoader the accelerator never saw. A corpus file edited after a checkpoint would
    put the saved offsets in other lines: the rerun is refused, naming the file, before any step."""
    from accelerate.data_loader import DataLoaderDispatcher, DataLoaderShard

    from hf_pretrain.data.stream_state import StreamLoader
    from hf_pretrain.training.streamed import StreamBatches

    monkeypatch.setenv("HF_PRETRAIN_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus"
    shutil.copytree(stream_recipe.parent / "corpus", corpus)
    own_corpus = [f"data.train_files={corpus}/part-*.txt", f"data.validation_files={corpus}/valid.txt",
                  "train.num_workers=0"]
    run_dir = tmp_path / "run"
    run = Pretraining(recipe_in(stream_recipe, run_dir, *own_corpus, "train.max_steps=2"))
    assert isinstance(run.batches, StreamBatches) and isinstance(run.batches.loader, StreamLoader)
    loader = run.batches.loader.loader
    assert type(loader) is torch.utils.data.DataLoader
    assert not isinstance(loader, (DataLoaderShard, DataLoaderDispatcher))
    assert all(prepared is not loader for prepared in run.accelerator._dataloaders)
    assert [type(prepared) for prepared in run.accelerator._dataloaders] == [DataLoaderShard]  # the eval loader
    run.run()
    assert (run_dir / "checkpoints" / "step-00000002" / "data" / "stream-rank0.json").is_file()

    edited = corpus / "part-03.txt"
    with open(edited, "a") as handle:
        handle.write(numbered_document(3) + "\n")
    with pytest.raises(RecipeError) as refused:
        Pretraining(recipe_in(stream_recipe, run_dir, *own_corpus, "train.max_steps=4"))
    message = str(refused.value)
    assert "saved the stream's position for another reading layout" in message and "--restart" in message
    assert f"files edited (size or modification time) [{str(edited)!r}]" in message
    assert sorted(step_losses(run_dir)) == [1, 2]  # no step was taken


def test_a_corpus_with_fewer_shards_than_readers_is_refused_before_the_tokenizer_is_trained(tmp_path, monkeypatch,
                                                                                            capsys):
    with gzip.open(tmp_path / "corpus.jsonl.gz", "wt") as handle:
        handle.write("".join(json.dumps({"text": f"document number {n}"}) + "\n" for n in range(50)))
    result = run_cli_in_process(
        tmp_path, monkeypatch, capsys, "pretrain", "mlm-tiny", "data.source=files",
        f"data.train_files={tmp_path}/corpus.jsonl.gz", "data.streaming=true", "data.max_documents=null",
        "train.num_workers=2", f"output.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert "source 'files' has 1 shard(s) (1 file(s) that are read whole" in result.stderr
    assert "2 readers (1 process(es) x 2 DataLoader worker(s)" in result.stderr
    assert not (tmp_path / "run" / "tokenizer").exists() and not (tmp_path / "cache").exists()


def test_sigterm_saves_the_stream_position_and_the_rerun_resumes_exactly(tmp_path, stream_recipe):
    """One process, 2 DataLoader workers: SIGTERM after step 3 saves a checkpoint at the current step (save_every
    is far away, so only the signal saves) with the readers' positions, exit 128 + 15; the rerun continues from them
    and ends with the uninterrupted run's losses and final weights, bit for bit."""
    reference, run_dir = tmp_path / "reference", tmp_path / "run"

    def command(folder: Path) -> list[str]:
        return [sys.executable, "-m", "hf_pretrain", "pretrain", str(stream_recipe), f"output.dir={folder}",
                "train.max_steps=12", "train.save_every=100"]

    def start(folder: Path, **output) -> subprocess.Popen:
        output = output or {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT}
        return subprocess.Popen(command(folder), env=cli_env(tmp_path), cwd=tmp_path, text=True, **output)

    finish(start(reference))
    process = start(run_dir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for_step(process, run_dir / "metrics.jsonl", step=3)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "Run the same command again to resume" in stderr
    (saved,) = (run_dir / "checkpoints").glob("step-*")
    stopped_at = json.loads((saved / "trainer_state.json").read_text())["step"]
    assert 3 <= stopped_at < 12 and max(step_losses(run_dir)) == stopped_at and not (run_dir / "final").exists()
    assert sorted(p.name for p in (saved / "data").iterdir()) == ["stream-rank0.json", "stream-rank0.safetensors"]

    output = finish(start(run_dir))
    assert f"resumed from {saved}" in output and "continue from their saved positions" in output
    assert step_losses(run_dir) == step_losses(reference)
    assert_same_weights(final_weights(run_dir), final_weights(reference))


# ----------------------------------------------------------------------------------------------- whole documents
# objective dae on the stream: one document per row. With batch 8 and 2 DataLoader workers (2 readers of 8 files, 80
# documents each), a reader's epoch is 10 micro-batches: steps 1-20 are every reader's epoch 0, steps 21-40 epoch 1.
DAE_STREAM = [*DAE_SETTINGS, "train.batch_size=8", "train.eval_every=20"]


def test_a_streamed_denoising_run_trains_each_whole_document_once_per_epoch(tmp_path, stream_recipe, monkeypatch,
                                                                             capsys):
    """objective=dae with data.streaming=true through the CLI (in this process, to record what is trained), 16
    files read by 2 DataLoader workers: every row's labels are one whole document, every document is trained
    exactly once in steps 1-20 and once again in steps 21-40; the loss falls and final/ loads."""
    from transformers import AutoModel, AutoTokenizer

    from hf_pretrain.training.loop import Pretraining

    trained = []  # (step, clean documents of the micro-batch: its labels)
    forward_loss = Pretraining.forward_loss

    def recording(self, batch, items_in_step):
        trained.append((self.state.step + 1, [row[row != -100].tolist() for row in batch["labels"]]))
        return forward_loss(self, batch, items_in_step)

    monkeypatch.setattr(Pretraining, "forward_loss", recording)
    run_dir = tmp_path / "run"
    # (spectral init, pooling weights and pooled center read the stream's first training documents)
    result = run_cli_in_process(tmp_path, monkeypatch, capsys, "pretrain", str(stream_recipe), f"output.dir={run_dir}",
                                *DAE_STREAM, "train.max_steps=40", "train.save_every=100",
                                "model.embedding_init=spectral", "model.config.sentence_pooling=weighted_mean")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "spectral" in result.stderr.lower() and "token weights a / (a + p(token))" in result.stderr
    weights = final_weights(run_dir)
    (center,) = [value for name, value in weights.items() if name.endswith("pooled_center")]
    (token_weights,) = [value for name, value in weights.items() if name.endswith("token_pooling_weights")]
    assert center.abs().sum() > 0 and (token_weights < 1).any()
    tokenizer = AutoTokenizer.from_pretrained(str(stream_recipe.parent / "tokenizer"))
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    by_epoch = [Counter(), Counter()]
    assert [step for step, _ in trained] == list(range(1, 41))
    for step, documents in trained:
        assert len(documents) == 8
        for ids in documents:
            (word,) = set(tokenizer.convert_ids_to_tokens(ids[1:-1]))
            assert ids[0] == cls and ids[-1] == sep and len(ids) - 2 == int(word[1:]) % 5 * 2 + 3  # the whole document
            by_epoch[(step - 1) // 20][word] += 1
    for epoch in by_epoch:
        assert epoch == Counter({document_word(n): 1 for n in range(FILES * PER_FILE)})
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final_eval"]["loss"] < summary["initial_eval"]["loss"]
    model = AutoModel.from_pretrained(run_dir / "final", trust_remote_code=True)
    vectors = model(**tokenizer([numbered_document(1), numbered_document(2)], return_tensors="pt",
                                padding=True)).pooler_output
    assert vectors.shape == (2, 32) and torch.isfinite(vectors).all()


def test_a_streamed_denoising_run_killed_with_sigkill_resumes_exactly(tmp_path, stream_recipe, monkeypatch, capsys):
    """The same run killed with SIGKILL after step 6 (checkpoints every step) resumes from its readers' saved
    positions, into their next epoch, and ends with the uninterrupted run's per-step losses and weights, bit for
    bit. (The uninterrupted run runs in this process, on one thread as the CLI's subprocesses do: ~13 s less.)"""
    settings = [*DAE_STREAM, "train.max_steps=26", "train.save_every=1"]
    reference, resumed = tmp_path / "reference", tmp_path / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # cli_env's OMP_NUM_THREADS=1
    try:
        result = run_cli_in_process(tmp_path, monkeypatch, capsys, "pretrain", str(stream_recipe),
                                    f"output.dir={reference}", *settings)
    finally:
        torch.set_num_threads(threads)
    assert result.returncode == 0, result.stderr[-3000:]
    command = [sys.executable, "-m", "hf_pretrain", "pretrain", str(stream_recipe), f"output.dir={resumed}", *settings]
    process = subprocess.Popen(command, env=cli_env(tmp_path), cwd=tmp_path, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    kill_when_step_logged(process, resumed / "metrics.jsonl", step=6)
    assert not (resumed / "final").exists()
    result = run_cli(tmp_path, *command[3:])
    assert "resumed from" in result.stderr and "continue from their saved positions" in result.stderr
    losses = step_losses(resumed)
    assert losses == step_losses(reference) and sorted(losses) == list(range(1, 27))
    assert all(math.isfinite(loss) for loss in losses.values())
    assert_same_weights(final_weights(resumed), final_weights(reference))


# ----------------------------------------------------------------------------------------------- two processes
RECORDER = """\
import json, sys
from hf_pretrain.recipe import load_recipe
from hf_pretrain.training.loop import Pretraining

class Recorder(Pretraining):  # the original token ids of every micro-batch this rank trains (MLM labels hold
    def forward_loss(self, batch, items_in_step):  # the masked positions' originals)
        ids = batch["labels"].where(batch["labels"] != -100, batch["input_ids"])
        self.trained.append([self.state.step + 1, ids.reshape(-1).tolist()])
        return super().forward_loss(batch, items_in_step)

run = Recorder(load_recipe(sys.argv[1], sys.argv[3:]))
run.trained = []
run.run()
open(f"{sys.argv[2]}/rank{run.accelerator.process_index}.json", "w").write(json.dumps(run.trained))
"""


def launch(tmp_path: Path, *arguments: str) -> subprocess.Popen:
    """torchrun with 2 processes (gloo on CPU)."""
    return subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
         *arguments], env=cli_env(tmp_path), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (torchrun starts its ranks in sessions of their own, so a process group does not
    reach them), read from /proc."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-4000:]
    return output


@pytest.mark.skipif(sys.platform != "linux", reason="gloo multi-process test written for Linux")
def test_two_processes_with_two_workers_train_each_document_once_per_epoch_and_resume_after_sigkill(
        tmp_path, stream_recipe, monkeypatch, capsys):
    """2 processes x 2 DataLoader workers (4 readers, each with its own shards): the documents trained in steps 1-4
    are the corpus, each exactly once, and again in steps 5-8. The same command killed with SIGKILL (every process
    of it) after step 3 resumes from its checkpoint's stream positions and ends with the uninterrupted run's
    losses and final weights, bit for bit. Resuming it on 1 process (the same global batch) is refused, naming the
    layout that was saved."""
    from transformers import AutoTokenizer

    reference, recorded = tmp_path / "reference", tmp_path / "recorded"
    recorded.mkdir()
    (tmp_path / "record.py").write_text(RECORDER)
    steps = "train.max_steps=40"  # long enough for the kill to come before the end
    finish(launch(tmp_path, str(tmp_path / "record.py"), str(stream_recipe), str(recorded),
                  f"output.dir={reference}", steps))
    tokenizer = AutoTokenizer.from_pretrained(str(stream_recipe.parent / "tokenizer"))
    by_epoch = [Counter() for _ in range(10)]
    for rank in (0, 1):
        trained = json.loads((recorded / f"rank{rank}.json").read_text())
        assert [step for step, _ in trained] == list(range(1, 41))
        for step, ids in trained:
            by_epoch[(step - 1) // 4].update(document_counts(ids, tokenizer))
    for epoch in by_epoch:
        assert epoch == expected_counts(range(FILES * PER_FILE))

    killed = tmp_path / "killed"
    command = ["-m", "hf_pretrain", "pretrain", str(stream_recipe), f"output.dir={killed}", steps]
    # A checkpoint every step (saves change no number) slows the run down enough for the kill to land mid-run.
    process = launch(tmp_path, *command, "train.save_every=1")
    wait_for_step(process, killed / "metrics.jsonl", step=3)
    for pid in [*descendants(process.pid), process.pid]:  # both ranks and their DataLoader workers, then torchrun
        os.kill(pid, signal.SIGKILL)
    process.communicate(timeout=60)
    assert not (killed / "final").exists()
    layout_check = tmp_path / "layout-check"
    shutil.copytree(killed, layout_check)

    output = finish(launch(tmp_path, *command))
    assert "continue from their saved positions" in output
    assert step_losses(killed) == step_losses(reference)
    assert_same_weights(final_weights(killed), final_weights(reference))
    saved = max((reference / "checkpoints").glob("step-*")) / "data"
    assert sorted(p.name for p in saved.iterdir()) == [f"stream-rank{r}.{e}" for r in (0, 1)
                                                        for e in ("json", "safetensors")]

    (layout_check / ".lock").unlink(missing_ok=True)
    result = run_cli_in_process(tmp_path, monkeypatch, capsys, "pretrain", str(stream_recipe),
                                f"output.dir={layout_check}", steps, "train.batch_size=12")
    assert result.returncode == 2
    assert "processes: saved 2, now 1" in result.stderr and "Resume with the saved layout (2 process(es)" in result.stderr


def test_a_hub_dataset_streams_per_reader_and_evaluates_on_its_own_validation_split(tmp_path, monkeypatch, capsys):
    """source=hub with data.streaming: the dataset's data files (here a local dataset folder, read through the same
    `datasets` builder as a Hub id; the Hub itself is unreachable here) are cut into shards like local files. Its
    own validation split is the eval text, so the training readers hold nothing out of the training split."""
    import json

    repo = tmp_path / "repo" / "data"
    repo.mkdir(parents=True)
    for part in range(FILES):
        rows = [json.dumps({"text": numbered_document(n)}) for n in range(part * PER_FILE, (part + 1) * PER_FILE)]
        (repo / f"train-{part:05d}-of-{FILES:05d}.jsonl").write_text("\n".join(rows) + "\n")
    (repo / "validation-00000-of-00001.jsonl").write_text(
        "\n".join(json.dumps({"text": numbered_document(n)}) for n in range(1000, 1060)) + "\n")
    word_tokenizer(tmp_path / "tokenizer", [document_word(n) for n in [*range(FILES * PER_FILE), *range(1000, 1060)]])
    recipe = tmp_path / "hub.yaml"
    recipe.write_text(STREAM_RECIPE.format(tokenizer=tmp_path / "tokenizer", corpus=tmp_path).replace(
        f"source: files, train_files: '{tmp_path}/part-*.txt', validation_files: ['{tmp_path}/valid.txt']",
        f"source: hub, hub_dataset: '{tmp_path / 'repo'}'"))
    run_dir = tmp_path / "run"
    result = run_cli_in_process(tmp_path, monkeypatch, capsys, "pretrain", str(recipe), f"output.dir={run_dir}",
                                "train.num_workers=1", "train.max_steps=4")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(step_losses(run_dir)) == [1, 2, 3, 4]
    reports = [line for line in result.stderr.splitlines() if line.startswith("stream source 'hub'")]
    assert reports and all("| 0 held out for validation |" in line for line in reports)
