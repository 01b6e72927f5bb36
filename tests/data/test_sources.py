"""Text sources: formats, globs, dirty input (counted, never a crash), validation splits, streaming, the Hub."""

from __future__ import annotations

import gzip
import json
import time

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from hf_pretrain.data import cleaning, packing, sources, streaming

DOCS = ["First document about parsing.", "Second one, about tokens.", "Third: 日本語 and العربية too.", "Fourth."]


def write(path, content: bytes | str):
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def test_text_lines_and_paragraphs(tmp_path):
    write(tmp_path / "lines.txt", "\n".join(DOCS) + "\n")
    assert list(sources.load_text_sources(str(tmp_path / "lines.txt")).train["text"]) == DOCS
    write(tmp_path / "paras.txt", "First paragraph,\nstill first.\n\nSecond paragraph.\n\n\n\nThird.\n")
    paragraphs = sources.load_text_sources(str(tmp_path / "paras.txt"), format="paragraphs").train["text"]
    assert [p.strip() for p in paragraphs] == ["First paragraph,\nstill first.", "Second paragraph.", "Third."]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_structured_formats_with_a_named_text_column(fmt, tmp_path):
    table = pa.table({"id": list(range(len(DOCS))), "body": DOCS})
    path = tmp_path / f"data.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in table.to_pylist()))
    elif fmt == "csv":
        pa_csv.write_csv(table, path)
    else:
        pq.write_table(table, path)
    loaded = sources.load_text_sources(str(path), text_column="body")
    assert list(loaded.train["text"]) == DOCS and loaded.train.column_names == ["text"]
    with pytest.raises(ValueError, match="text_column='text'.*available columns.*body"):
        sources.load_text_sources(str(path))


def test_globs_and_several_files_in_sorted_order(tmp_path):
    for index in range(3):
        write(tmp_path / f"part-{index}.txt", f"document from part {index}\n")
    write(tmp_path / "extra.txt", "extra document\n")
    loaded = sources.load_text_sources([str(tmp_path / "part-*.txt"), str(tmp_path / "extra.txt")])
    assert list(loaded.train["text"]) == [f"document from part {i}" for i in range(3)] + ["extra document"]
    with pytest.raises(ValueError, match="matches no file"):
        sources.load_text_sources(str(tmp_path / "nothing-*.txt"))


def test_format_errors_name_the_problem(tmp_path):
    write(tmp_path / "a.txt", "x\n")
    write(tmp_path / "b.csv", "text\ny\n")
    write(tmp_path / "c.docx", "z")
    with pytest.raises(ValueError, match="mix formats"):
        sources.load_text_sources([str(tmp_path / "a.txt"), str(tmp_path / "b.csv")])
    with pytest.raises(ValueError, match=r"extension '\.docx'"):
        sources.load_text_sources(str(tmp_path / "c.docx"))
    with pytest.raises(ValueError, match="format='xml'.*allowed"):
        sources.load_text_sources(str(tmp_path / "a.txt"), format="xml")
    with pytest.raises(ValueError, match="exactly one text source"):
        sources.load_text_sources()
    with pytest.raises(ValueError, match="validation_fraction=1.5"):
        sources.load_text_sources(str(tmp_path / "a.txt"), validation_fraction=1.5)


def dirty_file(tmp_path):
    long_line = ("word " * (2 * 1024 * 1024)).encode()  # a single 10 MB line
    content = b"".join([
        b"a clean line\n",
        b"\n",
        b"   \t  \n",
        b"invalid utf-8 \xff\xfe\xc3 here\n",
        b"nul\x00inside\n",
        b"\x00\x00\x00\n",
        long_line + b"\n",
        "Привет, мир. 你好，世界。 שלום עולם\n".encode(),
        b"last line without newline",
    ])
    return write(tmp_path / "dirty.txt", content)


EXPECTED_DIRTY = dict(documents_in=9, missing_dropped=0, empty_dropped=3, with_nul_bytes=2, with_invalid_utf8=1,
                      long_documents_split=1)


