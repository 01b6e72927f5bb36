"""The loop's side of a streamed corpus: micro-batches from this process's own readers (data/block_stream.py),
their position saved in every checkpoint and restored on resume without reading again what was consumed.

Why the streamed train loader is not passed to `accelerator.prepare`: Accelerate's default dispatcher reads an
iterable dataset on rank 0 alone and hands every rank a slice of each global batch (the readers of the other
ranks would never be read), and with dispatch_batches=False it wraps the dataset in IterableDatasetShard, which
keeps 1/P of what each rank already split. Each process here reads its own shards, so its batches go to its device
with `send_to_device`; the model, the optimizer and the eval loader stay prepared. The loop synchronizes
gradients with explicit `no_sync`, so it needs none of the bookkeeping a prepared loader does.

Checkpoints. `checkpoint_files()`, called by every rank, gathers each rank's stream state (JSON meta +
safetensors arrays, data/stream_state.py) as padded uint8 tensors (no pickle, no `gather_object`; device tensors
under NCCL, CPU under gloo) and returns on rank 0 the files `data/stream-rank{r}.json|.safetensors`, which
save_checkpoint writes into its temporary folder before the COMPLETE marker: their sha256 is in it and the
atomic swap is unchanged. On resume each rank reads its own files and its readers reopen their shards at the
saved offsets (constant time: a seek or one row group); a resume whose layout differs (processes, workers,
batch or block size, seed, shuffle buffer, the sources' files, weights or revision) is refused before any step,
naming what was saved and what is asked. `skip_first_batches` and `resume_position` are not used for streams.

Public API
----------
`StreamBatches(objective, train, accelerator, resume_from)`: the streamed counterpart of batches.TrainBatches
    (`start`, `next_step`), plus `checkpoint_files()` and `log_reports()` (collective calls: every rank).
`gather_bytes(accelerator, blob) -> list[bytes]`: every rank's byte string, on every rank.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from accelerate.utils import send_to_device

from ..data.stream_state import (
    StreamLayoutChanged,
    StreamLoader,
    read_state,
    source_summaries,
    state_file_names,
    state_from_bytes,
    state_to_bytes,
)
from ..recipe import RecipeError
from .checkpoint import TrainerState

logger = logging.getLogger(__name__)

STATE_FOLDER = "data"  # in a checkpoint folder: data/stream-rank{r}.json and .safetensors


class StreamBatches:
    """Micro-batches of this process's readers for the loop; the position lives in the readers' states, which
    `checkpoint_files` saves (TrainerState.batches_in_epoch only counts the micro-batches consumed here)."""

    def __init__(self, objective, train, accelerator, resume_from: Path | None):
        self.objective, self.accelerator, self.grad_accum = objective, accelerator, train.grad_accum
        stream = objective.train_dataset
        state = None
        if resume_from is not None:
            state = read_state(resume_from / STATE_FOLDER, stream.rank)
            if state is None:
                raise RecipeError(
                    f"checkpoint {resume_from} holds no stream position ({STATE_FOLDER}/"
                    f"{state_file_names(stream.rank)[0]}): it was written by a run that did not stream its corpus "
                    "this way. Resume it with the settings it was written with, or add --restart to move the "
                    "earlier run aside and start over."
                )
        try:
            self.loader = StreamLoader(stream, objective.train_collator, train.num_workers, state)
        except StreamLayoutChanged as changed:
            saved = state[0]["layout"]
            raise RecipeError(
                f"checkpoint {resume_from.name} saved the stream's position for another reading layout, where its "
                f"offsets point at other documents: {'; '.join(changed.changes)}. Resume with the saved layout "
                f"({saved['processes']} process(es), train.num_workers giving {saved['readers_per_process']} "
                f"reader(s) per process, train.batch_size={saved['batch_size']}, data.shuffle_buffer="
                f"{saved['shuffle_buffer']}, the corpus files unchanged), or add --restart to move the earlier run "
                "aside and start over."
            ) from None
        if state is not None:
            logger.info(f"stream: {len(state[0]['readers'])} reader(s) of this process continue from their saved "
                        f"positions after {self.loader.consumed:,} micro-batches (nothing consumed is read again)")

    def start(self, state: TrainerState) -> None:
        # Streamed noise keys are unique over the whole run (example_index), so the epoch stays 0.
        self.objective.set_epoch(0)

    def next_step(self, state: TrainerState) -> tuple[list[dict], float]:
        """The micro-batches of one optimizer step, and the seconds spent waiting for them."""
        started = time.perf_counter()
        device, non_blocking = self.accelerator.device, self.accelerator.non_blocking
        micro_batches = [send_to_device(next(self.loader), device, non_blocking=non_blocking)
                         for _ in range(self.grad_accum)]
        state.batches_in_epoch = self.loader.consumed
        return micro_batches, time.perf_counter() - started

    def checkpoint_files(self) -> dict[str, bytes] | None:
        """Every rank's stream state as checkpoint files (on rank 0; None elsewhere): a collective call. The
        readers' reports are logged from the same states."""
        blobs = gather_bytes(self.accelerator, state_to_bytes(*self.loader.state()))
        if not self.accelerator.is_main_process:
            return None
        files, metas = {}, []
        for rank, blob in enumerate(blobs):
            text, tensors = state_from_bytes(blob)
            json_name, tensors_name = state_file_names(rank)
            files[f"{STATE_FOLDER}/{json_name}"], files[f"{STATE_FOLDER}/{tensors_name}"] = text, tensors
            metas.extend(json.loads(text)["readers"])
        self.log_summaries(metas)
        return files

    def log_reports(self) -> None:
        """Rank 0 logs, per source, what all readers read, cleaned, held out and packed: a collective call."""
        metas = gather_bytes(self.accelerator, json.dumps(self.loader.metas()).encode())
        if self.accelerator.is_main_process:
            self.log_summaries([meta for blob in metas for meta in json.loads(blob)])

    def log_summaries(self, metas: list[dict]) -> None:
        for line in source_summaries(metas, [source.name for source in self.objective.train_dataset.plan.sources]):
            logger.info(line)


def gather_bytes(accelerator, blob: bytes) -> list[bytes]:
    """Every rank's byte string, on every rank: lengths first, then the strings padded to the longest, as uint8
    tensors on the accelerator's device (what NCCL needs; gloo takes CPU tensors)."""
    if accelerator.num_processes == 1:
        return [blob]
    device = accelerator.device
    lengths = accelerator.gather(torch.tensor([len(blob)], dtype=torch.int64, device=device)).tolist()
    padded = torch.zeros(max(lengths), dtype=torch.uint8)
    padded[: len(blob)] = torch.frombuffer(bytearray(blob), dtype=torch.uint8)
    rows = accelerator.gather(padded.to(device)).cpu().reshape(len(lengths), -1)
    return [rows[rank, :length].numpy().tobytes() for rank, length in enumerate(lengths)]
