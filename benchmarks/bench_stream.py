"""Streamed corpus reader benchmark (issue 28, item 6 and item 3's resume): the per-process stream
(data/block_stream.py, data/stream_state.py) as the training loop reads it (training/streamed.py StreamBatches:
plan_recipe_stream -> BlockStream -> StreamLoader with the recipe's MLM collator), without a model.

What it measures, per corpus size (`--sizes-gb`, default 0.5 1 2):

1. Corpus: `--files` JSON Lines files of synthetic English-like text (a fixed vocabulary of 5,000 made-up words
   drawn with a Zipf law, capitalized sentences of 3-30 words, documents of 8-4,000 words, each with its number
   in an "id" field), written with numpy into `--work-dir` (default /tmp/bench_stream) and reused when there.
2. A byte-level BPE tokenizer (the recipe's, `train_recipe_tokenizer`), trained once on a sample and reused.
3. Loader throughput: tokens/s delivered to the loop (micro-batches of train.batch_size x data.block_size:
   mlm-tiny's 32 x 128, masked by the recipe's collator) over `--batches` micro-batches after `--warmup`, with
   1 process and with 2 processes (torchrun, gloo, the loop's own Accelerator: each rank reads its own shards),
   each with train.num_workers 0 and 2. Time to first batch: from planning the stream (listing its shards) to the
   first micro-batch.
4. Bytes read per rank: /proc/<pid>/io rchar and read_bytes of the process and of its DataLoader workers over the
   measured batches, next to the bytes of text its readers advanced over (from the saved reader positions), and
   the shards each rank touched (two ranks must touch disjoint shards).
5. The non-streamed cached path (data.streaming=false: load_text_splits + pack_dataset into a fresh cache, then
   the prepared DataLoader) at `--cached-gb` only (it tokenizes the whole corpus before step 1): time to first
   batch cold and on a second launch (cache hit), its tokens/s of preparation, bytes read and written, and its
   time to first batch extrapolated linearly to each size (marked as extrapolated).
6. Peak RSS (ru_maxrss of the process; VmHWM of each DataLoader worker) per size and configuration.
7. Resume: one process consumes `--resume-batches` x 1, 4 and 16 micro-batches, saves the stream state as the
   loop's checkpoint does (StreamBatches.checkpoint_files -> data/stream-rank0.*), and a new StreamBatches with
   resume_from times construction -> first batch; its first batch is asserted bit-equal to the batch the
   uninterrupted reader gives there. Compared with the replay time (reading those batches from the start), with
   the state's size in bytes.

Every measurement runs in a fresh sub-process (its own /proc/self/io, ru_maxrss). CPUs: `--single-cpus` pins the
one-process parts and `--multi-cpus` the two-process part (taskset). The page cache is not dropped: the corpus
was just written, so read_bytes (disk reads) is ~0 and rchar (bytes through read()) is the figure that counts.

    HF_HUB_OFFLINE=1 taskset -c 0 .venv/bin/python benchmarks/bench_stream.py --quick            # < 1-2 min
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_stream.py --single-cpus 1 --multi-cpus 0,1 \\
        --sizes-gb 0.5 1 2 --batches 400 --out results.json

Nothing here is a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
RECIPE = "mlm-tiny"
WORDS = 5000
FIRST_WORDS = ("the of and to a in is that it was for on are as with his they at be this from have or by one had "
               "not but what all were when we there can an your which their said if do will each about how up out "
               "them then she many some so these would other into has more her two like him see time could no make "
               "than first been its who now people my made over did down only way find use may water long little "
               "very after words called just where most know").split()


# --------------------------------------------------------------------------------------------------- measuring
def proc_io(pid: int | str = "self") -> dict[str, int]:
    try:
        lines = Path(f"/proc/{pid}/io").read_text().split("\n")
    except OSError:
        return {}
    return {key: int(value) for key, value in (line.split(": ") for line in lines if line)}


def vm_hwm_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().split("\n"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU seconds of a process so far (/proc/<pid>/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def io_delta(before: dict, after: dict) -> dict[str, int]:
    return {key: after.get(key, 0) - before.get(key, 0) for key in ("rchar", "read_bytes", "wchar", "write_bytes")}


def sum_io(parts: list[dict]) -> dict[str, int]:
    keys = {key for part in parts for key in part}
    return {key: sum(part.get(key, 0) for part in parts) for key in keys}


# --------------------------------------------------------------------------------------------------- corpus
def make_vocabulary(rng):
    """WORDS made-up words (common English words first), shortest first, so frequent words are short."""
    import numpy as np

    consonants = list("bcdfghjklmnprstvwyz") + ["th", "ch", "sh", "st", "tr", "pl", "gr", "br"]
    vowels = list("aeiou") + ["ea", "ou", "ai", "io"]
    words, seen = list(FIRST_WORDS), set(FIRST_WORDS)
    while len(words) < WORDS:
        syllables = int(rng.choice([1, 2, 2, 3, 3, 3, 4]))
        word = "".join(consonants[rng.integers(len(consonants))] + vowels[rng.integers(len(vowels))]
                       for _ in range(syllables))
        if rng.random() < 0.4:
            word += consonants[rng.integers(len(consonants))]
        if word not in seen:
            seen.add(word)
            words.append(word)
    head, tail = words[: len(FIRST_WORDS)], sorted(words[len(FIRST_WORDS):], key=len)
    words = head + tail
    # Four spellings per word: "w ", "w. ", "W ", "W. " (sentence end, sentence start, both).
    table = ([w + " " for w in words] + [w + ". " for w in words] + [w.capitalize() + " " for w in words]
             + [w.capitalize() + ". " for w in words])
    encoded = [t.encode() for t in table]
    lengths = np.array([len(t) for t in encoded], np.int64)
    offsets = np.cumsum(lengths) - lengths
    buffer = np.frombuffer(b"".join(encoded), np.uint8)
    ranks = np.arange(1, WORDS + 1, dtype=np.float64)
    probabilities = 1.0 / (ranks + 2.7) ** 1.07
    return buffer, offsets, lengths, probabilities / probabilities.sum()


def write_corpus_file(path: Path, target: int, rng, vocabulary, first_id: int) -> tuple[int, int]:
    """Documents until `target` bytes: returns (bytes written, documents)."""
    import numpy as np

    buffer, offsets, lengths, probabilities = vocabulary
    average_word = float((lengths[:WORDS] * probabilities).sum())
    documents = int(target / (260 * average_word + 30) * 1.25) + 16
    doc_words = np.clip(rng.lognormal(5.2, 0.9, documents), 8, 4000).astype(np.int64)
    total = int(doc_words.sum())
    ids = rng.choice(WORDS, total, p=probabilities).astype(np.int64)
    doc_ends = np.cumsum(doc_words)  # exclusive
    sentence_ends = np.cumsum(3 + rng.poisson(11, total // 3 + 16).clip(0, 27)) - 1
    ends = np.zeros(total, bool)
    ends[sentence_ends[sentence_ends < total]] = True
    ends[doc_ends - 1] = True
    starts = np.zeros(total, bool)
    starts[0] = True
    starts[1:] = ends[:-1]
    ids += WORDS * ends + 2 * WORDS * starts
    word_bytes = lengths[ids]
    cumulative = np.cumsum(word_bytes)
    out_starts = cumulative - word_bytes
    gather = np.repeat(offsets[ids] - out_starts, word_bytes) + np.arange(int(cumulative[-1]))
    text = buffer[gather].tobytes()
    byte_ends = cumulative[doc_ends - 1]
    byte_starts = np.concatenate([[0], byte_ends[:-1]])
    parts, written = [], 0
    for number, (a, b) in enumerate(zip(byte_starts.tolist(), byte_ends.tolist())):
        line = b'{"id": %d, "text": "' % (first_id + number) + text[a:b - 1] + b'"}\n'
        parts.append(line)
        written += len(line)
        if written >= target:
            break
    path.write_bytes(b"".join(parts))
    return written, len(parts)


def ensure_corpus(folder: Path, gigabytes: float, files: int, seed: int) -> dict:
    """The corpus of `gigabytes` GB (1e9 bytes) in `files` part-NNN.jsonl files; reused when its manifest says so."""
    import numpy as np

    manifest_path = folder / "corpus.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("gigabytes") == gigabytes and manifest.get("files") == files:
            return manifest
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("part-*.jsonl"):
        old.unlink()
    vocabulary = make_vocabulary(np.random.default_rng(seed))
    target = int(gigabytes * 1e9)
    started = time.perf_counter()
    total, documents = 0, 0
    for index in range(files):
        share = target * (index + 1) // files - target * index // files
        written, count = write_corpus_file(folder / f"part-{index:03d}.jsonl", share,
                                           np.random.default_rng([seed, index, int(gigabytes * 1000)]), vocabulary,
                                           documents)
        total += written
        documents += count
    manifest = {"gigabytes": gigabytes, "files": files, "bytes": total, "documents": documents,
                "seconds_to_write": round(time.perf_counter() - started, 1)}
    manifest_path.write_text(json.dumps(manifest))
    print(f"  wrote {total / 1e9:.3f} GB, {documents:,} documents in {files} files to {folder} "
          f"({manifest['seconds_to_write']} s)", flush=True)
    return manifest


# --------------------------------------------------------------------------------------------------- jobs
def recipe_for(job: dict, streaming: bool, run_dir: Path):
    from hf_pretrain.recipe import load_recipe

    overrides = ["data.source=files", f"data.train_files={job['corpus']}/part-*.jsonl", "data.max_documents=null",
                 f"data.streaming={'true' if streaming else 'false'}", f"train.num_workers={job.get('workers', 0)}",
                 f"output.dir={run_dir}", "output.log_with=[]", "output.progress_bar=false"]
    if job.get("tokenizer"):
        overrides.append(f"tokenizer.path={job['tokenizer']}")
    return load_recipe(RECIPE, overrides)


def masking_collator(recipe, tokenizer):
    """The training collator MaskedLMObjective builds for our encoder family (per-document position ids)."""
    from hf_pretrain.data.masking import MaskingCollator

    masking = recipe.masking
    return MaskingCollator(tokenizer, seed=recipe.train.seed, mlm_probability=masking.mlm_probability,
                           mask_replace_prob=masking.mask_replace_prob,
                           random_replace_prob=masking.random_replace_prob, whole_word=masking.whole_word,
                           span=masking.span, with_position_ids=True)


class StreamObjective:
    """What StreamBatches reads of an objective: the BlockStream and the training collator (no model)."""

    def __init__(self, recipe, tokenizer, accelerator):
        from hf_pretrain.data.block_stream import BlockStream
        from hf_pretrain.data.streaming import plan_recipe_stream

        self.plan = plan_recipe_stream(recipe, accelerator.num_processes)
        self.train_dataset = BlockStream(self.plan, tokenizer, accelerator.process_index,
                                         recipe.masking.whole_word or recipe.masking.span)
        self.train_collator = masking_collator(recipe, tokenizer)

    def set_epoch(self, epoch: int) -> None:
        pass


def consumed_bytes(plan, meta: dict) -> tuple[int, list[int]]:
    """Bytes of the files a reader advanced over (its shards before its position, and the open one up to its
    offset) and the indices of the shards it touched, from its meta (source 0)."""
    from hf_pretrain.data.block_stream import dealt_shards

    lane = meta["sources"][0]
    shards = plan.shards[0]
    total, touched = 0, []
    for epoch in range(lane["epoch"] + 1):
        mine = dealt_shards(len(shards), plan.readers, meta["reader"], plan.seed, 0, epoch)
        done = len(mine) if epoch < lane["epoch"] else lane["shard_pos"]
        for index in mine[:done]:
            total += (shards[index].end or shards[index].size) - shards[index].start
            touched.append(index)
        if epoch == lane["epoch"] and lane["shard_pos"] < len(mine) and lane["offset"]:
            index = mine[lane["shard_pos"]]
            total += lane["offset"] - shards[index].start
            touched.append(index)
    return total, sorted(set(touched))


def worker_pids(batches) -> list[int]:
    iterator = batches.loader.iterator
    return [worker.pid for worker in getattr(iterator, "_workers", [])]


def job_tokenizer(job: dict) -> dict:
    import datasets

    from hf_pretrain.data.pipeline import train_recipe_tokenizer

    recipe = recipe_for({**job, "tokenizer": None}, True, Path(job["work"]) / "run-tokenizer")
    texts = []
    with open(Path(job["corpus"]) / "part-000.jsonl", encoding="utf-8") as handle:
        for line in handle:
            texts.append(json.loads(line)["text"])
            if len(texts) >= job["documents"]:
                break
    started = time.perf_counter()
    tokenizer = train_recipe_tokenizer(recipe, datasets.Dataset.from_dict({"text": texts}), "encoder")
    tokenizer.save_pretrained(job["tokenizer_out"])
    sample = texts[: 2000]
    tokens = sum(len(ids) for ids in tokenizer(sample, add_special_tokens=False)["input_ids"])
    return {"seconds": time.perf_counter() - started, "documents": len(texts), "vocab": len(tokenizer),
            "bytes_per_token": sum(len(t.encode()) for t in sample) / tokens}


def job_stream(job: dict) -> dict:
    """One rank of a streamed read: time to first batch, then `batches` timed micro-batches after `warmup`."""
    from hf_pretrain.data.tokenizer import load_tokenizer
    from hf_pretrain.training.devices import build_accelerator
    from hf_pretrain.training.streamed import StreamBatches

    run_dir = Path(job["work"]) / "run-stream"
    recipe = recipe_for(job, True, run_dir)
    accelerator = build_accelerator(recipe, run_dir)
    rank = accelerator.process_index
    tokenizer = load_tokenizer(job["tokenizer"])
    rss_before = peak_rss_mb()
    accelerator.wait_for_everyone()
    io_start = proc_io()
    started = time.perf_counter()
    objective = StreamObjective(recipe, tokenizer, accelerator)
    batches = StreamBatches(objective, recipe.train, accelerator, None)
    from hf_pretrain.training.checkpoint import TrainerState

    state = TrainerState()
    batches.next_step(state)
    first_batch = time.perf_counter() - started
    # Planning + first batch: listing the shards reads 4 KiB of each JSON Lines file (is it a JSON array?).
    io_first = sum_io([io_delta(io_start, proc_io())] + [io_delta({}, proc_io(pid)) for pid in worker_pids(batches)])
    for _ in range(job["warmup"] - 1):
        batches.next_step(state)
    pids = worker_pids(batches)
    plan = objective.plan
    metas_before = {meta["reader"]: meta for meta in batches.loader.metas()}
    accelerator.wait_for_everyone()
    io_before = [proc_io()] + [proc_io(pid) for pid in pids]
    cpu_before = [cpu_seconds()] + [cpu_seconds(pid) for pid in pids]
    window_start, clock = time.time(), time.perf_counter()
    tokens = 0
    for _ in range(job["batches"]):
        (batch,), _ = batches.next_step(state)
        tokens += batch["input_ids"].numel()
    seconds = time.perf_counter() - clock
    window_end = time.time()
    io_after = [proc_io()] + [proc_io(pid) for pid in pids]
    cpu = sum(cpu_seconds(pid) for pid in ["self", *pids]) - sum(cpu_before)
    advanced, touched = 0, set()
    for meta in batches.loader.metas():
        after, shards = consumed_bytes(plan, meta)
        before = consumed_bytes(plan, metas_before[meta["reader"]])[0] if meta["reader"] in metas_before else 0
        advanced += after - before
        touched.update(shards)
    deltas = [io_delta(b, a) for b, a in zip(io_before, io_after)]
    result = {
        "rank": rank, "processes": accelerator.num_processes, "workers": recipe.train.num_workers,
        "readers": plan.readers, "shards": len(plan.shards[0]), "corpus_bytes": sum(
            (s.end or s.size) - s.start for s in plan.shards[0]),
        "batch_size": recipe.train.batch_size, "block_size": recipe.data.block_size,
        "first_batch_s": first_batch, "io_to_first_batch": io_first, "batches": job["batches"], "tokens": tokens,
        "seconds": seconds,
        "window": [window_start, window_end], "tokens_per_s": tokens / seconds,
        # The readers' own reads: the main process without workers, the workers' with them (the main process then
        # reads only what the workers send it through pipes: io_main).
        "io": sum_io(deltas[1:]) if pids else deltas[0], "io_main": deltas[0], "io_workers": deltas[1:],
        "text_bytes_advanced": advanced, "shards_touched": sorted(touched),
        "rss_before_mb": rss_before, "peak_rss_mb": peak_rss_mb(),
        # CPU seconds of the rank's processes (main + workers) per second of the window: well below the CPUs it
        # may use means other work shared them.
        "cpu_seconds": cpu, "cpu_per_wall_s": cpu / seconds,
        "affinity": sorted(os.sched_getaffinity(0)),
        "worker_peak_rss_mb": [vm_hwm_mb(pid) for pid in pids],
    }
    if job.get("eval_set") and accelerator.num_processes == 1:
        # What a streamed run also does before step 1: the first eval blocks of the held-out validation stream.
        from hf_pretrain.data.pipeline import first_blocks, load_text_splits

        clock = time.perf_counter()
        texts = load_text_splits(recipe)
        rows = recipe.train.eval_batches * recipe.train.batch_size
        blocks = first_blocks(texts.validation, tokenizer, recipe.data.block_size, False, rows)
        result["eval_set_s"], result["eval_set_blocks"] = time.perf_counter() - clock, len(blocks)
    return result


def job_resume(job: dict) -> dict:
    """Consume N, 4N, 16N micro-batches, saving the loop's checkpoint files at each; resume from each."""
    import torch

    from hf_pretrain.data.tokenizer import load_tokenizer
    from hf_pretrain.training.checkpoint import TrainerState
    from hf_pretrain.training.devices import build_accelerator
    from hf_pretrain.training.streamed import StreamBatches

    run_dir = Path(job["work"]) / "run-resume"
    recipe = recipe_for(job, True, run_dir)
    accelerator = build_accelerator(recipe, run_dir)
    tokenizer = load_tokenizer(job["tokenizer"])
    points = sorted(job["points"])
    checkpoints = Path(job["work"]) / "resume-checkpoints"
    state = TrainerState()
    started = time.perf_counter()
    batches = StreamBatches(StreamObjective(recipe, tokenizer, accelerator), recipe.train, accelerator, None)
    expected, replay, sizes, saving = {}, {}, {}, 0.0
    while batches.loader.consumed < points[-1]:
        batches.next_step(state)
        consumed = batches.loader.consumed
        if consumed in points:
            replay[consumed] = time.perf_counter() - started - saving
            clock = time.perf_counter()
            files = batches.checkpoint_files()  # what save_checkpoint writes into the checkpoint folder
            folder = checkpoints / f"step-{consumed:06d}"
            for name, blob in files.items():
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                (folder / name).write_bytes(blob)
            sizes[consumed] = {name: len(blob) for name, blob in files.items()}
            saving += time.perf_counter() - clock
            (batch,), _ = batches.next_step(state)  # the uninterrupted reader's next batch
            expected[consumed] = {key: value.clone() for key, value in batch.items()}
    rows = []
    for point in points:
        clock = time.perf_counter()
        resumed = StreamBatches(StreamObjective(recipe, tokenizer, accelerator), recipe.train, accelerator,
                                checkpoints / f"step-{point:06d}")
        constructed = time.perf_counter() - clock
        (batch,), _ = resumed.next_step(TrainerState())
        seconds = time.perf_counter() - clock
        same = set(batch) == set(expected[point]) and all(
            torch.equal(batch[key], expected[point][key]) for key in batch)
        assert same, f"the first batch resumed after {point} micro-batches differs from the uninterrupted one"
        rows.append({"batches": point, "resume_s": seconds, "construct_s": constructed, "replay_s": replay[point],
                     "state_bytes": sum(sizes[point].values()), "state_files": sizes[point], "bitwise_equal": same,
                     "consumed_after_resume": resumed.loader.consumed})
        del resumed
    return {"points": rows, "peak_rss_mb": peak_rss_mb()}