@pytest.mark.parametrize("streaming", [False, True], ids=["map", "streaming"])
def test_dirty_input_is_cleaned_counted_and_packs(streaming, tmp_path, wordpiece):
    path = dirty_file(tmp_path)
    loaded = sources.load_text_sources(str(path), streaming=streaming, max_document_chars=1_000_000)
    texts = [row["text"] for row in loaded.train]
    report = loaded.reports["train"]
    for name, value in EXPECTED_DIRTY.items():
        assert getattr(report, name) == value, (name, report)
    assert report.pieces_from_splits == 11  # 10 MB of "word " in pieces of at most 1,000,000 characters
    assert report.documents_out == len(texts) == 5 + 11
    assert all(text.strip() and "\x00" not in text for text in texts)
    assert max(len(text) for text in texts) <= 1_000_000
    assert "invalid utf-8 \ufffd\ufffd\ufffd here" in texts and "nulinside" in texts
    assert any("你好" in text for text in texts)
    assert "3 empty" in loaded.summary()
    if not streaming:  # the cleaned text, 10 MB line included, goes through tokenize + pack without trouble
        packed, report = packing.pack_dataset(loaded.train, wordpiece, 256, cache_dir=tmp_path / "cache")
        assert report.documents == len(texts) and len(packed) > 1000


def test_missing_and_non_string_values_in_structured_data(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"text": "fine"}\n{"text": null}\n{"text": "  "}\n{"text": "caf\xc3\xa9 ok"}\n')
    loaded = sources.load_text_sources(str(path))
    assert list(loaded.train["text"]) == ["fine", "café ok"]
    assert loaded.reports["train"].missing_dropped == 1 and loaded.reports["train"].empty_dropped == 1
    assert cleaning.clean_text(42, 100) == ["42"] and cleaning.clean_text(None, 100) == []


def test_validation_fraction_is_deterministic_by_seed_and_disjoint(tmp_path):
    write(tmp_path / "many.txt", "\n".join(f"document number {i} with some words" for i in range(2000)))
    first = sources.load_text_sources(str(tmp_path / "many.txt"), validation_fraction=0.1, seed=1)
    again = sources.load_text_sources(str(tmp_path / "many.txt"), validation_fraction=0.1, seed=1)
    other = sources.load_text_sources(str(tmp_path / "many.txt"), validation_fraction=0.1, seed=2)
    train, validation = set(first.train["text"]), set(first.validation["text"])
    assert not train & validation and len(train) + len(validation) == 2000
    assert abs(len(validation) - 200) < 45
    assert list(again.validation["text"]) == list(first.validation["text"])
    assert set(other.validation["text"]) != validation
    streamed = sources.load_text_sources(str(tmp_path / "many.txt"), validation_fraction=0.1, seed=1, streaming=True)
    assert isinstance(streamed.train, datasets.IterableDataset)
    assert [row["text"] for row in streamed.validation] == list(first.validation["text"])


def test_validation_files(tmp_path):
    write(tmp_path / "train.txt", "train one\ntrain two\n")
    write(tmp_path / "valid.txt", "valid one\n\n")
    loaded = sources.load_text_sources(str(tmp_path / "train.txt"), validation_files=[str(tmp_path / "valid.txt")])
    assert list(loaded.validation["text"]) == ["valid one"]
    assert loaded.reports["validation"].empty_dropped == 1
    with pytest.raises(ValueError, match="choose one"):
        sources.load_text_sources(str(tmp_path / "train.txt"), validation_files=[str(tmp_path / "valid.txt")],
                                  validation_fraction=0.1)


def test_builtin_source_and_max_documents():
    loaded = sources.load_text_sources(builtin=True, max_documents=50, validation_fraction=0.2)
    assert len(loaded.train) + len(loaded.validation) == 50


def test_hub_dataset_fails_fast_and_clearly_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(ValueError, match="hub_dataset='someone/some-corpus'.*HF_HUB_OFFLINE=1"):
        sources.load_text_sources(hub_dataset="someone/some-corpus", hub_config="en", hub_split="train")
    assert time.perf_counter() - started < 10


def test_streaming_reads_lazily(tmp_path, wordpiece):
    write(tmp_path / "big.txt", "\n".join(f"line {i} of a larger corpus" for i in range(5000)))
    loaded = sources.load_text_sources(str(tmp_path / "big.txt"), streaming=True)
    assert isinstance(loaded.train, datasets.IterableDataset)
    stream = streaming.pack_stream(loaded.train, wordpiece, 32)
    first = next(iter(stream))
    assert first["input_ids"].shape == (32,) and first["position_ids"][0] == 0
    assert loaded.reports["train"].documents_in < 5000, "only what was needed has been read"
    assert np.all(first["input_ids"] >= 0)


# ----------------------------------------------------------------------------------------------- dirt in every format
# Each format gets the same kinds of dirt; the tests pin the surviving texts and every counter of the report, in
# memory-mapped and streaming mode, so that nothing is lost or changed without being counted.
MODES = pytest.mark.parametrize("streaming", [False, True], ids=["map", "streaming"])


