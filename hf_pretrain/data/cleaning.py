"""Cleaning text documents: dirty input never crashes a run, and every case is counted.

Invalid UTF-8 is decoded with replacement characters (also in Parquet string columns, which other writers than
Arrow can fill with it), NUL bytes are removed, empty and whitespace-only documents are dropped, documents longer
than `max_document_chars` are split into pieces (a single 10 MB line would otherwise be one huge tokenizer call),
missing values (None, an empty CSV cell, a JSON row without the text key) are dropped, non-string values are
turned into strings (bytes decoded as UTF-8, JSON values as their JSON text) and rows a reader marked malformed
(data/readers.py) are dropped. Each of these is counted in a `CleaningReport`; for malformed rows it also names
the file and line of the first few.

Public API
----------
`clean_dataset(dataset, text_column, max_document_chars, num_proc, reader_rows=False) -> (dataset, CleaningReport)`
    A Dataset (cleaned with a cached map, counted with Arrow kernels) or an IterableDataset (counted as read).
`clean_text(text, max_document_chars) -> list[str]`: the pieces a raw document becomes (possibly none).
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import asdict, dataclass, field

import datasets
import pyarrow as pa
import pyarrow.compute as pc

CLEANING_VERSION = 2
# The raw rows of the tolerant readers carry, next to "text", where and why a row could not be parsed (None when
# it could): the cleaner drops those rows and the report counts them, also when the cleaned data comes from cache.
MALFORMED_COLUMN = "__hf_pretrain_malformed__"
MALFORMED_EXAMPLES = 3  # how many malformed rows the report names
CLEAN_BATCH_SIZE = 1000
REPLACEMENT_CHARACTER = "\ufffd"


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
    malformed_dropped: int = 0  # rows a reader could not parse (bad JSON, wrong CSV field count, ...)
    malformed_examples: list[str] = field(default_factory=list)  # "file:line: problem" of the first few

    def summary(self) -> str:
        text = (
            f"{self.documents_in:,} documents in, {self.documents_out:,} out: {self.empty_dropped:,} empty, "
            f"{self.missing_dropped:,} missing and {self.malformed_dropped:,} malformed dropped; "
            f"{self.with_nul_bytes:,} had NUL bytes (removed), {self.with_invalid_utf8:,} had invalid UTF-8 "
            f"(replaced with U+FFFD); {self.long_documents_split:,} over-long documents split into "
            f"{self.pieces_from_splits:,} pieces"
        )
        if self.malformed_examples:
            more = ", ..." if self.malformed_dropped > len(self.malformed_examples) else ""
            text += f" (malformed: {', '.join(self.malformed_examples)}{more})"
        return text

    def to_dict(self) -> dict:
        return asdict(self)

    def add(self, other: "CleaningReport") -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)
        del self.malformed_examples[MALFORMED_EXAMPLES:]

    def count_malformed(self, problem: str) -> None:
        self.malformed_dropped += 1
        if len(self.malformed_examples) < MALFORMED_EXAMPLES:
            self.malformed_examples.append(problem)


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


def as_text(value) -> str | None:
    """A raw value as text: bytes (a binary column) decoded as UTF-8 with replacement, other non-strings str()."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def clean_text(text, max_document_chars: int) -> list[str]:
    """The documents one raw value becomes: [] when missing or empty, several when over-long."""
    text = as_text(text)
    if text is None:
        return []
    if "\x00" in text:
        text = text.replace("\x00", "")
    if not text.strip():
        return []
    if len(text) > max_document_chars:
        return split_long_text(text, max_document_chars)
    return [text]


def count_issues(text, max_document_chars: int, report: CleaningReport, malformed: str | None = None) -> None:
    report.documents_in += 1
    if malformed is not None:
        report.count_malformed(malformed)
        return
    text = as_text(text)
    if text is None:
        report.missing_dropped += 1
        return
    report.with_nul_bytes += "\x00" in text
    report.with_invalid_utf8 += REPLACEMENT_CHARACTER in text
    stripped = text.replace("\x00", "")
    if not stripped.strip():
        report.empty_dropped += 1
    elif len(stripped) > max_document_chars:
        report.long_documents_split += 1


def is_string_column(column) -> bool:
    return pa.types.is_string(column.type) or pa.types.is_large_string(column.type)


def text_values(column) -> list:
    """The Python values of an Arrow column, never failing on invalid UTF-8 in a string column: Arrow does not
    check it when reading Parquet, and the usual conversion raises UnicodeDecodeError. Such a column comes back
    as bytes, which `as_text` decodes with replacement characters."""
    if is_string_column(column):
        try:
            return column.to_pylist()
        except UnicodeDecodeError:
            return column.cast(pa.large_binary() if pa.types.is_large_string(column.type) else pa.binary()).to_pylist()
    return column.to_pylist()


def has_valid_utf8(column) -> bool:
    try:
        column.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


