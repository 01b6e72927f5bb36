"""The `data` section: where a text objective's text comes from and how it becomes blocks.

One source is named by the section's own keys (`source`, `train_files`, `hub_dataset`, ...). A mixture is a list
under `data.sources`: each entry names a source with the same keys, plus its `name` and its `weight` (its share of
the trained tokens). A recipe without `data.sources` is a one-source recipe, read exactly as before.

Public API
----------
`DataSection`: the section (its keys and their docs).
`SourceSection`: one entry of `data.sources` (built and checked by `check_data_source`).
`check_data_source(data)`: the rules across a data section's keys; a mixture's entries are checked (unknown keys
    with a did-you-mean, weights, duplicate names, each naming `data.sources[i].key`) and written back in their
    resolved form (name, weight, source, and the keys that differ from their defaults).
`source_sections(data) -> list[SourceSection]`: the sources a data section names; one source (named after its
    kind: builtin, files or hub, weight 1) when `data.sources` is empty.
`VALIDATION_SPLIT_NAMES`: the splits a Hub dataset's own validation split may be called, in the order they are
    looked for.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from .fields import RecipeError, build_section, choice, listing, ranged, setting

# The formats of local text files (data/sources.py reads each; `auto` tells them by their extensions).
TEXT_FORMATS = ("auto", "text", "paragraphs", "jsonl", "csv", "parquet")
SOURCE_KINDS = ("builtin", "files", "hub")
# With data.hub_validation_split null, the first of these that the dataset has is its validation split. `datasets`
# already files data files named valid*/dev*/val* under "validation"; the other names cover datasets whose card
# names its splits. A "test" split is never taken: it is kept for a final score, not for eval during training.
VALIDATION_SPLIT_NAMES = ("validation", "valid", "dev", "val")
# Source names appear in metric keys (eval/<name>/loss), logs and stream states: kept to a safe alphabet.
SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# The keys that belong to one kind of source; set for another kind they would be ignored, so they are refused.
KIND_KEYS = {
    "files": ("train_files", "validation_files"),
    "hub": ("hub_dataset", "hub_config", "hub_revision", "hub_data_files", "hub_validation_split"),
}


@dataclass
class SourceKeys:
    """Where one source's text is: the keys the data section and every entry of data.sources share."""

    source: str = choice(
        "builtin", *SOURCE_KINDS,
        doc="builtin (docstrings of the Python standard library, offline), files (train_files) or hub (hub_dataset)")
    train_files: list = listing("source=files: paths or globs of the training text")
    validation_files: list = listing("source=files: held-out text for eval (empty: validation_fraction of train)")
    format: str = choice(
        "auto", *TEXT_FORMATS,
        doc="file format: text (a document per line), paragraphs (separated by blank lines), jsonl, csv, parquet "
            "(text_column), or auto (by extension)")
    text_column: str = setting("text", "the column or key holding the text (jsonl, csv, parquet, Hub datasets)")
    hub_dataset: str | None = setting(None, "source=hub: the Hub dataset id (or a local dataset folder)")
    hub_config: str | None = setting(None, "source=hub: the dataset's configuration name")
    hub_split: str = setting("train", "source=hub: the split to train on")
    hub_revision: str | None = setting(
        None, "source=hub: the branch, tag or commit to read (null: the default branch); recorded with the run")
    hub_data_files: dict | list = listing(
        "source=hub: files inside the dataset repo (paths or globs): a list (its split is 'train'), or a mapping "
        "of split -> paths (empty: the dataset's own files)")
    hub_validation_split: str | None = setting(
        None, "source=hub: the split to evaluate on (null: the dataset's own " + "/".join(VALIDATION_SPLIT_NAMES)
              + " split when it has one, else validation_fraction of hub_split)")
    max_documents: int | None = ranged(None, low=1, doc="read at most this many training documents (null: all)")


@dataclass
class SourceSection(SourceKeys):
    """One source of a mixture: its name, its weight, and where its text is (the data section's source keys)."""

    source: str | None = choice(
        None, *SOURCE_KINDS,
        doc="builtin, files or hub (null: files when train_files is given, hub when hub_dataset is, else builtin)")
    name: str | None = setting(None, "unique name of the source, in logs and per-source eval metrics")
    weight: float | None = ranged(
        None, low=0.0, low_open=True, doc="share of the trained tokens (positive; the weights are normalized)")


