"""The main-process side of a block stream (data/block_stream.py): the state of each of its readers as of the last
micro-batch the loop consumed, saved as JSON + safetensors (no pickle) and resumed without reading again what was
consumed.

Why a mirror. DataLoader workers own the readers: their state lives in other processes and runs ahead of the loop
(prefetching). Each micro-batch travels with its reader's change since its previous batch (the JSON meta, the
packer's remainder, the blocks packed since then, the ids of the blocks it emitted); the loader applies a change
only when the loop takes that batch, so the state it saves is exactly the one after the last consumed batch. The
shuffle buffer is never sent whole: about one batch of new blocks travels with each batch.

Resume. `StreamLoader(stream, ..., state=saved)` checks the saved layout against the stream's (readers, sizes,
seed, shuffle buffer, sources, their shards and files' sizes and mtimes) and refuses another one
(StreamLayoutChanged, naming each difference); then every reader starts from its saved state (shards reopened at
the saved offsets: constant time) and DataLoader worker 0 plays the reader whose batch is due.

Public API
----------
`StreamLoader(stream, collate=None, num_workers=0, state=None, prefetch_factor=2)`: an iterator of collated
    micro-batches; `.consumed`, `.state() -> (meta, arrays)`, `.metas()` (one JSON meta per reader).
`StreamLayoutChanged(changes)`: a saved state of another layout; `.changes` lists the differences.
`state_to_bytes(meta, arrays)`, `state_from_bytes(blob)`: one rank's state as one byte string (for gathering).
`write_state(folder, rank, meta, arrays)`, `read_state(folder, rank)`: `stream-rank{rank}.json/.safetensors`.
`source_summaries(metas) -> list[str]`: per source, what its readers read, cleaned, held out and packed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from .block_stream import BlockStream, lane_arrays
from .cleaning import CleaningReport
from .packing import PackingReport

logger = logging.getLogger(__name__)

STATE_VERSION = 1


class StreamLayoutChanged(ValueError):
    """A stream state saved with another layout: its offsets would point at other documents."""

    def __init__(self, changes: list[str]):
        self.changes = changes
        super().__init__("; ".join(changes))


class CollateWithInfo:
    """The DataLoader's collate_fn (run in the worker): collate the rows, pass the reader's state change on."""

    def __init__(self, collate=None):
        self.collate = collate

    def __call__(self, item):
        rows, info = item
        return (self.collate(rows) if self.collate is not None else rows), info


class ReaderMirror:
    """One reader's state as of its last consumed batch: its meta, and per source the packer's remainder and
    the buffered blocks by id."""

    def __init__(self, meta: dict | None = None, lanes: list[dict] | None = None):
        self.meta = meta
        self.lanes = lanes or []

    @classmethod
    def from_arrays(cls, meta: dict, arrays: dict[str, np.ndarray]) -> ReaderMirror:
        lanes = []
        for index in range(len(meta["sources"])):
            part = {key.split("/", 1)[1]: value for key, value in arrays.items() if key.startswith(f"{index}/")}
            starts = part.pop("buffer_word_starts", None)
            ids, positions, block_ids = part.pop("buffer_ids"), part.pop("buffer_positions"), part.pop("buffer_block_ids")
            buffer = {int(block_id): (ids[row], positions[row], None if starts is None else starts[row])
                      for row, block_id in enumerate(block_ids)}
            lanes.append({"packer": part, "buffer": buffer})
        return cls(meta, lanes)

    def apply(self, info: dict) -> None:
        """A consumed batch's state change."""
        self.meta = info["meta"]
        if not self.lanes:
            self.lanes = [{"packer": {}, "buffer": {}} for _ in info["lanes"]]
        for lane, change, emitted in zip(self.lanes, info["lanes"], info["emitted"]):
            lane["packer"] = change["packer"]
            lane["buffer"].update(change["new"])
            for block_id in emitted:
                lane["buffer"].pop(int(block_id), None)

    def arrays(self, block_size: int, with_word_starts: bool) -> dict[str, np.ndarray]:
        return {f"{index}/{name}": array for index, lane in enumerate(self.lanes)
                for name, array in lane_arrays(lane["packer"], lane["buffer"], block_size, with_word_starts).items()}