def job_cached(job: dict) -> dict:
    """The non-streamed path: load_text_splits + prepare_splits(pack_dataset) into a fresh cache, the prepared
    DataLoader, its first batch."""
    from hf_pretrain.data.packing import pack_dataset
    from hf_pretrain.data.pipeline import load_text_splits, prepare_splits
    from hf_pretrain.data.tokenizer import load_tokenizer
    from hf_pretrain.training.devices import build_accelerator

    run_dir = Path(job["work"]) / "run-cached"
    recipe = recipe_for(job, False, run_dir)
    accelerator = build_accelerator(recipe, run_dir)
    tokenizer = load_tokenizer(job["tokenizer"])
    io_start = proc_io()
    rss_before = peak_rss_mb()
    started = time.perf_counter()
    texts = load_text_splits(recipe)
    loaded = time.perf_counter() - started
    train, _ = prepare_splits(pack_dataset, texts, tokenizer, accelerator, block_size=recipe.data.block_size,
                              num_proc=recipe.data.num_proc, with_word_starts=False)
    packed = time.perf_counter() - started
    import torch

    loader = torch.utils.data.DataLoader(train, collate_fn=masking_collator(recipe, tokenizer),
                                         batch_size=recipe.train.batch_size, shuffle=True, drop_last=True,
                                         num_workers=recipe.train.num_workers)
    loader = accelerator.prepare(loader)
    batch = next(iter(loader))
    first_batch = time.perf_counter() - started
    return {"load_texts_s": loaded, "pack_s": packed - loaded, "first_batch_s": first_batch,
            "train_blocks": len(train), "train_tokens": len(train) * recipe.data.block_size,
            "batch_shape": list(batch["input_ids"].shape), "io": io_delta(io_start, proc_io()),
            "rss_before_mb": rss_before, "peak_rss_mb": peak_rss_mb()}