class DocumentCleaner:
    """Batched map function: raw text column -> cleaned "text" column (row count may change).

    It takes Arrow batches where it can, so that invalid UTF-8 in a string column reaches `text_values` instead
    of failing in the conversion to Python `datasets` would do, and Python batches (dicts of lists) from the
    tolerant readers' streams (see `clean_dataset`). Rows the reader marked malformed (MALFORMED_COLUMN) are
    dropped. When it runs in this process (streaming), it also counts into `.report`; for map-based datasets the
    counts come from `count_dataset_issues` instead, which also holds when the map result is loaded from cache."""

    def __init__(self, text_column: str, max_document_chars: int, count: bool = False):
        self.text_column = text_column
        self.max_document_chars = max_document_chars
        self.count = count
        self.report = CleaningReport()

    def __call__(self, batch: pa.Table | dict[str, list]) -> pa.Table | dict[str, list]:
        arrow = isinstance(batch, pa.Table)
        values = text_values(batch[self.text_column]) if arrow else batch[self.text_column]
        problems = itertools.repeat(None)
        if MALFORMED_COLUMN in (batch.column_names if arrow else batch):
            problems = batch[MALFORMED_COLUMN].to_pylist() if arrow else batch[MALFORMED_COLUMN]
        texts = []
        for raw, problem in zip(values, problems):
            pieces = [] if problem is not None else clean_text(raw, self.max_document_chars)
            if self.count:
                count_issues(raw, self.max_document_chars, self.report, problem)
                self.report.documents_out += len(pieces)
                if len(pieces) > 1:
                    self.report.pieces_from_splits += len(pieces)
            texts.extend(pieces)
        return pa.table({"text": pa.array(texts, pa.string())}) if arrow else {"text": texts}


def count_dataset_issues(dataset: datasets.Dataset, text_column: str, max_document_chars: int,
                         cleaned_rows: int) -> CleaningReport:
    """Count the dirt of a map-style dataset with Arrow compute kernels (no Python loop per document)."""
    report = CleaningReport(documents_in=len(dataset), documents_out=cleaned_rows)
    marked = MALFORMED_COLUMN in dataset.column_names
    columns = [text_column, MALFORMED_COLUMN] if marked else [text_column]
    for table in dataset.select_columns(columns).with_format("arrow").iter(batch_size=50_000):
        column = table[text_column]
        # Malformed rows have no text: count them here and keep them out of "missing" below.
        well_formed = pc.is_null(table[MALFORMED_COLUMN]) if marked else None
        if marked:
            problems = pc.drop_null(table[MALFORMED_COLUMN])
            report.add(CleaningReport(malformed_dropped=len(problems),
                                      malformed_examples=problems.slice(0, MALFORMED_EXAMPLES).to_pylist()))
        if not is_string_column(column) or not has_valid_utf8(column):
            # Rare (a numeric or binary column, invalid UTF-8): count in Python, exactly as the cleaner sees it.
            partial = CleaningReport()
            keep = well_formed.to_pylist() if marked else itertools.repeat(True)
            for value, counted in zip(text_values(column), keep):
                if counted:
                    count_issues(value, max_document_chars, partial)
            partial.documents_in = 0
            report.add(partial)
            continue
        present = pc.fill_null(pc.is_valid(column), False)
        missing = pc.invert(present) if well_formed is None else pc.and_(pc.invert(present), well_formed)
        report.missing_dropped += int(pc.sum(missing).as_py() or 0)
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
    kept_whole = (report.documents_in - report.missing_dropped - report.empty_dropped - report.malformed_dropped
                  - report.long_documents_split)
    report.pieces_from_splits = cleaned_rows - kept_whole
    return report


def clean_dataset(dataset, text_column: str, max_document_chars: int, num_proc: int, reader_rows: bool = False):
    """(cleaned dataset with one "text" column, CleaningReport) for a Dataset or an IterableDataset; reader_rows:
    the rows come from `read_tolerant` (columns "text" and MALFORMED_COLUMN)."""
    if dataset.column_names is not None and text_column not in dataset.column_names:
        raise ValueError(
            f"text_column={text_column!r} is not a column of the data; available columns: {dataset.column_names}."
        )
    text_features = datasets.Features({"text": datasets.Value("string")})
    if isinstance(dataset, datasets.IterableDataset):
        cleaner = DocumentCleaner(text_column, max_document_chars, count=True)
        if reader_rows:
            # A tolerant reader's stream yields Python dicts, which `datasets` would turn into one-row Arrow
            # tables typed by guess (a None gives a null column that does not concatenate with a string one).
            # Their text is valid UTF-8 already, so Python batches are safe.
            cleaned = dataset.map(cleaner, batched=True, batch_size=CLEAN_BATCH_SIZE,
                                  remove_columns=["text", MALFORMED_COLUMN], features=text_features)
            return cleaned, cleaner.report
        # An Arrow map on an IterableDataset returns the function's table as is (no remove_columns needed: it
        # would remove the new "text" column too).
        cleaned = dataset.with_format("arrow").map(cleaner, batched=True, batch_size=CLEAN_BATCH_SIZE,
                                                   features=text_features)
        return cleaned.with_format(None), cleaner.report
    cleaner = DocumentCleaner(text_column, max_document_chars)
    settings = f"{dataset._fingerprint}-{text_column}-{max_document_chars}-clean{CLEANING_VERSION}"
    cleaned = dataset.with_format("arrow").map(
        cleaner,
        batched=True,
        batch_size=CLEAN_BATCH_SIZE,
        num_proc=num_proc if num_proc > 1 and len(dataset) >= num_proc else None,
        remove_columns=dataset.column_names,
        features=text_features,
        new_fingerprint=hashlib.sha256(settings.encode()).hexdigest()[:16],
        desc="Cleaning",
    )
    return cleaned.with_format(None), count_dataset_issues(dataset, text_column, max_document_chars, len(cleaned))