class StreamLoader:
    """The loop's iterator over a BlockStream read by `num_workers` DataLoader workers (module docstring).

    `collate` turns a micro-batch's rows into tensors (an objective's collator); it runs in the workers."""

    def __init__(self, stream: BlockStream, collate=None, num_workers: int = 0, state: tuple[dict, dict] | None = None,
                 prefetch_factor: int = 2):
        self.stream = stream
        self.consumed = 0  # micro-batches the loop took from this process's readers
        self.mirrors: dict[int, ReaderMirror] = {}
        if state is not None:
            self.restore(*state)
        self.loader = torch.utils.data.DataLoader(
            stream, batch_size=None, num_workers=num_workers, collate_fn=CollateWithInfo(collate),
            **({"prefetch_factor": prefetch_factor} if num_workers else {}))
        self.iterator = None

    def restore(self, meta: dict, arrays: dict[str, np.ndarray]) -> None:
        stream = self.stream
        changes = layout_changes(meta.get("layout", {}), stream.layout())
        if meta.get("rank") != stream.rank:
            changes.insert(0, f"rank: saved {meta.get('rank')!r}, now {stream.rank}")
        if changes:
            raise StreamLayoutChanged(changes)
        self.consumed = meta["consumed"]
        for reader_meta in meta["readers"]:
            prefix = f"reader{reader_meta['reader']}/"
            own = {key[len(prefix):]: value for key, value in arrays.items() if key.startswith(prefix)}
            self.mirrors[reader_meta["reader"]] = ReaderMirror.from_arrays(reader_meta, own)
        plan = stream.plan
        stream.saved = {reader: (mirror.meta, mirror.arrays(plan.block_size, stream.with_word_starts))
                        for reader, mirror in self.mirrors.items()}
        # The DataLoader starts at worker 0: it plays the reader whose batch is due.
        stream.rotation = self.consumed % plan.local_readers

    def __iter__(self):
        return self

    def __next__(self):
        if self.iterator is None:
            self.iterator = iter(self.loader)
        batch, info = next(self.iterator)
        self.mirrors.setdefault(info["reader"], ReaderMirror()).apply(info)
        self.consumed += 1
        return batch

    def metas(self) -> list[dict]:
        return [self.mirrors[reader].meta for reader in sorted(self.mirrors)]

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """This process's stream position: (JSON meta, arrays), as of the last consumed batch."""
        stream = self.stream
        meta = {"version": STATE_VERSION, "rank": stream.rank, "consumed": self.consumed, "layout": stream.layout(),
                "readers": self.metas()}
        arrays = {f"reader{reader}/{name}": array for reader in sorted(self.mirrors)
                  for name, array in self.mirrors[reader].arrays(stream.plan.block_size,
                                                                 stream.with_word_starts).items()}
        return meta, arrays


# --------------------------------------------------------------------------------------------------- layout
def layout_changes(saved: dict, now: dict) -> list[str]:
    """What differs between a saved layout and this run's, one line each (empty: the same layout)."""
    changes = [f"{key}: saved {saved.get(key)!r}, now {value!r}" for key, value in now.items()
               if key != "sources" and saved.get(key) != value]
    changes += [f"{key}: saved {value!r}, now absent" for key, value in saved.items() if key not in now]
    saved_sources = {source["name"]: source for source in saved.get("sources", [])}
    if list(saved_sources) != [source["name"] for source in now["sources"]]:
        changes.append(f"sources: saved {list(saved_sources)}, now {[source['name'] for source in now['sources']]}")
        return changes
    for source in now["sources"]:
        before = saved_sources[source["name"]]
        for key in ("weight", "revision", "shards"):
            if before.get(key) != source[key]:
                changes.append(f"source {source['name']!r} {key}: saved {before.get(key)!r}, now {source[key]!r}")
        if before.get("digest") != source["digest"]:
            changes.append(f"source {source['name']!r}: {describe_file_changes(before.get('files', []), source['files'])}")
    return changes


