"""A mixture of sources (data.sources) through the real CLI: per-source eval and reports, the trained blocks in the
mixture's order and at its shares, SIGKILL resume bit for bit, a streamed mixture's source per slot and its
SIGTERM resume, and bad entries refused before any work.

Every file source's documents are numbered words of its own (tests/data/stream_corpus.py) under a word-level
tokenizer that also knows the built-in corpus's words, so the tokens of a trained block say which source it came
from without asking the package. The trained micro-batches are recorded by a tap around the CLI's own main(): the
run is `hf-pretrain pretrain`, with `Pretraining.forward_loss` wrapped to note what it trains."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from stream_corpus import SPECIAL, document_word, numbered_document, word_tokenizer
from test_pretrain_cli import (
    assert_same_weights,
    cli_env,
    eval_records,
    final_weights,
    kill_when_step_logged,
    run_cli,
    run_cli_in_process,
    step_losses,
    wait_for_step,
)

from hf_pretrain.data.mixing import MixtureBatchSampler, slot_counts
from hf_pretrain.data.mixture import slot_sources

# Run as `python tap.py RECORD hf-pretrain-arguments...`: the CLI's main(), each trained micro-batch noted (its
# step and original token ids: MLM labels hold the masked positions' originals; the collator drops the row
# numbers), and the objective's in-memory training blocks (none when streamed), to find the rows by their ids.
TAP = """\
import json, sys
import torch
import hf_pretrain.training.loop as loop
from hf_pretrain.cli import main

record, forward_loss = {"trained": [], "dataset": None}, loop.Pretraining.forward_loss

def recording(self, batch, items_in_step):
    if record["dataset"] is None and not isinstance(self.objective.train_dataset, torch.utils.data.IterableDataset):
        record["dataset"] = [list(map(int, ids)) for ids in self.objective.train_dataset["input_ids"]]
    ids = batch["labels"].where(batch["labels"] != -100, batch["input_ids"])
    record["trained"].append({"step": self.state.step + 1, "ids": ids.tolist()})
    return forward_loss(self, batch, items_in_step)

loop.Pretraining.forward_loss = recording
code = main(sys.argv[2:])
open(sys.argv[1], "w").write(json.dumps(record))
raise SystemExit(code)
"""

NAMES, WEIGHTS = ["general", "legal", "code"], [0.5, 0.3, 0.2]
# Built-in documents for `general`; `legal` and `code` are numbered documents (~9 tokens each) of their own words.
BUILTIN_DOCUMENTS, LEGAL_DOCUMENTS, CODE_DOCUMENTS, CODE_FILES = 30, 120, 80, 4
STEPS, BATCH = 24, 8
MIXTURE_RECIPE = """\
objective: mlm
model:
  config: {{hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64,
           max_position_embeddings: 32}}
tokenizer: {{path: {folder}/tokenizer}}
data:
  block_size: 32
  validation_fraction: 0.1
  sources:
    - {{name: general, weight: 0.5, source: builtin, max_documents: {builtin}}}
    - {{name: legal, weight: 0.3, source: files, train_files: ['{folder}/legal.jsonl']}}
    - {{name: code, weight: 0.2, train_files: '{folder}/code-*.txt'}}
masking: {{mlm_probability: 0.3}}
probe: {{source: none}}
train: {{batch_size: {batch}, lr: 3.0e-3, schedule: wsd, warmup: 0.2, max_steps: {steps}, eval_every: 8,
        eval_batches: 2, save_every: 4, keep_last: 10, seed: 3}}
