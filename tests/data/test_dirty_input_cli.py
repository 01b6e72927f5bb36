"""Dirty JSON Lines through the real CLI: the good rows train, and the cleaning report the run prints counts each
bad one (issue 15: nothing lost, nothing silently wrong)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

# The engine tests' tiny recipe and CLI runner, reused rather than copied.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from test_pretrain_cli import run_cli, step_losses, tiny_recipe  # noqa: E402, F401  (tiny_recipe: a fixture)

pytestmark = pytest.mark.slow


def test_a_dirty_jsonl_file_trains_and_the_report_counts_each_bad_row(tmp_path, tiny_recipe, corpus):
    good = [text for text in corpus["text"][:300] if text.strip() and "\x00" not in text and "\ufffd" not in text]
    lines = [json.dumps({"text": text}).encode() for text in good]
    lines.insert(10, b'{"text": "invalid utf-8 \xff\xfe here"}')
    lines.insert(20, b'{"text": "a raw nul \x00 byte"}')
    lines.insert(30, b'{"text": ""}')
    lines.append(b'{"text": "abc')  # the last line, cut off
    path = tmp_path / "dirty.jsonl"
    path.write_bytes(b"\n".join(lines))

    run_dir = tmp_path / "run"
    result = run_cli(tmp_path, "pretrain", str(tiny_recipe), f"output.dir={run_dir}", "data.source=files",
                     f"data.train_files=[{path}]", "data.max_documents=null", "train.max_steps=4")

    rows = len(good) + 4
    assert (f"train: {rows:,} documents in, {rows - 2:,} out: 1 empty, 0 missing and 1 malformed dropped; "
            "1 had NUL bytes (removed), 1 had invalid UTF-8 (replaced with U+FFFD)") in result.stderr
    assert f"(malformed: {path}:{len(lines)}: not valid JSON: Unterminated string" in result.stderr
    assert sorted(step_losses(run_dir)) == [1, 2, 3, 4]
    assert (run_dir / "final" / "model.safetensors").is_file()


def test_a_csv_row_with_extra_fields_is_counted_not_silently_skipped(tmp_path, tiny_recipe, corpus):
    """The issue's probe: one row with more fields than the header; before, the row vanished while the report said
    'N in, N out'."""
    import csv

    good = [" ".join(text.split()) for text in corpus["text"][:200] if text.strip()]
    path = tmp_path / "dirty.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        for index, text in enumerate(good):
            writer.writerow([index, text])
            if index == 50:
                writer.writerow([index, "one field too many", "extra"])
    run_dir = tmp_path / "run"
    result = run_cli(tmp_path, "pretrain", str(tiny_recipe), f"output.dir={run_dir}", "data.source=files",
                     f"data.train_files=[{path}]", "data.max_documents=null", "train.max_steps=2")
    rows = len(good) + 1
    assert f"train: {rows:,} documents in, {rows - 1:,} out: 0 empty, 0 missing and 1 malformed dropped" in result.stderr
    assert f"(malformed: {path}:53: expected 2 fields as in the header, found 3" in result.stderr
    assert sorted(step_losses(run_dir)) == [1, 2]