def sources_doc() -> str:
    keys = ", ".join(spec.name for spec in dataclasses.fields(SourceKeys))
    return ("a mixture: a list of sources, each a mapping of name, weight (share of the trained tokens) and the keys "
            f"above that say where its text is ({keys}); every block holds one source's text. Empty: the one source "
            "the keys above name")


@dataclass
class DataSection(SourceKeys):
    """Where the text comes from and how it becomes blocks."""

    validation_fraction: float = ranged(
        0.02, low=0.0, high=0.5, doc="share of the training documents held out for eval (by a hash of each text)")
    block_size: int = ranged(
        128, low=8, doc="tokens per packed block (the sequence length); documents longer than it are split")
    num_proc: int = ranged(1, low=1, doc="processes that tokenize and pack a corpus held in memory")
    streaming: bool = setting(
        False, "read the corpus as a stream instead of loading it (corpora larger than memory): every process and "
               "DataLoader worker reads its own shards, shuffled, resumed from its saved position")
    shuffle_buffer: int = ranged(
        1000, low=1, doc="streaming: packed blocks each reader shuffles among (a block leaves at most this many "
                         "blocks late; 1: in order)")
    sources: list = listing(sources_doc())


# --------------------------------------------------------------------------------------------------- rules
def check_data_source(data) -> None:
    """The data section of a pretraining or a fine-tuning recipe names what its source needs."""
    if isinstance(data, DataSection) and data.sources:
        check_mixture(data)
        return
    if data.source == "files" and not data.train_files:
        raise RecipeError("data.source='files' needs data.train_files (a path or glob, or a list of them).")
    if data.source == "hub" and not data.hub_dataset:
        raise RecipeError("data.source='hub' needs data.hub_dataset (a Hub dataset id, e.g. 'nyu-mll/glue').")
    if isinstance(data, DataSection):
        check_source_keys(data, data.source, "data.")


def check_source_keys(keys: SourceKeys, kind: str, prefix: str) -> None:
    """Keys of another kind of source are refused (they would be ignored); the Hub keys must fit together."""
    for other, names in KIND_KEYS.items():
        if other == kind:
            continue
        default = SourceKeys()
        for name in names:
            # The shipped recipes say `source: builtin`: `data.train_files=...` alone would train on the built-in
            # corpus without a word, so it is refused like any other key of another kind.
            if getattr(keys, name) != getattr(default, name):
                raise RecipeError(
                    f"{prefix}{name}={getattr(keys, name)!r} is for source={other}, but {prefix}source={kind!r}: it "
                    f"would be ignored. Remove it, or set {prefix}source={other}."
                )
    if kind == "hub":
        check_hub_keys(keys, prefix)


def check_hub_keys(keys: SourceKeys, prefix: str) -> None:
    files = keys.hub_data_files
    if isinstance(files, dict):
        for split, patterns in files.items():
            patterns = [patterns] if isinstance(patterns, str) else patterns
            if not isinstance(split, str) or not isinstance(patterns, list) or not patterns or not all(
                    isinstance(p, str) for p in patterns):
                raise RecipeError(
                    f"{prefix}hub_data_files={files!r} is not allowed; a mapping must give each split name a path or "
                    "glob, or a list of them (e.g. {train: 'data/train-*.parquet', validation: 'data/dev.parquet'})."
                )
        for key in ("hub_split", "hub_validation_split"):
            split = getattr(keys, key)
            if split is not None and split not in files:
                raise RecipeError(
                    f"{prefix}{key}={split!r} is not a split of {prefix}hub_data_files; its splits: "
                    f"{', '.join(map(repr, files))}."
                )
    elif files:
        if not all(isinstance(p, str) for p in files):
            raise RecipeError(f"{prefix}hub_data_files={files!r} is not allowed; give paths or globs (strings).")
        for key in ("hub_split", "hub_validation_split"):
            split = getattr(keys, key)
            if split is not None and split != "train":
                raise RecipeError(
                    f"{prefix}{key}={split!r} with {prefix}hub_data_files as a list: `datasets` names the split of "
                    f"a list of files 'train'. Give a mapping of split -> files (e.g. {{train: [...], {split}: "
                    "[...]}) to name other splits."
                )
    if keys.hub_validation_split is not None and keys.hub_validation_split == keys.hub_split:
        raise RecipeError(
            f"{prefix}hub_validation_split={keys.hub_validation_split!r} is also {prefix}hub_split: eval would read "
            "the training text. Name another split, or null (hold out validation_fraction of the training split)."
        )


