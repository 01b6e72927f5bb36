"""A recipe's sources: resolved for the stream readers (`recipe_text_sources`) and loaded per source with their own
cleaning reports and validation text (`load_text_splits`); a one-source recipe keeps its one source."""

from __future__ import annotations

import json
import logging

import pytest

from hf_pretrain.data.builtin import load_builtin_corpus
from hf_pretrain.data.pipeline import load_text_splits
from hf_pretrain.data.sources import recipe_text_sources
from hf_pretrain.recipe import recipe_from_dict


def recipe(data: dict):
    return recipe_from_dict({"train": {"max_steps": 1}, "data": data})


@pytest.fixture
def corpus_files(tmp_path):
    """A JSON Lines source with one malformed row and one empty text, a text source with a NUL byte and blank
    lines, and a Hub-style dataset folder with its own validation split."""
    rows = [json.dumps({"text": f"news item {i} about the harbour"}) for i in range(60)]
    rows[5], rows[9] = "{not json", json.dumps({"text": "   "})
    (tmp_path / "news.jsonl").write_text("\n".join(rows) + "\n")
    lines = [f"line {i} of the manual" for i in range(40)]
    lines[3] = "a NUL\x00 inside"
    (tmp_path / "manual.txt").write_text("\n".join(lines) + "\n\n\n")
    repo = tmp_path / "repo" / "data"
    repo.mkdir(parents=True)
    for split, count in (("train", 30), ("validation", 4)):
        (repo / f"{split}-00000-of-00001.jsonl").write_text(
            "\n".join(json.dumps({"body": f"{split} page {i}"}) for i in range(count)) + "\n")
    return tmp_path


def mixture(files) -> dict:
    return {"validation_fraction": 0.1, "sources": [
        {"name": "news", "weight": 2, "train_files": str(files / "news.jsonl")},
        {"name": "manual", "weight": 1, "source": "files", "train_files": str(files / "man*.txt"), "format": "text"},
        {"name": "docs", "weight": 1, "source": "builtin", "max_documents": 50},
        {"name": "wiki", "weight": 4, "hub_dataset": str(files / "repo"), "text_column": "body"},
    ]}


def test_recipe_text_sources_resolve_every_kind(corpus_files):
    resolved = recipe_text_sources(recipe(mixture(corpus_files)))
    assert [(s.name, s.weight, s.format) for s in resolved] == [
        ("news", 0.25, "jsonl"), ("manual", 0.125, "text"), ("docs", 0.125, "text"), ("wiki", 0.5, "jsonl")]
    news, manual, docs, wiki = resolved
    assert news.files == [str(corpus_files / "news.jsonl")] and news.texts is None
    assert manual.files == [str(corpus_files / "manual.txt")]
    assert docs.files == [] and docs.texts == list(load_builtin_corpus()["text"][:50])
    assert wiki.files == [str(corpus_files / "repo" / "data" / "train-00000-of-00001.jsonl")]
    assert (wiki.text_column, wiki.revision) == ("body", None)  # a local folder has no commit


def test_a_one_source_recipe_gives_one_source_named_after_its_kind(corpus_files):
    (only,) = recipe_text_sources(recipe({"source": "files", "train_files": str(corpus_files / "*.jsonl")}))
    assert (only.name, only.weight, only.format, only.files) == ("files", 1.0, "jsonl",
                                                                 [str(corpus_files / "news.jsonl")])
    (only,) = recipe_text_sources(recipe({"max_documents": 7}))
    assert (only.name, len(only.texts)) == ("builtin", 7)


def test_a_missing_file_names_its_source(corpus_files):
    data = mixture(corpus_files)
    data["sources"][1]["train_files"] = str(corpus_files / "nothing-*.txt")
    with pytest.raises(ValueError, match=r"data.sources\[1\] \('manual'\): file pattern .*nothing-\*.txt"):
        recipe_text_sources(recipe(data))
    with pytest.raises(ValueError, match=r"data.sources\[1\] \('manual'\): file pattern"):
        load_text_splits(recipe(data))


def test_each_source_is_cleaned_counted_and_held_out_on_its_own(corpus_files, caplog):
    with caplog.at_level(logging.INFO, logger="hf_pretrain"):
        splits = load_text_splits(recipe(mixture(corpus_files)))
    assert splits.is_mixture and splits.weights == {"news": 0.25, "manual": 0.125, "docs": 0.125, "wiki": 0.5}
    news, manual, docs = (splits.reports_by_source[name]["train"] for name in ("news", "manual", "docs"))
    assert (news.documents_in, news.malformed_dropped, news.empty_dropped, news.with_nul_bytes) == (60, 1, 1, 0)
    # The text reader reads the two blank lines at the end as two empty documents: counted, dropped.
    assert (manual.documents_in, manual.with_nul_bytes, manual.empty_dropped, manual.malformed_dropped) == (42, 1, 2, 0)
    assert docs.documents_in == 50
    wiki = splits.reports_by_source["wiki"]
    assert (wiki["train"].documents_in, wiki["validation"].documents_in) == (30, 4)  # its own validation split
    assert sorted(splits.validation_by_source["wiki"]["text"]) == [f"validation page {i}" for i in range(4)]
    for name in ("news", "manual", "docs"):  # validation_fraction of each source's own documents
        held_out = set(splits.validation_by_source[name]["text"])
        assert held_out and not held_out & set(splits.train_by_source[name]["text"])
    # Every document of every source once, in the mixed views the tokenizer reads.
    assert len(splits.train) == sum(len(part) for part in splits.train_by_source.values())
    assert sorted(splits.validation["text"]) == sorted(
        text for part in splits.validation_by_source.values() for text in part["text"])
    assert splits.train_report.total().documents_in == 60 + 42 + 50 + 30
    assert "news: 60 documents in" in splits.train_report.summary()
    logged = [record.getMessage() for record in caplog.records if record.name == "hf_pretrain.data.pipeline"]
    assert [line.split(":")[0] for line in logged] == [f"text of source {name}" for name in splits.weights]


def test_a_one_source_recipe_keeps_its_splits(corpus_files):
    splits = load_text_splits(recipe({"source": "files", "train_files": str(corpus_files / "news.jsonl")}))
    assert not splits.is_mixture and splits.weights == {"files": 1.0}
    assert splits.train is splits.train_by_source["files"] and splits.validation is splits.validation_by_source["files"]
    assert splits.train_report is splits.reports_by_source["files"]["train"]
    assert splits.train_report.malformed_dropped == 1
