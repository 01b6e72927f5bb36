"""Where the text comes from: local files, a Hugging Face dataset, or the built-in corpus — cleaned and split.

`datasets` reads text and Parquet files (its builders, with their own cache); JSON Lines and CSV go through the
tolerant readers (data/readers.py, cached the same way, through `Dataset.from_generator`). This module picks the
reader, expands globs, has the documents cleaned and counted (data/cleaning.py), and carves out a validation
split.

Public API
----------
`load_text_sources(train_files=(), validation_files=(), format="auto", text_column="text", hub_dataset=None,
                   hub_config=None, hub_split="train", builtin=False, validation_fraction=0.0, seed=0,
                   streaming=False, max_documents=None, max_document_chars=1_000_000, num_proc=1) -> TextSources`
    Exactly one of train_files / hub_dataset / builtin. Returns `TextSources(train, validation, reports)`:
    datasets (or IterableDatasets when streaming) with a single "text" column, validation None when neither
    validation_files nor validation_fraction is given, and one CleaningReport per split. A validation fraction
    is held out by a hash of (seed, text): deterministic, order independent, and identical texts always land in
    the same split (no duplicate leaks from train into validation). For streaming datasets the reports fill
    in as the data is iterated.
`resolve_files(patterns) -> list[str]`: globs expanded, sorted, de-duplicated; a pattern that matches nothing
    is an error.
`infer_format(files) -> str`
"""

from __future__ import annotations

import glob
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import datasets

from ..offline import hub_offline
from ..recipe.data import TEXT_FORMATS
from .cleaning import CLEAN_BATCH_SIZE, CleaningReport, clean_dataset
from .readers import TOLERANT_FORMATS, read_tolerant

EXTENSION_FORMATS = {
    ".txt": "text",
    ".text": "text",
    ".md": "text",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
}
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".lz4")
# The `datasets` builder of each format. Text sources read jsonl and csv with the tolerant readers instead
# (they count and drop malformed rows); fine-tuning's labeled files, which need every column, use the builders.
DATASETS_BUILDER = {"text": "text", "paragraphs": "text", "jsonl": "json", "csv": "csv", "parquet": "parquet"}


# --------------------------------------------------------------------------------------------------- files
def resolve_files(patterns) -> list[str]:
    """Expand globs (recursive ** allowed); sorted per pattern, de-duplicated, order of patterns kept."""
    if isinstance(patterns, (str, os.PathLike)):
        patterns = [patterns]
    files: list[str] = []
    for pattern in patterns:
        pattern = os.path.expanduser(str(pattern))
        matches = sorted(path for path in glob.glob(pattern, recursive=True) if os.path.isfile(path))
        if not matches:
            raise ValueError(f"file pattern {pattern!r} matches no file (working directory: {os.getcwd()}).")
        files.extend(os.path.abspath(path) for path in matches)
    return list(dict.fromkeys(files))


def infer_format(files: list[str], extension_formats: dict[str, str] | None = None) -> str:
    """The one format of `files`, from their extensions (compression suffixes ignored); `extension_formats`
    maps extensions to format names (default: the text formats)."""
    extension_formats = extension_formats or EXTENSION_FORMATS
    formats = {}
    for path in files:
        name = path.lower()
        for suffix in COMPRESSION_SUFFIXES:
            name = name.removesuffix(suffix)
        extension = Path(name).suffix
        if extension not in extension_formats:
            names = ", ".join(dict.fromkeys(extension_formats.values()))
            raise ValueError(
                f"format='auto' cannot tell the format of {path!r} (extension {extension!r}); name one of "
                f"{names} or use one of the extensions {', '.join(extension_formats)}."
            )
        formats.setdefault(extension_formats[extension], path)
    if len(formats) > 1:
        shown = ", ".join(f"{fmt} ({path})" for fmt, path in formats.items())
        raise ValueError(f"the files mix formats: {shown}; load each format separately or convert them.")
    return next(iter(formats))


def load_files(files: list[str], fmt: str, text_column: str, streaming: bool):
    if fmt in TOLERANT_FORMATS:
        return read_tolerant(files, fmt, text_column, streaming)
    options: dict = {}
    if fmt in ("text", "paragraphs"):
        options = {"encoding_errors": "replace", "sample_by": "paragraph" if fmt == "paragraphs" else "line"}
    try:
        return datasets.load_dataset(DATASETS_BUILDER[fmt], data_files={"data": files}, split="data",
                                     streaming=streaming, **options)
    except Exception as error:  # the datasets builders raise many types; say which files and format failed
        raise ValueError(f"could not read {len(files)} file(s) as format={fmt!r} (first: {files[0]!r}): {error}") from error


# --------------------------------------------------------------------------------------------------- hub
def load_hub_dataset(name: str, config: str | None, split: str, streaming: bool):
    try:
        return datasets.load_dataset(name, config, split=split, streaming=streaming)
    except Exception as error:
        hint = (
            "HF_HUB_OFFLINE=1 is set and the dataset is not in the local cache; unset it with network access, or "
            "download the data and pass it as train_files"
            if hub_offline()
            else "check the name, config and split, and that the Hugging Face Hub can be reached"
        )
        raise ValueError(
            f"hub_dataset={name!r} (config={config!r}, split={split!r}) could not be loaded: {hint}. Cause: "
            f"{type(error).__name__}: {error}"
        ) from error