def inferred_kind(section: SourceSection) -> str:
    if section.source is not None:
        return section.source
    if section.train_files:
        return "files"
    return "hub" if section.hub_dataset else "builtin"


def check_mixture(data: DataSection) -> None:
    """data.sources: every entry a mapping of known keys, named once, weighted; the data section's own source keys
    stay at their defaults (each source names its own text). Entries are written back resolved."""
    default = DataSection()
    own = [f"data.{spec.name}={getattr(data, spec.name)!r}" for spec in dataclasses.fields(SourceKeys)
           if getattr(data, spec.name) != getattr(default, spec.name)]
    if own:
        raise RecipeError(
            f"{', '.join(own)} with data.sources: in a mixture each source names its own text. Move "
            f"{'it' if len(own) == 1 else 'them'} into the source(s) under data.sources."
        )
    names: dict[str, int] = {}
    resolved = []
    for index, entry in enumerate(data.sources):
        prefix = f"data.sources[{index}]."
        if not isinstance(entry, dict):
            raise RecipeError(
                f"data.sources[{index}]={entry!r} is not allowed; each source is a mapping with name, weight and "
                "where its text is (e.g. {name: web, weight: 0.7, source: files, train_files: 'web/*.jsonl'})."
            )
        section = build_section(SourceSection, entry, prefix=prefix)
        for key, needed in (("name", "a unique name"), ("weight", "its share of the trained tokens (> 0)")):
            if getattr(section, key) is None:
                raise RecipeError(f"{prefix}{key} is missing: each source of data.sources needs {needed}.")
        if not SOURCE_NAME.fullmatch(section.name):
            raise RecipeError(
                f"{prefix}name={section.name!r} is not allowed; use letters, digits, '_', '-' and '.', starting with "
                "a letter or digit (it names the source's metrics)."
            )
        if section.name in names:
            raise RecipeError(
                f"{prefix}name={section.name!r} is also the name of data.sources[{names[section.name]}]; each source "
                "needs its own name."
            )
        names[section.name] = index
        section.source = inferred_kind(section)
        if section.source == "files" and not section.train_files:
            raise RecipeError(f"{prefix}source='files' needs {prefix}train_files (a path or glob, or a list of them).")
        if section.source == "hub" and not section.hub_dataset:
            raise RecipeError(f"{prefix}source='hub' needs {prefix}hub_dataset (a Hub dataset id).")
        check_source_keys(section, section.source, prefix)
        resolved.append(compact(section))
    data.sources = resolved


def compact(section: SourceSection) -> dict:
    """A source as the resolved recipe shows it: name, weight, source, and the keys that differ from defaults."""
    default = SourceSection()
    entry = {"name": section.name, "weight": section.weight, "source": section.source}
    for spec in dataclasses.fields(SourceKeys):
        value = getattr(section, spec.name)
        if spec.name != "source" and value != getattr(default, spec.name):
            entry[spec.name] = value
    return entry


def source_sections(data: DataSection) -> list[SourceSection]:
    """The sources a (checked) data section names, in order; one source named after its kind without data.sources."""
    if not data.sources:
        keys = {spec.name: getattr(data, spec.name) for spec in dataclasses.fields(SourceKeys)}
        return [SourceSection(**keys, name=data.source, weight=1.0)]
    sections = []
    for index, entry in enumerate(data.sources):
        section = build_section(SourceSection, entry, prefix=f"data.sources[{index}].")
        section.source = inferred_kind(section)
        sections.append(section)
    return sections