output: {{log_with: [], progress_bar: false}}
"""


def write_mixture_corpus(folder: Path) -> Path:
    from hf_pretrain.data.builtin import load_builtin_corpus

    (folder / "legal.jsonl").write_text("".join(
        json.dumps({"text": numbered_document(n, "legal")}) + "\n" for n in range(LEGAL_DOCUMENTS)))
    for part in range(CODE_FILES):
        numbers = range(part, CODE_DOCUMENTS, CODE_FILES)
        (folder / f"code-{part}.txt").write_text("\n".join(numbered_document(n, "code") for n in numbers) + "\n")
    builtin_words = {word for text in load_builtin_corpus()["text"][:BUILTIN_DOCUMENTS] for word in text.split()}
    word_tokenizer(folder / "tokenizer", [*builtin_words, *(document_word(n, "legal") for n in range(LEGAL_DOCUMENTS)),
                                          *(document_word(n, "code") for n in range(CODE_DOCUMENTS))])
    recipe = folder / "mixture.yaml"
    recipe.write_text(MIXTURE_RECIPE.format(folder=folder, builtin=BUILTIN_DOCUMENTS, batch=BATCH, steps=STEPS))
    return recipe


def run_tapped(folder: Path, record: Path, *args: str) -> subprocess.CompletedProcess:
    (folder / "tap.py").write_text(TAP)
    result = subprocess.run([sys.executable, str(folder / "tap.py"), str(record), *args], env=cli_env(folder),
                            cwd=folder, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def block_source(ids, tokenizer, prefixes: dict[str, str], default: str | None = None) -> set[str]:
    """The sources whose numbered words a block holds (`default` when it holds words but none of them)."""
    tokens = [t for t in tokenizer.convert_ids_to_tokens(ids) if t not in SPECIAL]
    found = {name for name, prefix in prefixes.items()
             if any(re.fullmatch(prefix + r"\d{5}", token) for token in tokens)}
    return found or ({default} if default and tokens else set())


@pytest.fixture(scope="module")
def mixture_run(tmp_path_factory):
    """One uninterrupted run of the mixture through the CLI, tapped: (folder, recipe, run folder, CLI result,
    the tap's record: the trained micro-batches and the objective's training blocks)."""
    folder = tmp_path_factory.mktemp("mixture")
    recipe = write_mixture_corpus(folder)
    run_dir, record = folder / "reference", folder / "trained.json"
    result = run_tapped(folder, record, "pretrain", str(recipe), f"output.dir={run_dir}")
    return folder, recipe, run_dir, result, json.loads(record.read_text())


# ----------------------------------------------------------------------------------------------- in memory
def test_a_mixture_trains_in_its_order_at_its_shares_and_evaluates_each_source(mixture_run):
    """Each source is reported (cleaning and packing) and evaluated on its own held-out text at every eval; the
    trained blocks are the MixtureBatchSampler's over the packed counts the run reported, in order across the
    epoch boundary, and every block's own words say it is of the source the mixture gives its slot."""
    from transformers import AutoTokenizer

    folder, _, run_dir, result, trained = mixture_run
    losses = step_losses(run_dir)
    assert sorted(losses) == list(range(1, STEPS + 1))
    # It learns: the last steps' losses are below the first ones'. (Held-out numbered documents are words never
    # trained, so the eval loss of legal and code rises as the model learns the trained words: no eval check.)
    assert sum(losses[s] for s in range(17, 25)) < sum(losses[s] for s in range(1, 9)) - 8 * 0.1

    evals = eval_records(run_dir)
    assert sorted(evals) == [0, 8, 16, 24]
    for step, record in evals.items():
        for name in ["", *(f"{n}/" for n in NAMES)]:
            assert np.isfinite(record[f"eval/{name}loss"]) and f"eval/{name}accuracy" in record, (step, name)

    counts = []
    for name, weight in zip(NAMES, WEIGHTS):
        assert f"text of source {name}: train: " in result.stderr, name  # its cleaning report
        packed = re.search(rf"source {name} \({weight:.1%} of the trained tokens\): train: packed [\d,]+ documents "
                           r"\([\d,]+ tokens\) into ([\d,]+) blocks.*; validation: packed", result.stderr)
        assert packed, (name, result.stderr[-3000:])
        counts.append(int(packed.group(1).replace(",", "")))

    sampler = MixtureBatchSampler(counts, WEIGHTS, BATCH, seed=3)
    assert len(sampler) < STEPS  # the run crosses an epoch boundary
    expected, epoch = [], 0
    while len(expected) < STEPS:
        sampler.set_epoch(epoch)
        expected.extend(sampler)
        epoch += 1
    expected = expected[:STEPS]
    # The objective's training rows are the sources' blocks one after the other: find each trained block's row
    # by its ids (a few blocks of the built-in text may repeat: any row holding those ids will do).
    assert len(trained["dataset"]) == sum(counts)
    rows_of = {}
    for row, ids in enumerate(trained["dataset"]):
        rows_of.setdefault(tuple(ids), set()).add(row)
    batches = trained["trained"]
    assert [batch["step"] for batch in batches] == list(range(1, STEPS + 1))
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
    offsets = np.cumsum(counts)
    seen = Counter()
    for batch, rows in zip(batches, expected):
        assert len(batch["ids"]) == len(rows) == BATCH
        for row, ids in zip(rows, batch["ids"]):
            assert row in rows_of.get(tuple(ids), set()), (batch["step"], row)  # the sampler's row, in its order
            found = block_source(ids, tokenizer, {"legal": "legal", "code": "code"}, default="general")
            assert len(found) == 1, (batch["step"], row, found)  # a block holds one source's text
            (source,) = found
            assert source == NAMES[int(np.searchsorted(offsets, row, side="right"))], (batch["step"], row)
            seen[source] += 1
    # The trained slots 0 .. STEPS * BATCH - 1, counted per source from the blocks' own words: the mixture's count.
    assert [seen[name] for name in NAMES] == slot_counts(STEPS * BATCH, WEIGHTS).tolist()
    for name, weight in zip(NAMES, WEIGHTS):
        assert abs(seen[name] / (STEPS * BATCH) - weight) < 0.01, (name, seen)