def describe_file_changes(saved: list, now: list) -> str:
    saved_files, files = {path: rest for path, *rest in saved}, {path: rest for path, *rest in now}
    edited = [path for path in files if path in saved_files and files[path] != saved_files[path]]
    added = [path for path in files if path not in saved_files]
    removed = [path for path in saved_files if path not in files]
    parts = [f"{what} {paths[:3]}{' ...' if len(paths) > 3 else ''}" for what, paths in (
        ("edited (size or modification time)", edited), ("added", added), ("removed", removed)) if paths]
    return "files " + "; ".join(parts or ["cut into other shards"]) + " since the checkpoint"


# --------------------------------------------------------------------------------------------------- files
def state_to_bytes(meta: dict, arrays: dict[str, np.ndarray]) -> bytes:
    """One byte string: the JSON meta's length (8 bytes), the meta, then the arrays as safetensors."""
    from safetensors.numpy import save

    text = json.dumps(meta).encode()
    tensors = save({key: np.ascontiguousarray(value) for key, value in arrays.items()})
    return len(text).to_bytes(8, "little") + text + tensors


def state_from_bytes(blob: bytes) -> tuple[bytes, bytes]:
    """(JSON bytes, safetensors bytes) of `state_to_bytes`' string: the two files a checkpoint holds."""
    length = int.from_bytes(blob[:8], "little")
    return blob[8:8 + length], blob[8 + length:]


def state_file_names(rank: int) -> tuple[str, str]:
    return f"stream-rank{rank}.json", f"stream-rank{rank}.safetensors"


def write_state(folder: Path, rank: int, meta: dict, arrays: dict[str, np.ndarray]) -> None:
    text, tensors = state_from_bytes(state_to_bytes(meta, arrays))
    folder.mkdir(parents=True, exist_ok=True)
    json_name, tensors_name = state_file_names(rank)
    (folder / json_name).write_bytes(text)
    (folder / tensors_name).write_bytes(tensors)


def read_state(folder: Path, rank: int) -> tuple[dict, dict[str, np.ndarray]] | None:
    """The state `write_state` wrote for `rank`, or None when the folder holds none."""
    from safetensors.numpy import load

    json_name, tensors_name = state_file_names(rank)
    if not (folder / json_name).is_file():
        return None
    return json.loads((folder / json_name).read_text()), load((folder / tensors_name).read_bytes())


# --------------------------------------------------------------------------------------------------- reports
def source_summaries(metas: list[dict], names: list[str]) -> list[str]:
    """One line per source: documents read, cleaning, held out and packing, summed over the readers' metas."""
    lines = []
    for index, name in enumerate(names):
        lanes = [meta["sources"][index] for meta in metas]
        if not lanes:
            lines.append(f"stream source {name!r}: nothing read yet")
            continue
        cleaning, packing = CleaningReport(), PackingReport(block_size=0)
        for lane in lanes:
            cleaning.add(CleaningReport(**lane["cleaning"]))
            for key, value in lane["packing"].items():
                setattr(packing, key, getattr(packing, key) + value)
        epochs = sorted(lane["epoch"] for lane in lanes)
        held_out = sum(lane["held_out"] for lane in lanes)
        lines.append(
            f"stream source {name!r}: {cleaning.documents_in:,} documents read by {len(lanes)} reader(s) (reader "
            f"epochs {epochs[0]}-{epochs[-1]}) | cleaning: {cleaning.summary()} | {held_out:,} held out for "
            f"validation | packed {packing.documents:,} documents ({packing.tokens:,} tokens) into "
            f"{packing.blocks:,} blocks, {packing.split_documents:,} split across blocks, "
            f"{packing.empty_documents:,} empty dropped"
        )
    return lines