JOBS = {"tokenizer": job_tokenizer, "stream": job_stream, "resume": job_resume, "cached": job_cached}


def run_job(job: dict) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)
    import datasets

    datasets.disable_progress_bars()
    result = JOBS[job["kind"]](job)
    rank = int(os.environ.get("RANK", "0"))
    Path(f"{job['out']}.rank{rank}.json").write_text(json.dumps(result))


# --------------------------------------------------------------------------------------------------- orchestration
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(job: dict, work: Path, cpus: str | None, processes: int = 1, env: dict | None = None) -> list[dict]:
    """Run `job` in fresh process(es) (torchrun for 2), pinned to `cpus`; return each rank's result."""
    name = f"{job['kind']}-{int(time.time() * 1000)}"
    job = {**job, "out": str(work / "results" / name), "work": str(work / "scratch" / name)}
    Path(job["work"]).mkdir(parents=True, exist_ok=True)
    (work / "results").mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--job", json.dumps(job)]
    if processes > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                   "--master_port", str(free_port()), *command[1:]]
    if cpus:
        command = ["taskset", "-c", cpus, *command]
    log = work / "results" / f"{name}.log"
    started = time.perf_counter()
    with open(log, "w") as handle:
        process = subprocess.run(command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT,
                                 env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
    if process.returncode != 0:
        raise RuntimeError(f"job {job['kind']} failed ({process.returncode}); log {log}:\n"
                           + log.read_text()[-3000:])
    import shutil

    shutil.rmtree(job["work"], ignore_errors=True)
    results = [json.loads(Path(f"{job['out']}.rank{rank}.json").read_text()) for rank in range(processes)]
    for result in results:
        result["launch_wall_s"] = time.perf_counter() - started
    return results


def summarize_stream(ranks: list[dict]) -> dict:
    start = min(r["window"][0] for r in ranks)
    end = max(r["window"][1] for r in ranks)
    tokens = sum(r["tokens"] for r in ranks)
    touched = [set(r["shards_touched"]) for r in ranks]
    overlap = set.intersection(*touched) if len(touched) > 1 else set()
    return {
        "processes": ranks[0]["processes"], "workers": ranks[0]["workers"], "readers": ranks[0]["readers"],
        "shards": ranks[0]["shards"], "tokens_per_s": tokens / (end - start),
        "tokens_per_s_per_rank": [r["tokens_per_s"] for r in ranks],
        "first_batch_s": max(r["first_batch_s"] for r in ranks),
        "rchar_per_rank": [r["io"].get("rchar", 0) for r in ranks],
        "read_bytes_per_rank": [r["io"].get("read_bytes", 0) for r in ranks],
        "main_rchar_from_workers_per_rank": [r["io_main"].get("rchar", 0) if r["workers"] else 0 for r in ranks],
        "text_bytes_advanced_per_rank": [r["text_bytes_advanced"] for r in ranks],
        "corpus_bytes": ranks[0]["corpus_bytes"],
        "shards_touched_per_rank": [len(t) for t in touched], "shards_touched_by_two_ranks": len(overlap),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in ranks),
        "rss_before_loader_mb": max(r["rss_before_mb"] for r in ranks),
        "worker_peak_rss_mb": max([w for r in ranks for w in r["worker_peak_rss_mb"] if w] or [0]),
        "eval_set_s": ranks[0].get("eval_set_s"),
        "cpu_per_wall_s": sum(r["cpu_seconds"] for r in ranks) / (end - start), "ranks": ranks,
    }