def texts_and_report(path, streaming, **options):
    loaded = sources.load_text_sources(str(path), streaming=streaming, **options)
    texts = [row["text"] for row in loaded.train]  # a stream's report fills in as it is read
    return texts, loaded.reports["train"], loaded.summary()


COUNTERS = ("documents_in", "documents_out", "empty_dropped", "missing_dropped", "malformed_dropped", "with_nul_bytes",
            "with_invalid_utf8", "long_documents_split", "pieces_from_splits")


def assert_counts(report, **expected):
    """Every counter of the report; those not named must be 0."""
    counted = {name: getattr(report, name) for name in COUNTERS}
    assert counted == {name: expected.get(name, 0) for name in COUNTERS}, report


DIRTY_JSONL_LINES = [
    b'{"id": 1, "text": "good one"}',
    b'{"text": "bad \xff\xfe utf8"}',  # invalid UTF-8 inside the string
    b'{"text": "raw nul \x00 byte"}',  # a raw NUL byte (not valid JSON strictly, read all the same)
    b'{"text": "escaped nul \\u0000 too"}',
    b'{"text": ""}',
    b'{"text": null}',
    b'{"id": 7}',  # no text key: missing
    b"[1, 2]",  # valid JSON, not an object: malformed
    b"",  # a blank line holds no row
    b'{"text": 42}',
    b'{"text": "lone \\ud800 surrogate"}',  # a JSON escape no UTF-8 writer accepts
    b'{"text": "good two"}',
    b'{"text": "abc',  # truncated last line
]


@MODES
def test_dirty_jsonl_trains_on_the_good_rows_and_counts_each_bad_one(streaming, tmp_path):
    path = write(tmp_path / "dirty.jsonl", b"\n".join(DIRTY_JSONL_LINES))
    texts, report, summary = texts_and_report(path, streaming)
    assert texts == ["good one", "bad \ufffd\ufffd utf8", "raw nul  byte", "escaped nul  too", "42",
                     "lone \ufffd\ufffd\ufffd surrogate", "good two"]
    assert_counts(report, documents_in=12, documents_out=7, empty_dropped=1, missing_dropped=2, malformed_dropped=2,
                  with_nul_bytes=2, with_invalid_utf8=2)
    assert report.malformed_examples[0] == f"{path}:8: not a JSON object (a JSON array)"
    assert report.malformed_examples[1].startswith(f"{path}:13: not valid JSON: Unterminated string")
    assert len(report.malformed_examples) == 2
    assert ("12 documents in, 7 out: 1 empty, 2 missing and 2 malformed dropped; 2 had NUL bytes (removed), "
            "2 had invalid UTF-8") in summary
    assert f"(malformed: {path}:8: not a JSON object (a JSON array), {path}:13: not valid JSON" in summary


DIRTY_CSV = (
    b"id,text\n"
    b"1,good one\n"
    b"2,extra,field,here\n"  # which field is extra cannot be told: malformed
    b'3,"nul \x00 inside"\n'
    b"4,bad \xff utf8\n"
    b"5,\n"  # an empty cell: missing
    b'6,"   "\n'
    b"\n"
    b'7,"multi\nline ""quoted"""\n'
    b"8\n"  # too few fields: malformed
    b"9,good two\n"
    b'10,"never closed\n'  # a file cut off inside a quoted field
)


@MODES
def test_dirty_csv_counts_malformed_rows_instead_of_skipping_them_silently(streaming, tmp_path):
    path = write(tmp_path / "dirty.csv", DIRTY_CSV)
    texts, report, summary = texts_and_report(path, streaming)
    assert texts == ["good one", "nul  inside", "bad \ufffd utf8", 'multi\nline "quoted"', "good two"]
    assert_counts(report, documents_in=10, documents_out=5, empty_dropped=1, missing_dropped=1, malformed_dropped=3,
                  with_nul_bytes=1, with_invalid_utf8=1)
    assert report.malformed_examples == [
        f"{path}:3: expected 2 fields as in the header, found 4",
        f"{path}:11: expected 2 fields as in the header, found 1",
        f"{path}:13: a quoted field is not closed before the end of the file",
    ]
    assert "10 documents in, 5 out: 1 empty, 1 missing and 3 malformed dropped" in summary


def test_more_malformed_rows_than_the_report_names(tmp_path):
    path = write(tmp_path / "many.jsonl", "".join(f'{{"text": "row {i}"\n' for i in range(5)) + '{"text": "ok"}\n')
    texts, report, summary = texts_and_report(path, False)
    assert texts == ["ok"] and report.malformed_dropped == 5
    assert [example.split(": ")[0] for example in report.malformed_examples] == [f"{path}:{i}" for i in (1, 2, 3)]
    assert summary.endswith(", ...)")


