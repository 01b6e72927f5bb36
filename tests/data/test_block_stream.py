"""The per-reader stream (data/shards.py, block_stream.py, stream_state.py): shards read every row once and as the
tolerant readers read it, reopen at a saved offset, are dealt so that every document is read once per epoch;
the shuffle buffer neither drops nor repeats a block; a stream resumes exactly from its state files with and
without DataLoader workers; another layout or an edited file is refused; a mixture holds every source's token
share within a point over any 5,000 blocks."""

from __future__ import annotations

import gzip
import json
import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from hf_pretrain.data import readers
from hf_pretrain.data.block_stream import BlockStream, Reader, dealt_shards, plan_stream
from hf_pretrain.data.cleaning import MALFORMED_COLUMN
from hf_pretrain.data.encoding import DocumentEncoder
from hf_pretrain.data.mixture import TextSource, slot_sources
from hf_pretrain.data.shards import list_shards, read_shard
from hf_pretrain.data.stream_state import (
    StreamLayoutChanged,
    StreamLoader,
    read_state,
    write_state,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stream_corpus import (
    document_counts,
    document_word,
    expected_counts,
    numbered_document,
    word_tokenizer,
)


def entries(shard, source, offset=0) -> list:
    return list(read_shard(shard, source, offset))


def values(shards, source) -> list[tuple[object, bool]]:
    """(raw value, malformed?) of every row of the shards, read in order from their starts."""
    return [(raw, problem is not None) for shard in shards for entry, _ in entries(shard, source)
            for raw, problem in entry]


def write_jsonl(path: Path, numbers, prefix="d") -> None:
    path.write_text("".join(json.dumps({"text": numbered_document(n, prefix)}) + "\n" for n in numbers))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    words = [document_word(n, prefix) for prefix in "dab" for n in range(3000)]
    return word_tokenizer(tmp_path_factory.mktemp("words"), words)


# ----------------------------------------------------------------------------------------------- shards
DIRTY_JSONL = ('\ufeff{"text": "first"}\n{"text": "two"}\r\n\nnot json\n[1, 2]\n{"other": 1}\n{"text": "x\\u0000y"}\n'
               '{"text": 5}\n' + "".join(f'{{"text": "row {n}"}}\n' for n in range(60)) + '{"text": "end"}')
DIRTY_CSV = ('\ufeffid,text,extra\r\n1,"hello, world",x\r\n2,,y\r\n3,"say ""hi""",z\r\nbad,line\r\n\r\n'
             + "".join(f"{n},row {n},w\r\n" for n in range(60)) + "9,end,v")


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "text"])
def test_byte_ranges_read_every_row_once_as_the_whole_file_readers_do(tmp_path, fmt):
    path = tmp_path / f"dirty.{fmt}"
    if fmt == "jsonl":
        path.write_text(DIRTY_JSONL)
        reference = [(r["text"], r[MALFORMED_COLUMN] is not None) for r in readers.read_rows(str(path), fmt, "text")]
    elif fmt == "csv":
        path.write_bytes(DIRTY_CSV.encode())
        reference = [(r["text"], r[MALFORMED_COLUMN] is not None) for r in readers.read_rows(str(path), fmt, "text")]
    else:  # invalid UTF-8, a lone \r (the datasets text builder ends a line there), CRLF, empty lines
        path.write_bytes(b"caf\xe9 one\r\ntwo\rthree\n\n" + b"".join(b"line %d\n" % n for n in range(60)) + b"last")
        import datasets

        reference = [(text, False) for text in datasets.load_dataset(
            "text", data_files={"data": [str(path)]}, split="data", encoding_errors="replace")["text"]]
    source = TextSource("s", files=[str(path)], format=fmt)
    shards = list_shards(source, readers=7)
    assert len(shards) >= 7 and {s.kind for s in shards} == {"lines"}
    assert values(shards, source) == reference