def git_commit() -> tuple[str, bool]:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                                capture_output=True, text=True).stdout.strip())
    return commit, dirty


def size_label(gigabytes: float) -> str:
    return f"{gigabytes:g}gb"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--sizes-gb", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    parser.add_argument("--files", type=int, default=128, help="JSON Lines files per corpus")
    parser.add_argument("--work-dir", default="/tmp/bench_stream")
    parser.add_argument("--batches", type=int, default=400, help="timed micro-batches per throughput measurement")
    parser.add_argument("--warmup", type=int, default=20, help="micro-batches before the timed ones")
    parser.add_argument("--resume-batches", type=int, default=100, help="N: resume after N, 4N and 16N batches")
    parser.add_argument("--configs", nargs="+", default=["1x0", "1x2", "2x0", "2x2"],
                        help="streamed configurations, PROCESSESxWORKERS (train.num_workers)")
    parser.add_argument("--cached-gb", type=float, default=0.1, help="corpus size for the non-streamed path")
    parser.add_argument("--tokenizer-documents", type=int, default=20000)
    parser.add_argument("--single-cpus", help="taskset CPU list for one-process measurements (e.g. 1)")
    parser.add_argument("--multi-cpus", help="taskset CPU list for two-process measurements (e.g. 0,1)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["stream", "resume", "cached"])
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test (~1 minute)")
    parser.add_argument("--out", default=None, help="JSON results file")
    parser.add_argument("--note", default="", help="free text stored with the results")
    args = parser.parse_args()
    if args.job:
        run_job(json.loads(args.job))
        return
    if args.quick:
        args.sizes_gb, args.files, args.cached_gb = [0.02], 64, 0.01
        args.batches, args.warmup, args.resume_batches = min(args.batches, 60), 5, 10
        args.tokenizer_documents = min(args.tokenizer_documents, 3000)
        args.configs = ["1x0", "1x2", "2x2"]
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    commit, dirty = git_commit()
    results = {
        "benchmark": "bench_stream", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]),
        "git_commit": commit, "git_uncommitted_changes": dirty,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "affinity_of_this_process": sorted(os.sched_getaffinity(0))},
        "settings": {k: v for k, v in vars(args).items() if k != "job"},
        "recipe": RECIPE, "sizes": {},
    }
    import torch

    results["machine"]["torch"] = torch.__version__
    smallest = min(args.sizes_gb)
    print(f"bench_stream: sizes {args.sizes_gb} GB, {args.files} files, {args.batches} timed batches, "
          f"work dir {work}, commit {commit[:10]}{' (+ uncommitted changes)' if dirty else ''}", flush=True)

    corpora = {}
    for gigabytes in sorted(set(args.sizes_gb + ([args.cached_gb] if "cached" not in args.skip else []))):
        corpora[gigabytes] = ensure_corpus(work / f"corpus-{size_label(gigabytes)}", gigabytes, args.files, seed=0)
    tokenizer_dir = work / "tokenizer"
    tokenizer_corpus = work / f"corpus-{size_label(smallest)}"
    if not (tokenizer_dir / "tokenizer.json").is_file():
        print("training the tokenizer ...", flush=True)
        info = launch({"kind": "tokenizer", "corpus": str(tokenizer_corpus), "documents": args.tokenizer_documents,
                       "tokenizer_out": str(tokenizer_dir)}, work, args.single_cpus)[0]
        (tokenizer_dir / "bench_info.json").write_text(json.dumps(info))
    results["tokenizer"] = json.loads((tokenizer_dir / "bench_info.json").read_text())
    print(f"tokenizer: vocab {results['tokenizer']['vocab']}, {results['tokenizer']['bytes_per_token']:.2f} bytes of "
          "text per token", flush=True)
    base = {"tokenizer": str(tokenizer_dir), "warmup": args.warmup, "batches": args.batches}

    for gigabytes in args.sizes_gb:
        corpus = work / f"corpus-{size_label(gigabytes)}"
        entry = results["sizes"].setdefault(size_label(gigabytes), {"gigabytes": gigabytes,
                                                                    "corpus": corpora[gigabytes], "stream": []})
        if "stream" not in args.skip:
            for config in args.configs:
                processes, workers = map(int, config.split("x"))
                cpus = args.single_cpus if processes == 1 else args.multi_cpus
                print(f"[{size_label(gigabytes)}] stream: {processes} process(es) x {workers} worker(s) "
                      f"(cpus {cpus or 'inherited'}) ...", flush=True)
                ranks = launch({**base, "kind": "stream", "corpus": str(corpus), "workers": workers,
                                "eval_set": processes == 1 and workers == 0}, work, cpus, processes)
                summary = summarize_stream(ranks)
                summary["cpus"] = cpus
                results["micro_batch"] = f"{ranks[0]['batch_size']} x {ranks[0]['block_size']}"
                entry["stream"].append(summary)
                print(f"    {summary['tokens_per_s']:,.0f} tokens/s, first batch {summary['first_batch_s']:.2f} s, "
                      f"rchar/rank {[f'{b / 1e6:.1f} MB' for b in summary['rchar_per_rank']]}, text advanced "
                      f"{[f'{b / 1e6:.1f} MB' for b in summary['text_bytes_advanced_per_rank']]}, peak RSS "
                      f"{summary['peak_rss_mb']:.0f} MB", flush=True)
        if "resume" not in args.skip:
            points = [args.resume_batches * k for k in (1, 4, 16)]
            print(f"[{size_label(gigabytes)}] resume after {points} batches ...", flush=True)
            entry["resume"] = launch({**base, "kind": "resume", "corpus": str(corpus), "workers": 0,
                                      "points": points}, work, args.single_cpus)[0]
            for row in entry["resume"]["points"]:
                print(f"    {row['batches']:>6} batches: resume {row['resume_s']:.3f} s vs replay "
                      f"{row['replay_s']:.1f} s,"
                      f" state {row['state_bytes'] / 1e6:.2f} MB, first batch bit-equal: {row['bitwise_equal']}",
                      flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=1))

    if "cached" not in args.skip:
        corpus = work / f"corpus-{size_label(args.cached_gb)}"
        cache = work / "cached-path-cache"
        import shutil

        shutil.rmtree(cache, ignore_errors=True)
        env = {"HF_PRETRAIN_CACHE": str(cache / "hf_pretrain"), "HF_DATASETS_CACHE": str(cache / "datasets")}
        print(f"[{size_label(args.cached_gb)}] non-streamed cached path (cold cache, then a second launch) ...",
              flush=True)
        cold = launch({**base, "kind": "cached", "corpus": str(corpus)}, work, args.single_cpus, env=env)[0]
        warm = launch({**base, "kind": "cached", "corpus": str(corpus)}, work, args.single_cpus, env=env)[0]
        shutil.rmtree(cache, ignore_errors=True)
        text_bytes = corpora[args.cached_gb]["bytes"]
        cached = {"gigabytes": args.cached_gb, "corpus_bytes": text_bytes, "cold": cold, "second_launch": warm,
                  "prepare_tokens_per_s": cold["train_tokens"] / (cold["load_texts_s"] + cold["pack_s"]),
                  "first_batch_s_extrapolated": {size_label(g): cold["first_batch_s"] * corpora[g]["bytes"] / text_bytes
                                                 for g in args.sizes_gb}}
        results["cached"] = cached
        print(f"    cold: first batch {cold['first_batch_s']:.1f} s (load {cold['load_texts_s']:.1f} s + tokenize/pack "
              f"{cold['pack_s']:.1f} s), {cached['prepare_tokens_per_s']:,.0f} tokens/s; second launch "
              f"{warm['first_batch_s']:.1f} s", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    print_table(results)


def print_table(results: dict) -> None:
    print()
    print(f"bench_stream  {results['date']}  commit {results['git_commit'][:10]}"
          f"{' (+ uncommitted changes)' if results['git_uncommitted_changes'] else ''}  "
          f"{results['machine']['cpu_count']} CPUs, torch {results['machine']['torch']}")
    settings = results["settings"]
    if settings.get("note"):
        print(f"note: {settings['note']}")
    print(f"CPUs: one-process parts {settings.get('single_cpus') or 'inherited'}, two-process parts "
          f"{settings.get('multi_cpus') or 'inherited'}; CPU/wall = CPU seconds of all the config's processes per "
          "second of the timed window (1.0 = one core's worth)")
    print(f"recipe {results['recipe']}: micro-batches of {results.get('micro_batch', '?')} tokens, "
          f"{settings['batches']} timed per rank after {settings['warmup']} warm-up; tokens/s delivered to the loop "
          "(collated MLM batches, all ranks together); MB = 1e6 bytes")
    print("rchar/rank: bytes through read() of the rank's reading processes (the workers when there are any) over the "
          "timed batches; text adv.: bytes of the files its readers advanced over; disk: read_bytes (page cache warm)")
    header = (f"{'size':>6} {'proc x wrk':>10} {'tokens/s':>10} {'1st batch s':>11} {'rchar/rank MB':>16} "
              f"{'text adv./rank MB':>18} {'disk MB':>7} {'corpus MB':>9} {'shared shards':>13} "
              f"{'peak RSS MB':>11} {'wrk RSS MB':>10} {'CPU/wall':>8}")
    print(header)
    print("-" * len(header))
    for label, entry in results["sizes"].items():
        for row in entry.get("stream", []):
            rchar = "/".join(f"{b / 1e6:.1f}" for b in row["rchar_per_rank"])
            advanced = "/".join(f"{b / 1e6:.1f}" for b in row["text_bytes_advanced_per_rank"])
            print(f"{label:>6} {row['processes']:>4} x {row['workers']:<3} {row['tokens_per_s']:>10,.0f} "
                  f"{row['first_batch_s']:>11.2f} {rchar:>16} {advanced:>18} "
                  f"{sum(row['read_bytes_per_rank']) / 1e6:>7.1f} {row['corpus_bytes'] / 1e6:>9.0f} "
                  f"{row['shards_touched_by_two_ranks'] if row['processes'] > 1 else '-':>13} "
                  f"{row['peak_rss_mb']:>11.0f} {row['worker_peak_rss_mb'] or 0:>10.0f} {row['cpu_per_wall_s']:>8.2f}")
    for label, entry in results["sizes"].items():
        for row in entry.get("stream", []):
            if row.get("eval_set_s") is not None:
                print(f"{label:>6}: a streamed run also packs its eval set before step 1 (the first eval_batches x "
                      f"batch_size blocks of the held-out validation stream): {row['eval_set_s']:.1f} s")
    print()
    resume_rows = [(label, row) for label, entry in results["sizes"].items()
                   for row in entry.get("resume", {}).get("points", [])]
    if resume_rows:
        print("resume: one process, no workers; resume s = new StreamBatches(resume_from=checkpoint) -> first batch; "
              "replay s = reading that many batches from the start")
        print(f"{'size':>6} {'batches':>8} {'resume s':>9} {'replay s':>9} {'state MB':>9} {'bit-equal':>9} "
              f"{'peak RSS MB':>11}")
        for label, row in resume_rows:
            print(f"{label:>6} {row['batches']:>8} {row['resume_s']:>9.3f} {row['replay_s']:>9.1f} "
                  f"{row['state_bytes'] / 1e6:>9.2f} {str(row['bitwise_equal']):>9} "
                  f"{results['sizes'][label]['resume']['peak_rss_mb']:>11.0f}")
        print()
    cached = results.get("cached")
    if cached:
        cold, warm = cached["cold"], cached["second_launch"]
        print(f"non-streamed cached path, measured at {cached['gigabytes']:g} GB only "
              f"({cached['corpus_bytes'] / 1e6:.0f} MB of JSON Lines): first batch {cold['first_batch_s']:.1f} s cold "
              f"(load texts "
              f"{cold['load_texts_s']:.1f} s, tokenize+pack {cold['pack_s']:.1f} s), "
              f"{cached['prepare_tokens_per_s']:,.0f} tokens/s of preparation; second launch (cache hit) "
              f"{warm['first_batch_s']:.1f} s")
        print(f"  bytes cold: rchar {cold['io']['rchar'] / 1e6:.0f} MB, read_bytes {cold['io']['read_bytes'] / 1e6:.0f}"
              f" MB, wchar {cold['io']['wchar'] / 1e6:.0f} MB; peak RSS {cold['peak_rss_mb']:.0f} MB")
        print("  first batch EXTRAPOLATED linearly from that size: " + ", ".join(
            f"{label} {seconds:,.0f} s" for label, seconds in cached["first_batch_s_extrapolated"].items()))
        streamed = {label: row["first_batch_s"] for label, entry in results["sizes"].items()
                    for row in entry.get("stream", []) if row["processes"] == 1 and row["workers"] == 0}
        if streamed:
            print("  streamed first batch (1 process, no workers; planning included), measured: " + ", ".join(
                f"{label} {seconds:.2f} s" for label, seconds in streamed.items()))


if __name__ == "__main__":
    main()
