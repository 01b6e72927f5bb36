"""Where the text comes from: local files, a Hugging Face dataset, or the built-in corpus — cleaned and split.

`datasets` does the reading (its text/json/csv/parquet builders, with their own cache); this module picks the
builder, expands globs, makes dirty input harmless and counted, and carves out a validation split.

Dirty input never crashes a run: invalid UTF-8 is decoded with replacement characters, NUL bytes are removed,
empty and whitespace-only documents are dropped, documents longer than `max_document_chars` are split into
pieces (a single 10 MB line would otherwise be one huge tokenizer call), missing values (None) are dropped and
non-string values are turned into strings. Each of these is counted in a `CleaningReport`.

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
`clean_text(text, max_document_chars) -> list[str]`: the pieces a raw document becomes (possibly none).
"""

from __future__ import annotations

import glob
import hashlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.compute as pc

SOURCE_FORMATS = ("auto", "text", "paragraphs", "jsonl", "csv", "parquet")
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
DATASETS_BUILDER = {"text": "text", "paragraphs": "text", "jsonl": "json", "csv": "csv", "parquet": "parquet"}
CLEANING_VERSION = 1
CLEAN_BATCH_SIZE = 1000
REPLACEMENT_CHARACTER = "\ufffd"


# --------------------------------------------------------------------------------------------------- cleaning
@dataclass
class CleaningReport:
    """What cleaning did to one split's documents."""

    documents_in: int = 0
    documents_out: int = 0
    missing_dropped: int = 0  # None values (e.g. empty CSV cells)
    empty_dropped: int = 0  # empty or whitespace-only (also after NUL removal)
    with_nul_bytes: int = 0  # NUL bytes removed
    with_invalid_utf8: int = 0  # holds U+FFFD: undecodable bytes were replaced (or the text already had it)
    long_documents_split: int = 0  # longer than max_document_chars, cut into pieces
    pieces_from_splits: int = 0

    def summary(self) -> str:
        return (
            f"{self.documents_in:,} documents in, {self.documents_out:,} out: {self.empty_dropped:,} empty and "
            f"{self.missing_dropped:,} missing dropped; {self.with_nul_bytes:,} had NUL bytes (removed), "
            f"{self.with_invalid_utf8:,} had invalid UTF-8 (replaced with U+FFFD); {self.long_documents_split:,} "
            f"over-long documents split into {self.pieces_from_splits:,} pieces"
        )

    def to_dict(self) -> dict:
        return asdict(self)

    def add(self, other: "CleaningReport") -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)


def split_long_text(text: str, max_chars: int) -> list[str]:
    """Cut text into pieces of at most max_chars, preferring the last whitespace in each piece's final tenth."""
    pieces = []
    start = 0
    while len(text) - start > max_chars:
        end = start + max_chars
        cut = text.rfind(" ", end - max_chars // 10, end)
        cut = cut if cut > start else end
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return [piece for piece in pieces if piece.strip()]


def clean_text(text, max_document_chars: int) -> list[str]:
    """The documents one raw value becomes: [] when missing or empty, several when over-long."""
    if text is None:
        return []
    if not isinstance(text, str):
        text = str(text)
    if "\x00" in text:
        text = text.replace("\x00", "")
    if not text.strip():
        return []
    if len(text) > max_document_chars:
        return split_long_text(text, max_document_chars)
    return [text]


def count_issues(text, max_document_chars: int, report: CleaningReport) -> None:
    report.documents_in += 1
    if text is None:
        report.missing_dropped += 1
        return
    text = text if isinstance(text, str) else str(text)
    report.with_nul_bytes += "\x00" in text
    report.with_invalid_utf8 += REPLACEMENT_CHARACTER in text
    stripped = text.replace("\x00", "")
    if not stripped.strip():
        report.empty_dropped += 1
    elif len(stripped) > max_document_chars:
        report.long_documents_split += 1


class DocumentCleaner:
    """Batched map function: raw text column -> cleaned "text" column (row count may change).

    When it runs in this process (streaming), it also counts into `.report`; for map-based datasets the counts
    come from `count_dataset_issues` instead, which also holds when the map result is loaded from cache."""

    def __init__(self, text_column: str, max_document_chars: int, count: bool = False):
        self.text_column = text_column
        self.max_document_chars = max_document_chars
        self.count = count
        self.report = CleaningReport()

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        texts = []
        for raw in batch[self.text_column]:
            pieces = clean_text(raw, self.max_document_chars)
            if self.count:
                count_issues(raw, self.max_document_chars, self.report)
                self.report.documents_out += len(pieces)
                if len(pieces) > 1:
                    self.report.pieces_from_splits += len(pieces)
            texts.extend(pieces)
        return {"text": texts}


def count_dataset_issues(dataset: datasets.Dataset, text_column: str, max_document_chars: int,
                         cleaned_rows: int) -> CleaningReport:
    """Count the dirt of a map-style dataset with Arrow compute kernels (no Python loop per document)."""
    report = CleaningReport(documents_in=len(dataset), documents_out=cleaned_rows)
    for table in dataset.select_columns([text_column]).with_format("arrow").iter(batch_size=50_000):
        column = table[text_column]
        if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
            # Rare (a numeric CSV column): count in Python, exactly as the cleaner sees it.
            partial = CleaningReport()
            for value in column.to_pylist():
                count_issues(value, max_document_chars, partial)
            partial.documents_in = 0
            report.add(partial)
            continue
        present = pc.fill_null(pc.is_valid(column), False)
        report.missing_dropped += int(pc.sum(pc.invert(present)).as_py() or 0)
        without_nul = pc.replace_substring(column, "\x00", "")
        has_nul = pc.fill_null(pc.match_substring(column, "\x00"), False)
        report.with_nul_bytes += int(pc.sum(has_nul).as_py() or 0)
        has_replacement = pc.fill_null(pc.match_substring(column, REPLACEMENT_CHARACTER), False)
        report.with_invalid_utf8 += int(pc.sum(has_replacement).as_py() or 0)
        # Python's str.strip() and Arrow's utf8_trim_whitespace agree on Unicode whitespace.
        empty = pc.and_(present, pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(without_nul)), 0))
        report.empty_dropped += int(pc.sum(pc.fill_null(empty, False)).as_py() or 0)
        long = pc.and_(pc.invert(empty), pc.greater(pc.utf8_length(without_nul), max_document_chars))
        report.long_documents_split += int(pc.sum(pc.fill_null(long, False)).as_py() or 0)
    kept_whole = report.documents_in - report.missing_dropped - report.empty_dropped - report.long_documents_split
    report.pieces_from_splits = cleaned_rows - kept_whole
    return report


