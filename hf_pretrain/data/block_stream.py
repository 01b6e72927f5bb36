"""Packed blocks of a streamed corpus, read by many readers at once, each resumable from a small saved state.

Readers. A run of P processes with W DataLoader workers each has L = P x max(W, 1) logical readers; reader
l = p * max(W, 1) + local. DataLoader worker w of process p plays local reader (w + rotation) % W, where the
rotation is 0 at the start and `consumed % W` on resume (the DataLoader always starts at worker 0; the rotation
makes worker 0 play the reader whose batch is due, so a resumed run reads in the uninterrupted order).

Each reader, for each source of the corpus (a "lane"): in its epoch e it reads the shards (data/shards.py) at
positions l, l + L, l + 2L, ... of a permutation seeded by (seed, source, e), so every document of the source is
read by exactly one reader once per epoch, in a new shard order every epoch; then it moves to its next epoch on its
own (the stream never ends, so no process runs dry before the others, which would hang the collectives). A
document is cleaned (data/cleaning.py, counted in the lane's CleaningReport), dropped when it belongs to the
held-out validation split (the hash rule of sources.in_validation), tokenized in chunks (DocumentEncoder) and
packed by the lane's own BlockPacker: every block holds tokens of one source, so a source's share of the blocks is
its share of the tokens. Blocks then wait in a shuffle buffer: block k of a lane leaves in the order of
k + U_k, U_k uniform in [0, data.shuffle_buffer) (a bounded random delay, a pure function of (seed, reader,
source, k)), the smallest first once no block still to be packed can come before it. The buffer is therefore a
set of blocks keyed by their packing number: its state is which blocks are in it.

Mixture. The j-th block of the k-th micro-batch of reader (p, local) fills global block slot
g = ((k * W + local) * P + p) * B + j: consecutive micro-batches of all processes fill consecutive slots, and slot
g takes a block of source `slot_sources(g, weights)` (data/mixture.py), so over any window of consecutive trained
blocks every source's share stays within a fraction of a point of its weight. One source skips the schedule.

Whole documents (rows="documents", the denoising autoencoder). The lane's packer is replaced by
documents.DocumentRows: the encoder truncates every document to block_size as prepare_documents does, and each
document becomes one row (nothing carried over); everything else (shards, shuffle buffer, keys, mixture slots,
saved state) is the same. Rows then have their document's length (input_ids, length, example_index, source, +
word_starts; no position_ids); the collator pads each micro-batch to its longest row. They are not length-bucketed
(that needs the whole corpus's lengths), which costs compute: on the built-in corpus (dae-sentence: block_size
128, batch 32, shuffle buffer 1000) 59% of a streamed micro-batch's token slots are padding, against 2% in the
in-memory run's length buckets (300 batches each), so a streamed step spends up to ~2.4x the FLOPs per real token.

Keys. The n-th block reader l emits gets example_index n * L + l: unique over readers and epochs, so the noise,
a pure function of (seed, 0, example_index), never repeats and is the same after a resume.

Public API
----------
`StreamPlan`: the layout every rank computes alike (sources, their shards, readers, sizes, seed, rows: "blocks" or
    "documents"); `plan_stream()` lists the shards and refuses a source with fewer shards than readers.
`BlockStream(plan, tokenizer, rank, with_word_starts)`: a torch IterableDataset; each worker plays one reader and
    yields (rows, info) micro-batches forever: rows are dicts (input_ids, position_ids, example_index, source,
    + word_starts) and info carries the reader's state change since its previous batch (data/stream_state.py).
`Reader(plan, reader, encoder)`: one logical reader: `next_batch()`, `meta()`, `arrays()`, `restore(meta, arrays)`.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .cleaning import CleaningReport, clean_text, count_issues
from .documents import DocumentRows
from .encoding import DocumentEncoder, minimum_document_tokens
from .mixture import TextSource, slot_sources
from .packing import BlockPacker, PackingReport
from .randomness import splitmix64
from .shards import Shard, list_shards, read_shard, shards_digest
from .sources import in_validation

logger = logging.getLogger(__name__)

# Documents are tokenized in chunks (the tokenizer's thread pool works on a whole chunk) of about CHUNK_BLOCKS
# blocks' worth of text (4 characters a token), at most CHUNK_DOCUMENTS documents: the blocks of a chunk wait in
# the buffer and travel to the main process with one batch, so a chunk stays near a batch's size.
CHUNK_BLOCKS = 16
CHUNK_DOCUMENTS = 256
MAX_DOCUMENT_CHARS = 1_000_000  # longer documents are split (load_text_sources' default, so both paths agree)
EMPTY_EPOCHS_ALLOWED = 3  # a lane whose shards hold no text for this many epochs in a row stops the run
Block = tuple  # (input_ids int32, position_ids int32, word_starts int8 or None), each (block_size,)


@dataclass
class StreamPlan:
    """What every rank computes alike before reading: the sources, their shards and the reading layout."""

    sources: list[TextSource]
    shards: list[list[Shard]]
    num_processes: int
    local_readers: int  # max(train.num_workers, 1)
    block_size: int
    batch_size: int
    seed: int
    shuffle_buffer: int
    validation_fractions: list[float]  # per source: the share of its documents held out for validation
    rows: str = "blocks"  # "blocks": packed blocks; "documents": one truncated document per row (module doc)

    @property
    def readers(self) -> int:
        return self.num_processes * self.local_readers

    def layout(self, with_word_starts: bool) -> dict:
        """What a saved stream position is valid for: another value of any of these reads other documents."""
        return {
            "readers": self.readers, "processes": self.num_processes, "readers_per_process": self.local_readers,
            "block_size": self.block_size, "batch_size": self.batch_size, "seed": self.seed,
            "shuffle_buffer": self.shuffle_buffer, "validation_fractions": self.validation_fractions,
            "word_starts": with_word_starts,
            "sources": [{"name": source.name, "weight": source.weight, "revision": source.revision,
                         "shards": len(shards), "digest": shards_digest(shards),
                         "files": [list(f) for f in sorted({(s.path, s.size, s.mtime) for s in shards if s.path})]}
                        for source, shards in zip(self.sources, self.shards)],
            **({"rows": self.rows} if self.rows != "blocks" else {}),  # (packed layouts as saved before it existed)
        }


def plan_stream(sources: list[TextSource], num_processes: int, num_workers: int, block_size: int, batch_size: int,
                seed: int, shuffle_buffer: int, validation_fractions: list[float] | None = None,
                rows: str = "blocks") -> StreamPlan:
    """List every source's shards; refuse, before any work, a source with fewer shards than readers.
    `validation_fractions`: per source, the share of documents held out for validation (default: none).
    `rows`: "blocks" (packed) or "documents" (one document per row, truncated to block_size)."""
    if rows not in ("blocks", "documents"):
        raise ValueError(f"rows={rows!r}; allowed: 'blocks' or 'documents'.")
    if rows == "documents" and (not isinstance(block_size, int) or block_size < 3):
        raise ValueError(f"block_size={block_size!r}; allowed for whole documents: an integer >= 3.")
    for name, value, low in (("num_processes", num_processes, 1), ("num_workers", num_workers, 0),
                             ("block_size", block_size, 2), ("batch_size", batch_size, 1),
                             ("shuffle_buffer", shuffle_buffer, 1)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name}={value!r} is not allowed; it must be an integer >= {low}.")
    names = [source.name for source in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"source names {names} repeat; each source of a stream needs its own name.")
    local_readers = max(num_workers, 1)
    readers = num_processes * local_readers
    shards = [list_shards(source, readers) for source in sources]
    for source, pieces in zip(sources, shards):
        if len(pieces) < readers:
            whole = sum(shard.kind == "records" or (shard.kind == "lines" and shard.end is None) for shard in pieces)
            raise ValueError(
                f"data.streaming: source {source.name!r} has {len(pieces)} shard(s) ({whole} file(s) that are read "
                f"whole: compressed, paragraphs, JSON-array or CSV with line breaks in quoted fields) for {readers} "
                f"readers ({num_processes} process(es) x {local_readers} DataLoader worker(s), train.num_workers="
                f"{num_workers}); every reader needs a shard of every source. Split the corpus into at least "
                f"{readers} files, lower train.num_workers or the number of processes, or decompress the files "
                "(uncompressed text, JSON Lines and CSV files are cut into byte ranges, Parquet into row groups)."
            )
    fractions = [float(f) for f in validation_fractions] if validation_fractions is not None else [0.0] * len(sources)
    if len(fractions) != len(sources):
        raise ValueError(f"validation_fractions={fractions!r}; allowed: one fraction per source ({len(sources)}).")
    plan = StreamPlan(sources, shards, num_processes, local_readers, block_size, batch_size, seed, shuffle_buffer,
                      fractions, rows)
    logger.info("stream: " + "; ".join(f"source {s.name!r}: {len(p):,} shards" for s, p in zip(sources, shards))
                + f" for {readers} reader(s) ({num_processes} process(es) x {local_readers})")
    return plan


def shuffle_keys(seed: int, reader: int, source: int, block_ids: np.ndarray, window: int) -> np.ndarray:
    """The order blocks leave a lane's buffer in: block id + a delay in [0, window), a hash of its coordinates."""
    block_ids = np.asarray(block_ids, np.int64)
    if window <= 1:
        return block_ids
    lane = splitmix64(np.array([((seed * 1_000_003 + reader) * 4096 + source) % 2**64], np.uint64))
    delays = splitmix64(lane ^ block_ids.astype(np.uint64)) % np.uint64(window)
    return block_ids + delays.astype(np.int64)