def test_a_shard_reopens_at_a_saved_offset_without_what_came_before(tmp_path):
    """Each kind of shard: reading from the offset after entry k gives exactly the entries after k."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [numbered_document(n) for n in range(40)]
    (tmp_path / "a.jsonl").write_text(DIRTY_JSONL)
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as handle:
        handle.write("".join(json.dumps({"text": t}) + "\n" for t in texts))
    pq.write_table(pa.table({"text": texts}), tmp_path / "c.parquet", row_group_size=7)
    (tmp_path / "d.txt").write_text("\n\n".join(texts))
    cases = [TextSource("a", files=[str(tmp_path / "a.jsonl")], format="jsonl"),
             TextSource("b", files=[str(tmp_path / "b.jsonl.gz")], format="jsonl"),
             TextSource("c", files=[str(tmp_path / "c.parquet")], format="parquet"),
             TextSource("d", files=[str(tmp_path / "d.txt")], format="paragraphs"),
             TextSource("e", texts=texts)]
    kinds = set()
    for source in cases:
        shards = list_shards(source, readers=3)
        shard = shards[len(shards) // 2]
        kinds.add(shard.kind)
        read = entries(shard, source)
        assert len(read) >= 3, source.name
        for k in (0, len(read) // 2, len(read) - 1):
            assert entries(shard, source, read[k][1]) == read[k + 1:], (source.name, k)
    assert kinds == {"lines", "rows", "records", "memory"}
    assert [s.kind for s in list_shards(cases[1], readers=3)] == ["lines"]  # compressed: one whole shard
    assert len(list_shards(cases[2], readers=3)) == 6  # a shard per row group


def test_files_that_cannot_be_cut_stay_whole_and_too_few_for_the_readers_are_refused(tmp_path):
    quoted = tmp_path / "quoted.csv"
    quoted.write_text('id,text\n1,"a line\nand the next"\n2,plain\n')
    source = TextSource("q", files=[str(quoted)], format="csv")
    shards = list_shards(source, readers=4)
    assert [s.kind for s in shards] == ["records"]  # a quoted field holds a line break
    assert values(shards, source) == [("a line\nand the next", False), ("plain", False)]

    for n in range(3):
        with gzip.open(tmp_path / f"part{n}.jsonl.gz", "wt") as handle:
            handle.write(json.dumps({"text": f"document {n}"}) + "\n")
    packed = TextSource("packed", files=sorted(str(p) for p in tmp_path.glob("*.gz")), format="jsonl")
    with pytest.raises(ValueError) as refused:
        plan_stream([packed], num_processes=2, num_workers=2, block_size=16, batch_size=2, seed=0, shuffle_buffer=1)
    message = str(refused.value)
    assert "source 'packed' has 3 shard(s) (3 file(s) that are read whole" in message
    assert "4 readers (2 process(es) x 2 DataLoader worker(s)" in message
    assert "at least 4 files" in message and "train.num_workers" in message and "decompress" in message
    assert len(plan_stream([packed], 1, 2, 16, 2, 0, 1).shards[0]) == 3  # 2 readers: enough


@pytest.mark.parametrize("readers", [1, 4, 6, 16, 40])
def test_every_document_is_read_by_exactly_one_reader_once_per_epoch(tmp_path, readers):
    for n in range(6):
        write_jsonl(tmp_path / f"part{n}.jsonl", range(n * 150, n * 150 + 150))
    source = TextSource("s", files=sorted(str(p) for p in tmp_path.glob("*.jsonl")), format="jsonl")
    shards = list_shards(source, readers)
    assert len(shards) >= readers
    orders = []
    for epoch in (0, 1):
        read = Counter()
        order = []
        for reader in range(readers):
            for index in dealt_shards(len(shards), readers, reader, seed=5, source=0, epoch=epoch):
                read.update(raw for entry, _ in entries(shards[index], source) for raw, _ in entry)
                order.append(index)
        assert read == Counter(numbered_document(n) for n in range(900)), epoch
        orders.append(order)
    assert readers == 1 or orders[0] != orders[1]  # a new shard order every epoch


# ----------------------------------------------------------------------------------------------- readers
def reader_blocks(plan, tokenizer, reader, batches) -> tuple[list[int], list[np.ndarray]]:
    """(block ids in the order they left the buffer, their input ids) of `batches` micro-batches."""
    stream = Reader(plan, reader, DocumentEncoder(tokenizer, "text", False))
    ids, blocks = [], []
    for _ in range(batches):
        rows, info = stream.next_batch()
        ids.extend(info["emitted"][0])
        blocks.extend(row["input_ids"] for row in rows)
    return ids, blocks


def test_the_shuffle_buffer_delays_blocks_a_bounded_amount_and_never_drops_or_repeats_one(tokenizer):
    source = TextSource("s", texts=[numbered_document(n) for n in range(400)])
    ordered_plan = plan_stream([source], 1, 0, 16, 4, 0, shuffle_buffer=1)
    shuffled_plan = plan_stream([source], 1, 0, 16, 4, 0, shuffle_buffer=8)
    in_order, ordered_blocks = reader_blocks(ordered_plan, tokenizer, 0, 64)
    shuffled, shuffled_blocks = reader_blocks(shuffled_plan, tokenizer, 0, 60)
    assert in_order == list(range(256))
    assert len(set(shuffled)) == 240 and shuffled != in_order
    assert set(range(240 - 7)) <= set(shuffled)  # every block leaves within 8 places of its turn
    assert max(position - block for position, block in enumerate(shuffled)) < 8
    for position, block in enumerate(shuffled):  # the same blocks, only later or earlier
        assert np.array_equal(shuffled_blocks[position], ordered_blocks[block])


def batch_key(rows: list[dict]) -> tuple:
    """A micro-batch's rows (no collator): each row's noise key, ids, positions and word starts."""
    return tuple((int(row["example_index"]), *(tuple(row[k].tolist()) for k in ("input_ids", "position_ids",
                                                                             "word_starts"))) for row in rows)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_stream_resumes_exactly_from_its_state_files(tmp_path, tokenizer, workers):
    """Two processes (simulated: rank 0 and rank 1) x `workers` DataLoader workers, word starts on; the state
    written after 1, 6 and 13 micro-batches (the last past an epoch boundary) and read back gives the batches of a
    run that never stopped; noise keys are unique over all readers."""
    for n in range(8):
        write_jsonl(tmp_path / f"part{n}.jsonl", range(n * 20, n * 20 + 20))
    source = TextSource("s", files=sorted(str(p) for p in tmp_path.glob("*.jsonl")), format="jsonl")
    plan = plan_stream([source], 2, workers, 16, 4, seed=1, shuffle_buffer=8, validation_fractions=[0.1])
    keys = []
    for rank in (0, 1):
        uninterrupted = StreamLoader(BlockStream(plan, tokenizer, rank, True), num_workers=workers)
        expected = [batch_key(next(uninterrupted)) for _ in range(20)]
        keys += [row[0] for batch in expected for row in batch]  # example_index
        for stop in (1, 6, 13):
            first = StreamLoader(BlockStream(plan, tokenizer, rank, True), num_workers=workers)
            batches = [batch_key(next(first)) for _ in range(stop)]
            write_state(tmp_path / "state", rank, *first.state())
            if stop == 13:
                assert max(reader["sources"][0]["epoch"] for reader in first.metas()) >= 1
            resumed = StreamLoader(BlockStream(plan, tokenizer, rank, True), num_workers=workers,
                                   state=read_state(tmp_path / "state", rank))
            batches += [batch_key(next(resumed)) for _ in range(20 - stop)]
            assert batches == expected, (rank, stop)
    assert len(keys) == len(set(keys)) == 2 * 20 * 4


def test_a_state_of_another_layout_or_of_edited_files_is_refused(tmp_path, tokenizer):
    for n in range(4):
        write_jsonl(tmp_path / f"part{n}.jsonl", range(n * 20, n * 20 + 20))
    source = TextSource("s", files=sorted(str(p) for p in tmp_path.glob("*.jsonl")), format="jsonl")
    saved_plan = plan_stream([source], 2, 0, 16, 4, 0, 8)
    loader = StreamLoader(BlockStream(saved_plan, tokenizer, 0, False))
    next(loader)
    state = loader.state()
    with pytest.raises(StreamLayoutChanged) as refused:
        StreamLoader(BlockStream(plan_stream([source], 1, 2, 16, 4, 0, 8), tokenizer, 0, False), state=state)
    assert "readers: saved 2, now 2" not in str(refused.value)
    assert "processes: saved 2, now 1" in str(refused.value) and "readers_per_process: saved 1, now 2" in str(refused.value)
    edited = tmp_path / "part2.jsonl"
    with open(edited, "a") as handle:
        handle.write(json.dumps({"text": "one more"}) + "\n")
    os.utime(edited, ns=(0, 123))
    with pytest.raises(StreamLayoutChanged) as refused:
        StreamLoader(BlockStream(plan_stream([source], 2, 0, 16, 4, 0, 8), tokenizer, 0, False), state=state)
    assert f"files edited (size or modification time) [{str(edited)!r}]" in str(refused.value)


def test_a_mixture_keeps_every_source_within_a_point_of_its_weight_over_any_5000_blocks(tmp_path, tokenizer):
    """Two sources (files of "a" documents, "b" documents in memory) at 0.7 / 0.3, read by 2 processes x 2 workers
    (four readers, simulated in order): the blocks in training order (step, rank, row) are every source's at its
    weight within a point in every window of 5,000, told from the tokens themselves; each source's documents are
    counted in its own cleaning report."""
    for n in range(4):
        write_jsonl(tmp_path / f"a{n}.jsonl", range(n * 600, n * 600 + 600), prefix="a")
    files = TextSource("web", weight=7.0, files=sorted(str(p) for p in tmp_path.glob("a*.jsonl")), format="jsonl")
    books = TextSource("books", weight=3.0, texts=[numbered_document(n, "b") for n in range(2400)])
    plan = plan_stream([files, books], 2, 2, 16, 8, seed=0, shuffle_buffer=16)
    encoder = DocumentEncoder(tokenizer, "text", False)
    readers_ = [Reader(plan, reader, encoder) for reader in range(4)]
    a_token = tokenizer.convert_tokens_to_ids(document_word(0, "a"))
    b_token = tokenizer.convert_tokens_to_ids(document_word(0, "b"))
    is_a = []
    for consumed in range(400):  # micro-batch c of rank p comes from its local reader c % 2
        for rank in (0, 1):
            rows, _ = readers_[rank * 2 + consumed % 2].next_batch()
            for row in rows:
                words = row["input_ids"][row["input_ids"] >= 5]
                in_a = (words >= a_token) & (words < a_token + 3000)
                in_b = (words >= b_token) & (words < b_token + 3000)
                assert in_a.all() or in_b.all()  # a block holds one source's tokens
                assert row["source"] == (0 if in_a.all() else 1)
                is_a.append(bool(in_a.all()))
    shares = np.convolve(np.array(is_a, float), np.ones(5000) / 5000, mode="valid")
    assert len(is_a) == 6400 and abs(shares - 0.7).max() < 0.01
    # In training order the blocks fill consecutive global slots, each of the source the schedule names for it.
    assert [0 if a else 1 for a in is_a] == slot_sources(np.arange(6400), [7.0, 3.0]).tolist()
    metas = [reader.meta() for reader in readers_]
    assert all(meta["sources"][0]["cleaning"]["documents_in"] > 0 for meta in metas)
    assert all(meta["sources"][1]["cleaning"]["documents_in"] > 0 for meta in metas)


def test_trained_tokens_of_a_packed_stream_are_the_documents_once_per_epoch(tokenizer):
    """Per reader, the blocks of its first epoch hold its documents' tokens exactly (packing drops nothing between
    chunks and epochs): with epochs that end on a block boundary, the first blocks are exactly the corpus."""
    # 8 shards of 10 documents (70 words + 20 boundary tokens each): 360 tokens per reader and epoch, 2 readers.
    source = TextSource("s", texts=[numbered_document(n) for n in range(80)])
    plan = plan_stream([source], 1, 2, 30, 6, seed=2, shuffle_buffer=1)
    assert len(plan.shards[0]) == 8
    counts = Counter()
    for reader in (0, 1):
        _, blocks = reader_blocks(plan, tokenizer, reader, 4)  # 2 epochs of 12 blocks
        counts.update(document_counts(np.stack(blocks), tokenizer))
    assert counts == expected_counts(range(80), times=2)


# ----------------------------------------------------------------------------------------------- whole documents
def test_document_rows_are_prepare_documents_rows_and_their_state_round_trips(tmp_path, tokenizer):
    """rows="documents" (the denoising autoencoder): a reader's rows are prepare_documents' rows of the same
    documents (same ids, truncated alike with [CLS] ... [SEP] kept, word starts, empty documents dropped), each
    document once per epoch; a stream's state saved mid-way and read back gives the uninterrupted run's rows."""
    import datasets

    from hf_pretrain.data.documents import DocumentRows, prepare_documents
    from hf_pretrain.data.encoding import minimum_document_tokens

    texts = [numbered_document(n) for n in range(80)] + ["", "   "]  # 3-11 words: some longer than block_size - 2
    block_size = 8
    prepared, report = prepare_documents(datasets.Dataset.from_dict({"text": texts}), tokenizer, block_size,
                                         with_word_starts=True)
    expected = {tuple(row["input_ids"].tolist()): tuple(row["word_starts"].tolist()) for row in prepared}
    assert report.truncated_documents > 0 and report.empty_documents == 2

    # The emitter alone: the same rows as prepare_documents for the same encoded documents.
    encoder = DocumentEncoder(tokenizer, "text", True, max_length=block_size)
    encoded = encoder.encode(texts)
    lengths = np.array([len(ids) for ids in encoded["input_ids"]])
    emitter = DocumentRows(block_size, minimum_document_tokens(encoder))
    blocks = emitter.add(np.concatenate([np.asarray(i, np.int32) for i in encoded["input_ids"]]), lengths,
                         np.concatenate([np.asarray(f, np.int8) for f in encoded["word_starts"]]))
    cut = [(tuple(ids[positions >= 0].tolist()), tuple(starts[positions >= 0].tolist()))
           for ids, positions, starts in zip(blocks.input_ids, blocks.position_ids, blocks.word_starts)]
    assert cut == [(tuple(row["input_ids"].tolist()), tuple(row["word_starts"].tolist())) for row in prepared]
    assert emitter.report.documents == len(texts) and emitter.report.blocks == len(prepared) == 80
    assert emitter.report.empty_documents == 2 and len(emitter._ids) == 0  # nothing carried over

    # Through the stream: 2 readers x 4 shards of 10 documents; a reader's first 40 rows are its epoch 0, and the
    # two readers' are the corpus, each document once.
    source = TextSource("s", texts=texts[:80])
    in_order = plan_stream([source], 1, 2, block_size, 5, seed=4, shuffle_buffer=1, rows="documents")
    plan = plan_stream([source], 1, 2, block_size, 5, seed=4, shuffle_buffer=4, rows="documents")
    assert plan.layout(True)["rows"] == "documents"
    assert "rows" not in plan_stream([source], 1, 2, block_size, 5, 4, 4).layout(True)  # packed layouts as before
    epoch = Counter()
    for reader in (0, 1):
        stream = Reader(in_order, reader, DocumentEncoder(tokenizer, "text", True, max_length=block_size))
        for _ in range(8):  # 40 rows: this reader's 40 documents (4 shards of 10)
            rows, _ = stream.next_batch()
            for row in rows:
                assert set(row) == {"input_ids", "length", "example_index", "source", "word_starts"}
                assert row["length"] == len(row["input_ids"]) <= block_size
                key = tuple(row["input_ids"].tolist())
                assert expected[key] == tuple(row["word_starts"].tolist())
                epoch[key] += 1
    assert epoch == Counter(list(expected))
    assert stream.meta()["sources"][0]["packing"]["split_documents"] > 0  # the truncated ones are counted

    def key(rows):
        return tuple((int(r["example_index"]), tuple(r["input_ids"].tolist()), tuple(r["word_starts"].tolist()))
                     for r in rows)

    uninterrupted = StreamLoader(BlockStream(plan, tokenizer, 0, True), num_workers=2)
    expected_batches = [key(next(uninterrupted)) for _ in range(20)]  # past the readers' first epoch
    first = StreamLoader(BlockStream(plan, tokenizer, 0, True), num_workers=2)
    batches = [key(next(first)) for _ in range(7)]
    write_state(tmp_path / "state", 0, *first.state())
    resumed = StreamLoader(BlockStream(plan, tokenizer, 0, True), num_workers=2,
                           state=read_state(tmp_path / "state", 0))
    batches += [key(next(resumed)) for _ in range(13)]
    assert batches == expected_batches
    with pytest.raises(StreamLayoutChanged) as refused:  # a packed stream's state cannot resume whole documents
        StreamLoader(BlockStream(plan_stream([source], 1, 2, block_size, 5, 4, 4), tokenizer, 0, True),
                     state=read_state(tmp_path / "state", 0))
    assert "rows: saved 'documents', now absent" in str(refused.value)
