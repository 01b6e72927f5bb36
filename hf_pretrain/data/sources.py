"""Where the text comes from: local files, a Hugging Face dataset, or the built-in corpus — cleaned and split.

`datasets` reads text and Parquet files (its builders, with their own cache); JSON Lines and CSV go through the
tolerant readers (data/readers.py, cached the same way, through `Dataset.from_generator`). This module picks the
reader, expands globs, has the documents cleaned and counted (data/cleaning.py), and carves out a validation
split. Hub datasets are named as people name them (a revision, data files inside the repo, the dataset's own
validation split), through `datasets.load_dataset`, which reads a local dataset folder the same way.

Public API
----------
`load_text_sources(train_files=(), validation_files=(), format="auto", text_column="text", hub_dataset=None,
                   hub_config=None, hub_split="train", builtin=False, validation_fraction=0.0, seed=0,
                   streaming=False, max_documents=None, max_document_chars=1_000_000, num_proc=1,
                   hub_revision=None, hub_data_files=None, hub_validation_split=None) -> TextSources`
    Exactly one of train_files / hub_dataset / builtin. Returns `TextSources(train, validation, reports)`:
    datasets (or IterableDatasets when streaming) with a single "text" column, validation None when neither
    validation_files nor validation_fraction is given (nor, for a Hub dataset, a validation split), and one
    CleaningReport per split. A validation fraction is held out by a hash of (seed, text): deterministic, order
    independent, and identical texts always land in the same split (no duplicate leaks from train into
    validation). For streaming datasets the reports fill in as the data is iterated.
    A Hub dataset's validation: `hub_validation_split` when named; else its own split named one of
    VALIDATION_SPLIT_NAMES (recipe/data.py; never "test"), when it has one; else validation_fraction of hub_split.
`load_source_texts(section, data, seed) -> TextSources`: one recipe source (recipe/data.py `SourceSection`) with the
    data section's shared keys (validation_fraction, streaming, num_proc).
`resolve_hub_files(name, config, revision, data_files, split) -> (files, format, commit)`: the data files of one
    split of a Hub dataset, pinned to a commit, for readers that open files themselves (streams).
`recipe_text_sources(recipe) -> list[TextSource]`: the recipe's sources (data/mixture.py `TextSource`), files
    resolved, formats inferred, Hub files pinned; one source named after its kind in a one-source recipe.
`resolve_files(patterns) -> list[str]`: globs expanded, sorted, de-duplicated; a pattern that matches nothing
    is an error.
`infer_format(files) -> str`
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import datasets

from ..offline import hub_offline
from ..recipe.data import TEXT_FORMATS, VALIDATION_SPLIT_NAMES
from .cleaning import CLEAN_BATCH_SIZE, CleaningReport, clean_dataset
from .mixture import TextSource, normalized_weights
from .readers import TOLERANT_FORMATS, read_tolerant

logger = logging.getLogger(__name__)

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
@dataclass
class HubSource:
    """A Hub dataset as a recipe names it; `data_files` is passed to `datasets` as given (a list or a mapping)."""

    name: str
    config: str | None = None
    split: str = "train"
    revision: str | None = None
    data_files: list | dict | None = None

    def describe(self) -> str:
        extra = "".join(f", {key}={value!r}" for key, value in (("revision", self.revision),
                                                                ("data_files", self.data_files)) if value)
        return f"hub_dataset={self.name!r} (config={self.config!r}{extra})"


def hub_failure(hub: HubSource, error: Exception, split: str | None = None) -> ValueError:
    hint = (
        "HF_HUB_OFFLINE=1 is set and the dataset is not in the local cache; unset it with network access, or "
        "download the data and pass it as train_files"
        if hub_offline()
        else "check the name, config, revision and data files, and that the Hugging Face Hub can be reached"
    )
    shown = hub.describe()[:-1] + (f", split={split!r})" if split else ")")
    return ValueError(f"{shown} could not be loaded: {hint}. Cause: {type(error).__name__}: {error}")


def load_hub_dataset(name: str, config: str | None, split: str, streaming: bool, revision: str | None = None,
                     data_files=None):
    """One split of a Hub dataset (or a local dataset folder) through `datasets.load_dataset`."""
    hub = HubSource(name, config, split, revision, data_files or None)
    try:
        return datasets.load_dataset(name, config, split=split, streaming=streaming, revision=revision,
                                     data_files=data_files or None)
    except Exception as error:
        raise hub_failure(hub, error, split) from error


def hub_builder(hub: HubSource):
    """The dataset's builder: its splits and data files resolved (for the Hub: pinned to a commit)."""
    try:
        return datasets.load_dataset_builder(hub.name, hub.config, revision=hub.revision, data_files=hub.data_files)
    except Exception as error:
        raise hub_failure(hub, error) from error