def dealt_shards(num_shards: int, readers: int, reader: int, seed: int, source: int, epoch: int) -> list[int]:
    """The shards `reader` reads in `epoch`, in order: a seeded permutation of all, dealt round-robin."""
    order = np.random.default_rng([seed, source, epoch, 0x5AD]).permutation(num_shards)
    return [int(shard) for shard in order[reader::readers]]


# --------------------------------------------------------------------------------------------------- one source
class Lane:
    """One source inside one reader: its position in the shards dealt to the reader, its cleaning counts, packer
    and shuffle buffer."""

    def __init__(self, index: int, source: TextSource, shards: list[Shard], reader: int, plan: StreamPlan,
                 encoder: DocumentEncoder):
        self.index, self.source, self.shards, self.reader = index, source, shards, reader
        self.plan, self.encoder = plan, encoder
        packer = DocumentRows if plan.rows == "documents" else BlockPacker
        self.packer = packer(plan.block_size, minimum_document_tokens(encoder))
        self.position = {"epoch": 0, "shard_pos": 0, "offset": 0}
        # packed: blocks cut so far (the next block's id); epoch_pieces: documents kept in this epoch
        self.counts = {"packed": 0, "held_out": 0, "epoch_pieces": 0, "empty_epochs": 0}
        self.cleaning = CleaningReport()
        self.buffer: dict[int, Block] = {}
        self.heap: list[tuple[int, int]] = []
        self.new_blocks: list[int] = []  # packed since the last delta
        self.entries = None  # the open shard's entries, from the position's offset
        self.dealt: tuple[int, list[int]] = (-1, [])

    def next_block(self) -> tuple[int, Block]:
        """The next block out of the buffer (packing more until no later block can come before it)."""
        while not self.heap or self.heap[0][0] >= self.counts["packed"]:
            self.pack_more()
        _, block_id = heapq.heappop(self.heap)
        return block_id, self.buffer.pop(block_id)

    def pack_more(self) -> None:
        texts = self.next_texts()
        encoded = self.encoder.encode(texts)
        lengths = np.fromiter((len(ids) for ids in encoded["input_ids"]), np.int64, len(texts))
        ids = np.fromiter(itertools.chain.from_iterable(encoded["input_ids"]), np.int32, int(lengths.sum()))
        word_starts = None
        if self.encoder.with_word_starts:
            word_starts = np.fromiter(itertools.chain.from_iterable(encoded["word_starts"]), np.int8, len(ids))
        blocks = self.packer.add(ids, lengths, word_starts)
        if "truncated" in encoded:  # whole documents: the encoder truncated them to block_size
            self.packer.count_truncated(encoded["truncated"])
        first = self.counts["packed"]
        block_ids = np.arange(first, first + len(blocks.input_ids))
        keys = shuffle_keys(self.plan.seed, self.reader, self.index, block_ids, self.plan.shuffle_buffer)
        for row, (block_id, key) in enumerate(zip(block_ids.tolist(), keys.tolist())):
            starts = blocks.word_starts[row] if blocks.word_starts is not None else None
            self.add_block(block_id, (blocks.input_ids[row], blocks.position_ids[row], starts), key)
            self.new_blocks.append(block_id)
        self.counts["packed"] += len(block_ids)

    def add_block(self, block_id: int, block: Block, key: int) -> None:
        self.buffer[block_id] = block
        heapq.heappush(self.heap, (key, block_id))

    def next_texts(self) -> list[str]:
        """The next chunk of cleaned training documents, advancing the position (a whole entry at a time, so a
        saved offset never falls inside one); a chunk may run into the next epoch."""
        texts: list[str] = []
        characters, enough = 0, CHUNK_BLOCKS * self.plan.block_size * 4
        while len(texts) < CHUNK_DOCUMENTS and characters < enough:
            position = self.position
            mine = self.my_shards(position["epoch"])
            if position["shard_pos"] >= len(mine):
                self.next_epoch()
                continue
            if self.entries is None:
                self.entries = read_shard(self.shards[mine[position["shard_pos"]]], self.source, position["offset"])
            entry = next(self.entries, None)
            if entry is None:  # the shard is done
                self.position = {**position, "shard_pos": position["shard_pos"] + 1, "offset": 0}
                self.entries = None
                continue
            values, position["offset"] = entry
            for raw, problem in values:
                pieces = self.clean(raw, problem)
                texts.extend(pieces)
                characters += sum(len(piece) for piece in pieces)
        return texts

    def my_shards(self, epoch: int) -> list[int]:
        if self.dealt[0] != epoch:
            self.dealt = (epoch, dealt_shards(len(self.shards), self.plan.readers, self.reader, self.plan.seed,
                                              self.index, epoch))
        return self.dealt[1]

    def next_epoch(self) -> None:
        counts = self.counts
        counts["empty_epochs"] = counts["empty_epochs"] + 1 if counts["epoch_pieces"] == 0 else 0
        if counts["empty_epochs"] >= EMPTY_EPOCHS_ALLOWED:
            mine = [self.shards[i] for i in self.my_shards(self.position["epoch"])]
            raise RuntimeError(
                f"reader {self.reader} found no training text in source {self.source.name!r} in "
                f"{EMPTY_EPOCHS_ALLOWED} epochs in a row (its shards, e.g. {mine[:3]}, hold only empty, malformed "
                "or held-out documents, or byte ranges shorter than one line): use fewer DataLoader workers or "
                "processes, or more, smaller files."
            )
        counts["epoch_pieces"] = 0
        self.position = {"epoch": self.position["epoch"] + 1, "shard_pos": 0, "offset": 0}
        self.entries = None

    def clean(self, raw, problem: str | None) -> list[str]:
        """The training documents one raw value becomes, counted as data/cleaning.py's DocumentCleaner counts."""
        count_issues(raw, MAX_DOCUMENT_CHARS, self.cleaning, problem)
        pieces = [] if problem is not None else clean_text(raw, MAX_DOCUMENT_CHARS)
        self.cleaning.documents_out += len(pieces)
        if len(pieces) > 1:
            self.cleaning.pieces_from_splits += len(pieces)
        fraction = self.plan.validation_fractions[self.index]
        if fraction:
            kept = [piece for piece in pieces if not in_validation(piece, self.plan.seed, fraction)]
            self.counts["held_out"] += len(pieces) - len(kept)
            pieces = kept
        self.counts["epoch_pieces"] += len(pieces)
        return pieces

    # -------------------------------------------------------------------- state
    def meta(self) -> dict:
        packing = asdict(self.packer.report)
        del packing["from_cache"], packing["block_size"]
        return {**self.position, **self.counts, "cleaning": self.cleaning.to_dict(), "packing": packing,
                # the packer's two counters besides its token remainder (packing.BlockPacker's own fields)
                "packer": {"documents_seen": self.packer._documents_seen,
                           "last_split_document": self.packer._last_split_document}}

    def packer_arrays(self) -> dict[str, np.ndarray]:
        """The packer's remainder: fewer than block_size tokens and where their documents start."""
        packer = self.packer
        arrays = {"packer_ids": packer._ids.copy(), "packer_starts": packer._starts.astype(np.uint8),
                  "packer_document": packer._document.copy()}
        if self.encoder.with_word_starts:
            word_starts = packer._word_starts
            arrays["packer_word_starts"] = np.empty(0, np.int8) if word_starts is None else word_starts.copy()
        return arrays

    def take_new_blocks(self) -> dict[int, Block]:
        """Blocks packed since the last call that are still in the buffer (the others left in the same batch)."""
        new = {block_id: self.buffer[block_id] for block_id in self.new_blocks if block_id in self.buffer}
        self.new_blocks = []
        return new

    def restore(self, meta: dict, arrays: dict[str, np.ndarray]) -> None:
        """Continue from a saved state: reopen the shard at the saved offset (nothing before it is read again)."""
        self.position = {key: meta[key] for key in ("epoch", "shard_pos", "offset")}
        self.counts = {key: meta[key] for key in self.counts}
        self.cleaning = CleaningReport(**meta["cleaning"])
        packer = self.packer
        packer.report = PackingReport(block_size=self.plan.block_size, **meta["packing"])
        packer._documents_seen = meta["packer"]["documents_seen"]
        packer._last_split_document = meta["packer"]["last_split_document"]
        packer._ids = arrays["packer_ids"].astype(np.int32)
        packer._starts = arrays["packer_starts"].astype(bool)
        packer._document = arrays["packer_document"].astype(np.int64)
        if "packer_word_starts" in arrays:
            packer._word_starts = arrays["packer_word_starts"].astype(np.int8)
        block_ids = arrays["buffer_block_ids"]
        keys = shuffle_keys(self.plan.seed, self.reader, self.index, block_ids, self.plan.shuffle_buffer)
        for row, (block_id, key) in enumerate(zip(block_ids.tolist(), keys.tolist())):
            starts = arrays["buffer_word_starts"][row] if "buffer_word_starts" in arrays else None
            self.add_block(block_id, (arrays["buffer_ids"][row], arrays["buffer_positions"][row], starts), key)
        self.entries = None