@MODES
@pytest.mark.parametrize("column_type", ["string", "binary"])
def test_dirty_parquet_values_are_cleaned_and_counted(column_type, streaming, tmp_path):
    raw = [b"good", None, b"", b"  \t", b"nul\x00inside", b"bad \xff x", b"good two"]
    column = pa.array(raw, pa.binary())
    if column_type == "string":  # invalid UTF-8 in a string column, as writers other than Arrow can leave it
        column = pa.Array.from_buffers(pa.string(), len(column), column.buffers())
    path = tmp_path / "dirty.parquet"
    pq.write_table(pa.table({"text": column}), path)
    texts, report, summary = texts_and_report(path, streaming)
    assert texts == ["good", "nulinside", "bad \ufffd x", "good two"]
    assert_counts(report, documents_in=7, documents_out=4, empty_dropped=2, missing_dropped=1, malformed_dropped=0,
                  with_nul_bytes=1, with_invalid_utf8=1)
    assert "7 documents in, 4 out: 2 empty, 1 missing and 0 malformed dropped" in summary


@MODES
def test_dirty_paragraphs_are_cleaned_and_counted(streaming, tmp_path):
    path = write(tmp_path / "dirty.txt",
                 b"first para,\nstill first.\n\n\x00\x00\n\nbad \xff\xfe para\n\n \t \n\nnul\x00para\n\n\n\nlast")
    texts, report, summary = texts_and_report(path, streaming, format="paragraphs")
    assert texts == ["first para,\nstill first.", "bad \ufffd\ufffd para", "nulpara", "last"]
    assert_counts(report, documents_in=6, documents_out=4, empty_dropped=2, missing_dropped=0, malformed_dropped=0,
                  with_nul_bytes=2, with_invalid_utf8=1)


@MODES
def test_a_compressed_file_cut_short_keeps_what_was_read_and_says_so(streaming, tmp_path):
    rows = b'{"text": "one"}\n{"text": "two"}\n{"text": "three"}\n'
    path = write(tmp_path / "cut.jsonl.gz", gzip.compress(rows)[:-8])  # the gzip trailer is missing
    texts, report, _ = texts_and_report(path, streaming)
    assert texts == ["one", "two", "three"]
    assert_counts(report, documents_in=4, documents_out=3, malformed_dropped=1)
    assert len(report.malformed_examples) == 1
    assert report.malformed_examples[0].startswith(f"{path}:4: the rest of the file could not be read (EOFError: ")


@MODES
def test_a_json_array_file_and_numbers_in_a_csv_text_column(streaming, tmp_path):
    array = write(tmp_path / "rows.json", '[\n  {"text": "one"},\n  {"text": "two"},\n  "three"\n]\n')
    texts, report, _ = texts_and_report(array, streaming)
    assert texts == ["one", "two"]
    assert_counts(report, documents_in=3, documents_out=2, malformed_dropped=1)
    assert report.malformed_examples == [f"{array}: item 2: not a JSON object (a JSON string)"]
    numbers = write(tmp_path / "numbers.csv", "text\n007\n1.50\n")  # kept as written, not parsed as numbers
    assert texts_and_report(numbers, streaming)[0] == ["007", "1.50"]


@MODES
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_missing_text_column_is_refused_before_any_work(fmt, streaming, tmp_path):
    content = '{"body": "x"}\n{"body": "y", "id": 2}\n' if fmt == "jsonl" else "id,body\n1,x\n"
    path = write(tmp_path / f"data.{fmt}", content)
    keys = "'body', 'id'" if fmt == "jsonl" else "'id', 'body'"
    expected = rf"text_column='text' is not a column of the data; available columns: \[{keys}\]"
    with pytest.raises(ValueError, match=expected):
        sources.load_text_sources(str(path), streaming=streaming)  # raises here, before a stream is read


@MODES
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_files_without_rows_give_an_empty_counted_split(fmt, streaming, tmp_path):
    path = write(tmp_path / f"empty.{fmt}", "" if fmt == "jsonl" else "text\n")
    texts, report, _ = texts_and_report(path, streaming)
    assert texts == [] and report.documents_in == report.documents_out == 0


def test_a_tolerant_read_is_cached_and_read_again_when_the_file_changes(tmp_path):
    path = write(tmp_path / "edited.jsonl", '{"text": "before"}\n')
    assert list(sources.load_text_sources(str(path)).train["text"]) == ["before"]
    write(path, '{"text": "after, and longer"}\n')
    assert list(sources.load_text_sources(str(path)).train["text"]) == ["after, and longer"]