def builder_splits(builder) -> dict[str, list[str]]:
    """split -> its data files ([] when the builder knows its splits but not as files)."""
    files = builder.config.data_files
    if files:
        return {str(split): [str(path) for path in paths] for split, paths in files.items()}
    return {str(split): [] for split in (builder.info.splits or {})}


def missing_split(hub: HubSource, key: str, split: str, available) -> ValueError:
    return ValueError(f"{key}={split!r} is not a split of {hub.describe()}; its splits: "
                      f"{', '.join(map(repr, available))}.")


def choose_validation_split(hub: HubSource, named: str | None) -> str | None:
    """The split to evaluate on: `named` (refused when the dataset lacks it), else the dataset's own validation
    split (the first of VALIDATION_SPLIT_NAMES it has), else None (hold out a fraction of the training split)."""
    available = list(builder_splits(hub_builder(hub)))
    if not available:  # the builder cannot tell: load_dataset will name a missing split
        return named
    if hub.split not in available:
        raise missing_split(hub, "hub_split", hub.split, available)
    if named is not None:
        if named not in available:
            raise missing_split(hub, "hub_validation_split", named, available)
        return named
    return next((split for split in VALIDATION_SPLIT_NAMES if split in available and split != hub.split), None)


# `datasets` packaged builder -> the format of our readers (the streams open the files themselves).
BUILDER_FORMATS = {"json": "jsonl", "csv": "csv", "parquet": "parquet", "text": "text"}
PINNED_URL = re.compile(r"^hf://datasets/[^@]+@([0-9a-f]{40})/")


def builder_format(builder) -> str | None:
    for cls in type(builder).__mro__:  # e.g. datasets.packaged_modules.json.json.Json
        parts = cls.__module__.split(".")
        if parts[:2] == ["datasets", "packaged_modules"] and len(parts) > 2:
            return parts[2]
    return None


def resolve_hub_files(name: str, config: str | None = None, revision: str | None = None, data_files=None,
                      split: str = "train") -> tuple[list[str], str, str | None]:
    """(files, format, commit) of one split of a Hub dataset, for readers that open the files themselves.

    `datasets.load_dataset_builder` resolves the dataset's data files (or `data_files`, a list or a split ->
    paths mapping, paths inside the repo) at `revision`; datasets 5.2 pins Hub files to the commit it resolved,
    as `hf://datasets/{repo}@{commit}/{path}` (load.py, HubDatasetModuleFactory), which fsspec opens through
    `HfFileSystem` with range requests. The commit is read from those URLs (None for a local dataset folder, whose
    files come back as local paths). Unverified against the live Hub: the Hub cannot be reached where this was
    written; only local folders were tested. Raises ValueError naming a missing split (and the splits there are),
    a builder our readers do not read (arrow, image or audio folders, ...), or files inside archives."""
    hub = HubSource(name, config, split, revision, data_files or None)
    builder = hub_builder(hub)
    splits = builder_splits(builder)
    if split not in splits:
        raise missing_split(hub, "hub_split", split, list(splits))
    kind = builder_format(builder)
    if kind not in BUILDER_FORMATS:
        raise ValueError(f"{hub.describe()} is read by the `datasets` builder {kind!r}; a text source reads "
                         f"{', '.join(BUILDER_FORMATS)} files.")
    files = splits[split]
    inside_archives = [path for path in files if "::" in path]
    if not files or inside_archives:
        raise ValueError(f"{hub.describe()} split {split!r} has "
                         + (f"files inside archives ({inside_archives[0]!r}, ...), which a stream cannot cut into "
                            "shards; extract them" if files else "no data files a stream can read") + ".")
    commits = {match.group(1) for path in files if (match := PINNED_URL.match(path))}
    return files, BUILDER_FORMATS[kind], commits.pop() if len(commits) == 1 else None


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