def test_a_killed_mixture_run_resumes_exactly(mixture_run, tmp_path):
    """SIGKILL after the epoch boundary; the rerun continues the mixture's batches from its checkpoint and ends with
    the uninterrupted run's losses, per-source eval and final weights, bit for bit."""
    folder, recipe, reference, _, _ = mixture_run
    run_dir = tmp_path / "run"
    command = ["pretrain", str(recipe), f"output.dir={run_dir}"]
    # A checkpoint every step (saves change no number) slows the run enough for the kill to land mid-run.
    process = subprocess.Popen([sys.executable, "-m", "hf_pretrain", *command, "train.save_every=1"],
                               env=cli_env(tmp_path), cwd=tmp_path, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    kill_when_step_logged(process, run_dir / "metrics.jsonl", step=18)
    assert not (run_dir / "final").exists()
    state = json.loads((sorted((run_dir / "checkpoints").glob("step-*"))[-1] / "trainer_state.json").read_text())
    assert state["epoch"] >= 1 and state["batches_in_epoch"] > 0, state  # mid-way through the second epoch

    result = run_cli(tmp_path, *command)
    assert "resumed from" in result.stderr
    assert step_losses(run_dir) == step_losses(reference)
    assert eval_records(run_dir) == eval_records(reference)  # the per-source evals too
    assert_same_weights(final_weights(run_dir), final_weights(reference))


# ----------------------------------------------------------------------------------------------- streamed
STREAM_FILES, STREAM_PER_FILE, STREAM_STEPS, STREAM_BATCH, STREAM_WEIGHTS = 8, 20, 16, 6, [0.7, 0.3]
STREAM_RECIPE = """\
objective: mlm
model:
  config: {{hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64,
           max_position_embeddings: 32}}
tokenizer: {{path: {folder}/tokenizer}}
data:
  block_size: 30
  streaming: true
  shuffle_buffer: 4
  sources:
    - {{name: alpha, weight: 0.7, train_files: '{folder}/alpha/part-*.txt',
        validation_files: ['{folder}/alpha/valid.txt']}}
    - {{name: beta, weight: 0.3, train_files: '{folder}/beta/part-*.txt',
        validation_files: ['{folder}/beta/valid.txt']}}
masking: {{mlm_probability: 0.3}}
train: {{batch_size: {batch}, lr: 3.0e-3, max_steps: {steps}, eval_every: 8, eval_batches: 1, save_every: 100,
        seed: 3, num_workers: 2}}
output: {{log_with: [], progress_bar: false}}
"""


def test_a_streamed_mixture_trains_each_slot_from_its_source_and_resumes_exactly(tmp_path):
    """data.streaming with two sources of 8 files each, 1 process x 2 DataLoader workers: the c-th trained
    micro-batch fills global slots c * B .. c * B + B - 1, and each of its blocks holds the words of the source
    slot_sources gives its slot; the counts per source are the mixture's. Each source's readers are reported.
    Stopped by SIGTERM after step 3 (every source's readers save their positions), the rerun ends with the
    uninterrupted run's losses and final weights, bit for bit."""
    from transformers import AutoTokenizer

    numbers = range(STREAM_FILES * STREAM_PER_FILE)
    for prefix in ("alpha", "beta"):
        (tmp_path / prefix).mkdir()
        for part in range(STREAM_FILES):
            (tmp_path / prefix / f"part-{part}.txt").write_text(
                "\n".join(numbered_document(n, prefix) for n in numbers[part::STREAM_FILES]) + "\n")
        (tmp_path / prefix / "valid.txt").write_text(
            "\n".join(numbered_document(n, prefix) for n in range(1000, 1030)) + "\n")
    word_tokenizer(tmp_path / "tokenizer", [document_word(n, prefix) for prefix in ("alpha", "beta")
                                            for n in [*numbers, *range(1000, 1030)]])
    recipe = tmp_path / "stream.yaml"
    recipe.write_text(STREAM_RECIPE.format(folder=tmp_path, batch=STREAM_BATCH, steps=STREAM_STEPS))
    run_dir, record = tmp_path / "run", tmp_path / "trained.json"
    result = run_tapped(tmp_path, record, "pretrain", str(recipe), f"output.dir={run_dir}")

    assert sorted(step_losses(run_dir)) == list(range(1, STREAM_STEPS + 1))
    for evaluated in eval_records(run_dir).values():  # the mixed eval and each source's own
        assert all(np.isfinite(evaluated[f"eval/{name}loss"]) for name in ("", "alpha/", "beta/")), evaluated
    for name in ("alpha", "beta"):
        assert re.search(rf"stream source '{name}': [\d,]+ documents read by 2 reader\(s\)", result.stderr), name

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tokenizer")
    trained = json.loads(record.read_text())["trained"]
    assert [batch["step"] for batch in trained] == list(range(1, STREAM_STEPS + 1))
    seen = []
    for consumed, batch in enumerate(trained):
        for ids in batch["ids"]:
            found = block_source(ids, tokenizer, {"alpha": "alpha", "beta": "beta"})
            assert len(found) == 1, (batch["step"], found)  # a block holds one source's text
            seen.append(["alpha", "beta"].index(found.pop()))
    slots = np.arange(STREAM_STEPS * STREAM_BATCH)
    assert seen == slot_sources(slots, STREAM_WEIGHTS).tolist()
    assert np.bincount(seen).tolist() == slot_counts(len(slots), STREAM_WEIGHTS).tolist()

    stopped = tmp_path / "stopped"
    command = [sys.executable, "-m", "hf_pretrain", "pretrain", str(recipe), f"output.dir={stopped}"]
    process = subprocess.Popen(command, env=cli_env(tmp_path), cwd=tmp_path, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    wait_for_step(process, stopped / "metrics.jsonl", step=3)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert not (stopped / "final").exists()
    result = run_cli(tmp_path, *command[3:])
    assert "continue from their saved positions" in result.stderr
    assert step_losses(stopped) == step_losses(run_dir)
    assert_same_weights(final_weights(stopped), final_weights(run_dir))


# ----------------------------------------------------------------------------------------------- refused
@pytest.mark.parametrize("entry, message", [
    ("{name: legal, weight: 0, train_files: x.txt}", "data.sources[1].weight=0.0 is not allowed; it must be > 0.0"),
    ("{name: legal, weight: -0.5, train_files: x.txt}",
     "data.sources[1].weight=-0.5 is not allowed; it must be > 0.0"),
    ("{name: legal, weight: .inf, train_files: x.txt}", "data.sources[1].weight=inf is not allowed; it must be a "
                                                         "finite number"),
    ("{name: general, weight: 0.3, train_files: x.txt}",
     "data.sources[1].name='general' is also the name of data.sources[0]; each source needs its own name"),
    ("{weight: 0.3, train_files: x.txt}", "data.sources[1].name is missing: each source of data.sources needs a "
                                          "unique name"),
    ("{name: legal, train_files: x.txt}", "data.sources[1].weight is missing"),
    ("{name: 'legal/eval', weight: 0.3, train_files: x.txt}", "data.sources[1].name='legal/eval' is not allowed; use "
                                                               "letters, digits"),
    ("{name: legal, weight: 0.3, trian_files: x.txt}",
     "unknown key 'data.sources[1].trian_files'; did you mean 'data.sources[1].train_files'?"),
    ("{name: legal, weight: 0.3, source: files}", "data.sources[1].source='files' needs data.sources[1].train_files"),
])
def test_a_bad_source_entry_is_refused_before_any_work(tmp_path, monkeypatch, capsys, entry, message):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(f"objective: mlm\ndata:\n  sources:\n    - {{name: general, weight: 0.7, source: builtin}}\n"
                      f"    - {entry}\ntrain: {{max_steps: 2}}\n")
    result = run_cli_in_process(tmp_path, monkeypatch, capsys, "pretrain", str(recipe),
                                f"output.dir={tmp_path / 'run'}")
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_a_source_whose_validation_text_holds_no_block_is_named(tmp_path, monkeypatch, capsys):
    """A mixture evaluates every source on its own blocks: one whose held-out text is shorter than a block is
    refused naming the entry, its split and what it packed (not "source(s) [1]")."""
    (tmp_path / "legal.txt").write_text("\n".join(f"clause {n} of the contract binds the parties" for n in range(60)))
    (tmp_path / "legal-valid.txt").write_text("a short clause\n")
    recipe = tmp_path / "mixture.yaml"
    recipe.write_text(f"""\
objective: mlm
tokenizer: {{kind: bpe, vocab_size: 300}}
data:
  block_size: 32
  validation_fraction: 0.1
  sources:
    - {{name: general, weight: 0.7, source: builtin, max_documents: 40}}
    - {{name: legal, weight: 0.3, train_files: ['{tmp_path}/legal.txt'],
        validation_files: ['{tmp_path}/legal-valid.txt']}}
train: {{max_steps: 2}}
""")
    result = run_cli_in_process(tmp_path, monkeypatch, capsys, "pretrain", str(recipe),
                                f"output.dir={tmp_path / 'run'}")
    assert result.returncode == 2, result.stderr
    assert "data.sources[1] ('legal'): its validation text packs into no block of 32 tokens" in result.stderr
    assert "into 0 blocks of 32" in result.stderr and "validation_files" in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_streamed_mixture_with_a_first_n_documents_limit_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    (tmp_path / "legal.txt").write_text("a clause\n")
    recipe = tmp_path / "stream.yaml"
    recipe.write_text(f"""\
objective: mlm
data:
  streaming: true
  sources:
    - {{name: general, weight: 0.7, source: builtin}}
    - {{name: legal, weight: 0.3, train_files: ['{tmp_path}/legal.txt'], max_documents: 50}}
train: {{max_steps: 2}}
""")
    result = run_cli_in_process(tmp_path, monkeypatch, capsys, "pretrain", str(recipe),
                                f"output.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert "data.sources[1].max_documents=50 with data.streaming=true and source='files'" in result.stderr
    # Refused where the stream is planned, after the run folder got its recipe.yaml (`hf-pretrain tokenizer` may
    # read the first N documents of a stream, so the recipe itself is not refused): no tokenizer, no cache.
    assert not (tmp_path / "run" / "tokenizer").exists() and not (tmp_path / "cache").exists()