def lane_arrays(packer: dict[str, np.ndarray], buffer: dict[int, Block], block_size: int,
                with_word_starts: bool) -> dict[str, np.ndarray]:
    """A lane's arrays as a checkpoint stores them: the packer's remainder and the buffered blocks by id."""
    ids = sorted(buffer)
    empty = np.empty((0, block_size))

    def stacked(part: int, dtype) -> np.ndarray:
        return np.stack([buffer[i][part] for i in ids]).astype(dtype) if ids else empty.astype(dtype)

    arrays = {**packer, "buffer_block_ids": np.array(ids, np.int64), "buffer_ids": stacked(0, np.int32),
              "buffer_positions": stacked(1, np.int32)}
    if with_word_starts:
        arrays["buffer_word_starts"] = stacked(2, np.int8)
    return arrays


# --------------------------------------------------------------------------------------------------- one reader
class Reader:
    """One logical reader: a lane per source, the mixture schedule and its micro-batches."""

    def __init__(self, plan: StreamPlan, reader: int, encoder: DocumentEncoder):
        self.plan, self.reader, self.encoder = plan, reader, encoder
        self.rank, self.local = divmod(reader, plan.local_readers)
        self.lanes = [Lane(index, source, shards, reader, plan, encoder)
                      for index, (source, shards) in enumerate(zip(plan.sources, plan.shards))]
        self.weights = [source.weight for source in plan.sources]
        self.batches = 0  # micro-batches made
        self.emitted = 0  # blocks emitted
        self.documents = plan.rows == "documents"

    def next_batch(self) -> tuple[list[dict], dict]:
        """The next micro-batch's rows and the state change since the previous one."""
        plan = self.plan
        size = plan.batch_size
        first_slot = ((self.batches * plan.local_readers + self.local) * plan.num_processes + self.rank) * size
        if len(self.lanes) > 1:
            sources = slot_sources(np.arange(first_slot, first_slot + size), self.weights).tolist()
        else:
            sources = [0] * size
        rows, emitted = [], [[] for _ in self.lanes]
        for source in sources:
            block_id, (ids, positions, word_starts) = self.lanes[source].next_block()
            if self.documents:  # a padded document row (documents.DocumentRows): cut back to its length
                length = int(np.count_nonzero(positions >= 0))
                ids, positions = ids[:length], None
                word_starts = word_starts[:length] if word_starts is not None else None
                row = {"input_ids": ids, "length": np.int64(length)}
            else:
                row = {"input_ids": ids, "position_ids": positions}
            row.update(source=source, example_index=np.int64(self.emitted * plan.readers + self.reader))
            if word_starts is not None:
                row["word_starts"] = word_starts
            rows.append(row)
            emitted[source].append(block_id)
            self.emitted += 1
        self.batches += 1
        return rows, {"reader": self.reader, "emitted": emitted, "meta": self.meta(),
                      "lanes": [{"packer": lane.packer_arrays(), "new": lane.take_new_blocks()} for lane in self.lanes]}

    def meta(self) -> dict:
        return {"reader": self.reader, "batches": self.batches, "emitted": self.emitted,
                "sources": [lane.meta() for lane in self.lanes]}

    def arrays(self) -> dict[str, np.ndarray]:
        """The reader's arrays, keyed "<source index>/<name>" (what a mirror of it holds)."""
        return {f"{lane.index}/{name}": array for lane in self.lanes
                for name, array in lane_arrays(lane.packer_arrays(), lane.buffer, self.plan.block_size,
                                               self.encoder.with_word_starts).items()}

    def restore(self, meta: dict, arrays: dict[str, np.ndarray]) -> None:
        if meta["reader"] != self.reader:
            raise ValueError(f"a state of reader {meta['reader']} cannot restore reader {self.reader}.")
        self.batches, self.emitted = meta["batches"], meta["emitted"]
        for lane, lane_meta in zip(self.lanes, meta["sources"]):
            prefix = f"{lane.index}/"
            lane.restore(lane_meta, {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)})