# --------------------------------------------------------------------------------------------------- splits
def in_validation(text: str, seed: int, fraction: float) -> bool:
    digest = hashlib.blake2b(f"{seed}\x00{text}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") < fraction * 2**64


class ValidationMembership:
    """Batched filter predicate; picklable for num_proc."""

    def __init__(self, seed: int, fraction: float, keep_validation: bool):
        self.seed, self.fraction, self.keep_validation = seed, fraction, keep_validation

    def __call__(self, batch: dict[str, list]) -> list[bool]:
        return [in_validation(text, self.seed, self.fraction) == self.keep_validation for text in batch["text"]]


def split_off_validation(dataset, fraction: float, seed: int, num_proc: int):
    def part(keep_validation: bool):
        predicate = ValidationMembership(seed, fraction, keep_validation)
        if isinstance(dataset, datasets.IterableDataset):
            return dataset.filter(predicate, batched=True, batch_size=CLEAN_BATCH_SIZE)
        settings = f"{dataset._fingerprint}-{seed}-{fraction}-{keep_validation}"
        return dataset.filter(
            predicate,
            batched=True,
            batch_size=CLEAN_BATCH_SIZE,
            num_proc=num_proc if num_proc > 1 and len(dataset) >= num_proc else None,
            new_fingerprint=hashlib.sha256(settings.encode()).hexdigest()[:16],
            desc="Holding out validation",
        )

    return part(False), part(True)


# --------------------------------------------------------------------------------------------------- entry
@dataclass
class TextSources:
    train: datasets.Dataset | datasets.IterableDataset
    validation: datasets.Dataset | datasets.IterableDataset | None
    reports: dict[str, CleaningReport] = field(default_factory=dict)

    def summary(self) -> str:
        return "; ".join(f"{split}: {report.summary()}" for split, report in self.reports.items())


def take_first(dataset, max_documents: int | None):
    if max_documents is None:
        return dataset
    if isinstance(dataset, datasets.IterableDataset):
        return dataset.take(max_documents)
    return dataset.select(range(min(max_documents, len(dataset))))


def load_raw(files, fmt, text_column, hub_dataset, hub_config, hub_split, builtin, streaming):
    """The raw dataset of one split before cleaning, the column holding its text, and whether its rows come from
    a tolerant reader."""
    if builtin:
        from .builtin import load_builtin_corpus

        corpus = load_builtin_corpus().select_columns(["text"])
        return (corpus.to_iterable_dataset() if streaming else corpus), "text", False
    if hub_dataset:
        return load_hub_dataset(hub_dataset, hub_config, hub_split, streaming), text_column, False
    resolved = resolve_files(files)
    chosen = infer_format(resolved) if fmt == "auto" else fmt
    column = text_column if chosen == "parquet" else "text"  # the text builder and the tolerant readers say "text"
    return load_files(resolved, chosen, text_column, streaming), column, chosen in TOLERANT_FORMATS


def load_text_sources(
    train_files=(),
    validation_files=(),
    format: str = "auto",
    text_column: str = "text",
    hub_dataset: str | None = None,
    hub_config: str | None = None,
    hub_split: str = "train",
    builtin: bool = False,
    validation_fraction: float = 0.0,
    seed: int = 0,
    streaming: bool = False,
    max_documents: int | None = None,
    max_document_chars: int = 1_000_000,
    num_proc: int = 1,
) -> TextSources:
    """Load, clean and split the training text (see the module docstring)."""
    if format not in TEXT_FORMATS:
        raise ValueError(f"format={format!r} is not supported; allowed: {', '.join(TEXT_FORMATS)}.")
    chosen_sources = [name for name, given in (("train_files", bool(train_files)), ("hub_dataset", bool(hub_dataset)),
                                                ("builtin", builtin)) if given]
    if len(chosen_sources) != 1:
        raise ValueError(
            f"give exactly one text source: train_files, hub_dataset or builtin=True (got: {chosen_sources or 'none'})."
        )
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction={validation_fraction!r}; allowed: a number in [0, 1).")
    if validation_files and validation_fraction:
        raise ValueError(
            f"validation_files and validation_fraction={validation_fraction} are both given; choose one."
        )
    if max_documents is not None and (not isinstance(max_documents, int) or max_documents < 1):
        raise ValueError(f"max_documents={max_documents!r}; allowed: None or an integer >= 1.")
    if not isinstance(max_document_chars, int) or max_document_chars < 100:
        raise ValueError(f"max_document_chars={max_document_chars!r}; allowed: an integer >= 100.")
    if not isinstance(num_proc, int) or num_proc < 1:
        raise ValueError(f"num_proc={num_proc!r}; allowed: an integer >= 1.")

    raw, column, reader_rows = load_raw(train_files, format, text_column, hub_dataset, hub_config, hub_split,
                                        builtin, streaming)
    train, train_report = clean_dataset(take_first(raw, max_documents), column, max_document_chars, num_proc,
                                        reader_rows)
    validation, reports = None, {"train": train_report}
    if validation_files:
        raw_validation, column, reader_rows = load_raw(validation_files, format, text_column, None, None, None, False,
                                                       streaming)
        validation, reports["validation"] = clean_dataset(raw_validation, column, max_document_chars, num_proc,
                                                          reader_rows)
    elif validation_fraction:
        train, validation = split_off_validation(train, validation_fraction, seed, num_proc)
    return TextSources(train, validation, reports)

