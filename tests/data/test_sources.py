"""Text sources: formats, globs, dirty input (counted, never a crash), validation splits, streaming, the Hub."""

from __future__ import annotations

import json
import time

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from hf_pretrain.data import packing, sources

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
    assert sources.clean_text(42, 100) == ["42"] and sources.clean_text(None, 100) == []


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
    stream = packing.pack_stream(loaded.train, wordpiece, 32)
    first = next(iter(stream))
    assert first["input_ids"].shape == (32,) and first["position_ids"][0] == 0
    assert loaded.reports["train"].documents_in < 5000, "only what was needed has been read"
    assert np.all(first["input_ids"] >= 0)