# --------------------------------------------------------------------------------------------------- the dataset
class BlockStream(torch.utils.data.IterableDataset):
    """Micro-batches of packed blocks: each DataLoader worker (or the main process, without workers) plays one
    reader of this process and yields (rows, info) forever. `saved` (reader -> (meta, arrays)) and `rotation` are
    set by the loader on resume (data/stream_state.py), before the workers start."""

    def __init__(self, plan: StreamPlan, tokenizer, rank: int, with_word_starts: bool):
        super().__init__()
        if not 0 <= rank < plan.num_processes:
            raise ValueError(f"rank={rank!r}; allowed: 0 to {plan.num_processes - 1}.")
        self.plan, self.rank = plan, rank
        # Whole documents are truncated by the encoder, as prepare_documents truncates them.
        self.encoder = DocumentEncoder(tokenizer, "text", with_word_starts,
                                       max_length=plan.block_size if plan.rows == "documents" else None)
        self.rotation = 0
        self.saved: dict[int, tuple[dict, dict]] = {}

    @property
    def with_word_starts(self) -> bool:
        return self.encoder.with_word_starts

    def layout(self) -> dict:
        return self.plan.layout(self.with_word_starts)

    def reader_of_worker(self, worker: int) -> int:
        local = self.plan.local_readers
        return self.rank * local + (worker + self.rotation) % local

    def __iter__(self):
        worker = torch.utils.data.get_worker_info()
        workers = worker.num_workers if worker is not None else 1
        if workers != self.plan.local_readers:
            raise ValueError(f"the stream was planned for {self.plan.local_readers} reader(s) per process but is read "
                             f"by {workers}; build it with num_workers={self.plan.local_readers}.")
        reader = Reader(self.plan, self.reader_of_worker(worker.id if worker is not None else 0), self.encoder)
        if reader.reader in self.saved:
            reader.restore(*self.saved[reader.reader])
        while True:
            yield reader.next_batch()