def clean_dataset(dataset, text_column: str, max_document_chars: int, num_proc: int):
    """(cleaned dataset with one "text" column, CleaningReport) for a Dataset or an IterableDataset."""
    if dataset.column_names is not None and text_column not in dataset.column_names:
        raise ValueError(
            f"text_column={text_column!r} is not a column of the data; available columns: {dataset.column_names}."
        )
    if isinstance(dataset, datasets.IterableDataset):
        cleaner = DocumentCleaner(text_column, max_document_chars, count=True)
        cleaned = dataset.map(cleaner, batched=True, batch_size=CLEAN_BATCH_SIZE, remove_columns=dataset.column_names)
        return cleaned, cleaner.report
    cleaner = DocumentCleaner(text_column, max_document_chars)
    settings = f"{dataset._fingerprint}-{text_column}-{max_document_chars}-clean{CLEANING_VERSION}"
    cleaned = dataset.map(
        cleaner,
        batched=True,
        batch_size=CLEAN_BATCH_SIZE,
        num_proc=num_proc if num_proc > 1 and len(dataset) >= num_proc else None,
        remove_columns=dataset.column_names,
        features=datasets.Features({"text": datasets.Value("string")}),
        new_fingerprint=hashlib.sha256(settings.encode()).hexdigest()[:16],
        desc="Cleaning",
    )
    return cleaned, count_dataset_issues(dataset, text_column, max_document_chars, len(cleaned))


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


def load_files(files: list[str], fmt: str, streaming: bool):
    builder = DATASETS_BUILDER[fmt]
    options: dict = {}
    if fmt in ("text", "paragraphs"):
        options = {"encoding_errors": "replace", "sample_by": "paragraph" if fmt == "paragraphs" else "line"}
    elif fmt == "jsonl":
        options = {"encoding_errors": "replace"}
    elif fmt == "csv":
        options = {"encoding_errors": "replace", "on_bad_lines": "warn"}
    try:
        return datasets.load_dataset(builder, data_files={"data": files}, split="data", streaming=streaming, **options)
    except Exception as error:  # the datasets builders raise many types; say which files and format failed
        raise ValueError(f"could not read {len(files)} file(s) as format={fmt!r} (first: {files[0]!r}): {error}") from error


# --------------------------------------------------------------------------------------------------- hub
def hub_is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on")


def load_hub_dataset(name: str, config: str | None, split: str, streaming: bool):
    try:
        return datasets.load_dataset(name, config, split=split, streaming=streaming)
    except Exception as error:
        hint = (
            "HF_HUB_OFFLINE=1 is set and the dataset is not in the local cache; unset it with network access, or "
            "download the data and pass it as train_files"
            if hub_is_offline()
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
    """The raw dataset of one split before cleaning, and the column holding its text."""
    if builtin:
        from .builtin import load_builtin_corpus

        corpus = load_builtin_corpus().select_columns(["text"])
        return (corpus.to_iterable_dataset() if streaming else corpus), "text"
    if hub_dataset:
        return load_hub_dataset(hub_dataset, hub_config, hub_split, streaming), text_column
    resolved = resolve_files(files)
    chosen = infer_format(resolved) if fmt == "auto" else fmt
    column = "text" if chosen in ("text", "paragraphs") else text_column
    return load_files(resolved, chosen, streaming), column


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
    if format not in SOURCE_FORMATS:
        raise ValueError(f"format={format!r} is not supported; allowed: {', '.join(SOURCE_FORMATS)}.")
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

    raw, column = load_raw(train_files, format, text_column, hub_dataset, hub_config, hub_split, builtin, streaming)
    train, train_report = clean_dataset(take_first(raw, max_documents), column, max_document_chars, num_proc)
    validation, reports = None, {"train": train_report}
    if validation_files:
        raw_validation, column = load_raw(validation_files, format, text_column, None, None, None, False, streaming)
        validation, reports["validation"] = clean_dataset(raw_validation, column, max_document_chars, num_proc)
    elif validation_fraction:
        train, validation = split_off_validation(train, validation_fraction, seed, num_proc)
    return TextSources(train, validation, reports)

