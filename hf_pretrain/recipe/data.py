"""The `data` section: where a text objective's text comes from and how it becomes blocks."""

from __future__ import annotations

from dataclasses import dataclass

from .fields import RecipeError, choice, listing, ranged, setting

# The formats of local text files (data/sources.py reads each; `auto` tells them by their extensions).
TEXT_FORMATS = ("auto", "text", "paragraphs", "jsonl", "csv", "parquet")


@dataclass
class DataSection:
    """Where the text comes from and how it becomes blocks."""

    source: str = choice(
        "builtin", "builtin", "files", "hub",
        doc="builtin (docstrings of the Python standard library, offline), files (train_files) or hub (hub_dataset)")
    train_files: list = listing("source=files: paths or globs of the training text")
    validation_files: list = listing("source=files: held-out text for eval (empty: validation_fraction of train)")
    format: str = choice(
        "auto", *TEXT_FORMATS,
        doc="file format: text (a document per line), paragraphs (separated by blank lines), jsonl, csv, parquet "
            "(text_column), or auto (by extension)")
    text_column: str = setting("text", "the column or key holding the text (jsonl, csv, parquet, Hub datasets)")
    hub_dataset: str | None = setting(None, "source=hub: the Hub dataset id")
    hub_config: str | None = setting(None, "source=hub: the dataset's configuration name")
    hub_split: str = setting("train", "source=hub: the split to train on")
    validation_fraction: float = ranged(
        0.02, low=0.0, high=0.5, doc="share of the training documents held out for eval (by a hash of each text)")
    block_size: int = ranged(
        128, low=8, doc="tokens per packed block (the sequence length); documents longer than it are split")
    num_proc: int = ranged(1, low=1, doc="processes that tokenize and pack a corpus held in memory")
    streaming: bool = setting(False, "read the corpus as a stream instead of loading it (corpora larger than memory)")
    max_documents: int | None = ranged(None, low=1, doc="read at most this many training documents (null: all)")


def check_data_source(data) -> None:
    """The data section of a pretraining or a fine-tuning recipe names what its source needs."""
    if data.source == "files" and not data.train_files:
        raise RecipeError("data.source='files' needs data.train_files (a path or glob, or a list of them).")
    if data.source == "hub" and not data.hub_dataset:
        raise RecipeError("data.source='hub' needs data.hub_dataset (a Hub dataset id, e.g. 'nyu-mll/glue').")
