"""Data-pipeline benchmark: ours vs the run_mlm.py way, in one process, alternating, ratios printed.

1. Tokenize + pack throughput (MB of text per second per core): `packing.pack_dataset` vs run_mlm.py's
   `map(tokenize)` + `map(group_texts)` on the same texts and tokenizer. By default the tokenizers library runs
   single-threaded (TOKENIZERS_PARALLELISM=false) so the figure is per core; `--threads` lifts that.
2. Collator throughput: `masking.MaskingCollator` vs transformers' `DataCollatorForLanguageModeling` on
   identical batches of packed rows.
3. `--stream-gb N`: writes an N GB text file to a temporary folder and streams it through
   `sources.load_text_sources(streaming=True)` + `streaming.pack_stream`, printing throughput and peak RSS
   (resource.getrusage) before and after, to show memory stays bounded whatever the file size.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_data.py [--repeat-corpus 4] [--stream-gb 2]

Nothing here is a test: numbers depend on the machine.
Results: benchmarks/RESULTS.md#data-path.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

if "--threads" not in sys.argv:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # must be set before tokenizers runs anything

import itertools
import resource
import statistics
import tempfile
import time
from pathlib import Path

import datasets
import numpy as np

from hf_pretrain.data import builtin, masking, packing, sources, streaming, tokenizer

datasets.disable_progress_bars()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_mlm_style_pack(dataset: datasets.Dataset, tok, block_size: int) -> int:
    """What examples/pytorch/language-modeling/run_mlm.py does without --line_by_line."""

    def tokenize_function(examples):
        return tok(examples["text"], return_special_tokens_mask=True)

    def group_texts(examples):
        concatenated = {k: list(itertools.chain(*examples[k])) for k in examples}
        total_length = (len(concatenated["input_ids"]) // block_size) * block_size
        return {k: [t[i : i + block_size] for i in range(0, total_length, block_size)] for k, t in concatenated.items()}

    tokenized = dataset.map(tokenize_function, batched=True, remove_columns=["text"])
    grouped = tokenized.map(group_texts, batched=True)
    return len(grouped)


def bench_packing(dataset: datasets.Dataset, tok, block_size: int, rounds: int, cores: int) -> None:
    megabytes = sum(len(t.encode()) for t in dataset["text"]) / 1e6
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as cache:
        for _ in range(rounds):
            started = time.perf_counter()
            _, report = packing.pack_dataset(dataset, tok, block_size, cache_dir=cache, use_cache=False)
            ours.append(time.perf_counter() - started)
            started = time.perf_counter()
            their_blocks = run_mlm_style_pack(dataset, tok, block_size)
            theirs.append(time.perf_counter() - started)
    ours_rate = megabytes / statistics.median(ours) / cores
    theirs_rate = megabytes / statistics.median(theirs) / cores
    print(f"tokenize+pack {megabytes:.1f} MB, block {block_size}, {cores} core(s), median of {rounds}:")
    print(f"  ours (pack_dataset)        {ours_rate:6.2f} MB/s/core   {report.blocks:,} blocks")
    print(f"  run_mlm map + group_texts  {theirs_rate:6.2f} MB/s/core   {their_blocks:,} blocks")
    print(f"  ratio ours/run_mlm         {ours_rate / theirs_rate:6.2f}x")
    print(f"  {report.summary()}")


def bench_collator(dataset: datasets.Dataset, tok, batch_size: int, batches: int) -> None:
    from transformers import DataCollatorForLanguageModeling

    rows = [dataset[i] for i in range(batch_size * batches)]
    ours_batches = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    # Same token ids for the peer, in the form its examples use (a list per row, no extra keys).
    their_batches = [[{"input_ids": row["input_ids"].tolist()} for row in batch] for batch in ours_batches]
    ours_collator = masking.MaskingCollator(tok)
    their_collator = DataCollatorForLanguageModeling(tok, mlm_probability=0.15)
    ours, theirs = [], []
    for _ in range(3):
        started = time.perf_counter()
        for batch in ours_batches:
            ours_collator(batch)
        ours.append(time.perf_counter() - started)
        started = time.perf_counter()
        for batch in their_batches:
            their_collator(batch)
        theirs.append(time.perf_counter() - started)
    length = len(rows[0]["input_ids"])
    ours_rate = batches / min(ours)
    theirs_rate = batches / min(theirs)
    print(f"collator, {batches} batches of {batch_size} x {length}, best of 3:")
    print(f"  ours (MaskingCollator)            {ours_rate:8.0f} batches/s")
    print(f"  DataCollatorForLanguageModeling   {theirs_rate:8.0f} batches/s")
    print(f"  ratio ours/transformers           {ours_rate / theirs_rate:8.2f}x")


def write_big_text_file(path: Path, gigabytes: float, corpus_texts: list[str]) -> int:
    """Lines of standard-library docstrings (one per line), reshuffled each round, until the size is reached."""
    target = int(gigabytes * 1e9)
    lines = [" ".join(text.split()) for text in corpus_texts]
    rng = np.random.default_rng(0)
    written = 0
    with open(path, "w", encoding="utf-8") as handle:
        while written < target:
            chunk = "\n".join(lines[i] for i in rng.permutation(len(lines))) + "\n"
            handle.write(chunk)
            written += len(chunk.encode())
    return written


def bench_streaming(gigabytes: float, tok, block_size: int, corpus_texts: list[str]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "big.txt"
        started = time.perf_counter()
        size = write_big_text_file(path, gigabytes, corpus_texts)
        print(f"streaming: wrote {size / 1e9:.2f} GB in {time.perf_counter() - started:.0f}s to {path}")
        rss_before = peak_rss_mb()
        loaded = sources.load_text_sources(str(path), streaming=True)
        stream = streaming.pack_stream(loaded.train, tok, block_size)
        started = time.perf_counter()
        blocks = 0
        for _ in stream:
            blocks += 1
            if blocks % 500_000 == 0:
                elapsed = time.perf_counter() - started
                print(f"  ... {blocks:,} blocks, {elapsed:.0f}s, peak RSS {peak_rss_mb():.0f} MB", flush=True)
        elapsed = time.perf_counter() - started
        print(f"  streamed {size / 1e9:.2f} GB -> {blocks:,} blocks of {block_size} in {elapsed:.0f}s "
              f"({size / 1e6 / elapsed:.2f} MB/s)")
        print(f"  peak RSS before streaming {rss_before:.0f} MB, after {peak_rss_mb():.0f} MB "
              f"(the file is {size / 1e6:.0f} MB)")
        print(f"  {stream.report.summary()}")
        print(f"  cleaning: {loaded.reports['train'].summary()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat-corpus", type=int, default=4, help="copies of the built-in corpus to pack")
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--collator-batches", type=int, default=200)
    parser.add_argument("--threads", action="store_true", help="let tokenizers use all cores (not per-core)")
    parser.add_argument("--stream-gb", type=float, default=0.0, help="also stream an N GB generated file")
    parser.add_argument("--skip-throughput", action="store_true", help="only run --stream-gb")
    args = parser.parse_args()

    corpus = builtin.load_builtin_corpus()
    tok = tokenizer.train_tokenizer(corpus, kind="wordpiece", vocab_size=args.vocab_size)
    cores = os.cpu_count() if args.threads else 1
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPU(s), tokenizers threads: "
          f"{'all' if args.threads else 1}, wordpiece vocab {len(tok)}")
    if not args.skip_throughput:
        repeated = datasets.concatenate_datasets([corpus.select_columns(["text"])] * args.repeat_corpus)
        bench_packing(repeated, tok, args.block_size, args.rounds, cores)
        with tempfile.TemporaryDirectory() as cache:
            packed, _ = packing.pack_dataset(corpus, tok, args.block_size, cache_dir=cache)
            batches = min(args.collator_batches, len(packed) // args.batch_size)
            bench_collator(packed, tok, args.batch_size, batches)
    if args.stream_gb > 0:
        bench_streaming(args.stream_gb, tok, args.block_size, corpus["text"])


if __name__ == "__main__":
    main()