def load_raw(files, fmt, text_column, hub: HubSource | None, builtin, streaming):
    """The raw dataset of one split before cleaning, the column holding its text, and whether its rows come from
    a tolerant reader."""
    if builtin:
        from .builtin import load_builtin_corpus

        corpus = load_builtin_corpus().select_columns(["text"])
        return (corpus.to_iterable_dataset() if streaming else corpus), "text", False
    if hub is not None:
        raw = load_hub_dataset(hub.name, hub.config, hub.split, streaming, hub.revision, hub.data_files)
        return raw, text_column, False
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
    hub_revision: str | None = None,
    hub_data_files=None,
    hub_validation_split: str | None = None,
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
    hub, validation_split = None, None
    if hub_dataset:  # the splits are looked up first: a missing one is named before anything is read
        hub = HubSource(hub_dataset, hub_config, hub_split, hub_revision, hub_data_files or None)
        validation_split = choose_validation_split(hub, hub_validation_split)

    raw, column, reader_rows = load_raw(train_files, format, text_column, hub, builtin, streaming)
    train, train_report = clean_dataset(take_first(raw, max_documents), column, max_document_chars, num_proc,
                                        reader_rows)
    validation, reports = None, {"train": train_report}
    if validation_files:
        raw_validation, column, reader_rows = load_raw(validation_files, format, text_column, None, False, streaming)
        validation, reports["validation"] = clean_dataset(raw_validation, column, max_document_chars, num_proc,
                                                          reader_rows)
    elif validation_split is not None:
        held_out = HubSource(hub.name, hub.config, validation_split, hub.revision, hub.data_files)
        raw_validation, column, _ = load_raw((), format, text_column, held_out, False, streaming)
        validation, reports["validation"] = clean_dataset(raw_validation, column, max_document_chars, num_proc)
        logger.info(f"validation: split {validation_split!r} of {hub.describe()}")
    elif validation_fraction:
        train, validation = split_off_validation(train, validation_fraction, seed, num_proc)
    return TextSources(train, validation, reports)


# --------------------------------------------------------------------------------------------------- recipes
def load_source_texts(section, data, seed: int) -> TextSources:
    """One source of a recipe (a `SourceSection`, recipe/data.py) with the data section's shared keys; held-out
    text comes from its validation_files, its Hub validation split, or data.validation_fraction."""
    files = section.source == "files"
    return load_text_sources(
        train_files=section.train_files if files else (),
        validation_files=section.validation_files if files else (),
        format=section.format,
        text_column=section.text_column,
        hub_dataset=section.hub_dataset if section.source == "hub" else None,
        hub_config=section.hub_config,
        hub_split=section.hub_split,
        hub_revision=section.hub_revision,
        hub_data_files=section.hub_data_files,
        hub_validation_split=section.hub_validation_split,
        builtin=section.source == "builtin",
        validation_fraction=0.0 if files and section.validation_files else data.validation_fraction,
        seed=seed,
        max_documents=section.max_documents,
        num_proc=data.num_proc,
        streaming=data.streaming,
    )


def recipe_text_sources(recipe) -> list[TextSource]:
    """The recipe's sources as the stream readers take them (see the module docstring). A builtin source holds the
    built-in corpus's raw documents (`texts`, at most max_documents); files are resolved and their format
    inferred; a Hub source's files are pinned to the commit they were resolved at (`revision`). Weights are the
    normalized shares. Raises ValueError naming the source (data.sources[i]) in a mixture."""
    from ..recipe.data import source_sections

    sections = source_sections(recipe.data)
    shares = normalized_weights([section.weight for section in sections])
    result = []
    for index, (section, share) in enumerate(zip(sections, shares)):
        try:
            result.append(text_source(section, float(share)))
        except ValueError as error:
            if not recipe.data.sources:
                raise
            raise ValueError(f"data.sources[{index}] ({section.name!r}): {error}") from error
    return result


def text_source(section, share: float) -> TextSource:
    if section.source == "builtin":
        from .builtin import load_builtin_corpus

        texts = load_builtin_corpus()["text"]
        texts = list(texts[: section.max_documents] if section.max_documents else texts)
        return TextSource(section.name, share, texts=texts, format="text")
    if section.source == "hub":
        files, fmt, commit = resolve_hub_files(section.hub_dataset, section.hub_config, section.hub_revision,
                                               section.hub_data_files, section.hub_split)
        return TextSource(section.name, share, files=files, format=fmt, text_column=section.text_column,
                          revision=commit)
    files = resolve_files(section.train_files)
    fmt = infer_format(files) if section.format == "auto" else section.format
    return TextSource(section.name, share, files=files, format=fmt, text_column=section.text_column)
