"""Where the text comes from: local files, a Hugging Face dataset, or the built-in corpus — cleaned and split.

`datasets` reads text and Parquet files (its builders, with their own cache); JSON Lines and CSV go through this
module's tolerant readers (cached the same way, through `Dataset.from_generator`), because one bad line makes the
`datasets` JSON builder fail the whole load and its CSV builder skip rows with only a warning. This module picks
the reader, expands globs, makes dirty input harmless and counted, and carves out a validation split.

Dirty input never crashes a run: invalid UTF-8 is decoded with replacement characters (also in Parquet string
columns, which other writers than Arrow can fill with it), NUL bytes are removed, empty and whitespace-only
documents are dropped, documents longer than `max_document_chars` are split into pieces (a single 10 MB line
would otherwise be one huge tokenizer call), missing values (None, an empty CSV cell, a JSON row without the text
key) are dropped, non-string values are turned into strings (bytes decoded as UTF-8, JSON values as their JSON
text) and malformed rows (a line that is not JSON, a JSON line that is not an object, a CSV row whose field count
differs from the header's, a quote left open at the end of a file, a compressed file cut short) are dropped.
Each of these is counted in a `CleaningReport`; for malformed rows it also names the file and line of the first
few. Blank lines of JSON Lines and CSV files hold no row and are skipped (as pandas and Arrow skip them).

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
`read_rows(path, fmt, text_column) -> Iterator[dict]`: the tolerant JSON Lines / CSV reader, one
    {"text": str | None, MALFORMED_COLUMN: str | None} per row; the second names the file, line and problem of a
    row that could not be parsed.
"""

from __future__ import annotations

import bz2
import csv
import glob
import gzip
import hashlib
import io
import itertools
import json
import lzma
import os
import zlib
from collections.abc import Iterator
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
# The `datasets` builder of each format. Text sources read jsonl and csv with the tolerant readers below instead
# (they count and drop malformed rows); fine-tuning's labeled files, which need every column, use the builders.
DATASETS_BUILDER = {"text": "text", "paragraphs": "text", "jsonl": "json", "csv": "csv", "parquet": "parquet"}
TOLERANT_FORMATS = ("jsonl", "csv")  # text sources in these formats go through `read_rows`
CLEANING_VERSION = 2
READER_VERSION = 1  # part of the tolerant readers' cache key: bump it when what they yield changes
# The raw rows of the tolerant readers carry, next to "text", where and why a row could not be parsed (None when
# it could): the cleaner drops those rows and the report counts them, also when the cleaned data comes from cache.
MALFORMED_COLUMN = "__hf_pretrain_malformed__"
MALFORMED_EXAMPLES = 3  # how many malformed rows the report names
COLUMN_CHECK_ROWS = 100  # JSON objects read per file to decide that the text column is missing, not just empty
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


# --------------------------------------------------------------------------------------------------- tolerant readers
# What a truncated or corrupt compressed file raises part-way through (gzip: EOFError, BadGzipFile (an OSError)
# or zlib.error; xz: LZMAError; zstd/lz4 through Arrow: ArrowInvalid, a ValueError).
READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError)
RAW_FEATURES = datasets.Features({"text": datasets.Value("string"), MALFORMED_COLUMN: datasets.Value("string")})


def open_bytes(path: str):
    """A binary file object of the file's content, decompressed by its suffix (those `infer_format` ignores)."""
    name = path.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".bz2"):
        return bz2.open(path, "rb")
    if name.endswith(".xz"):
        return lzma.open(path, "rb")
    if name.endswith((".zst", ".lz4")):  # no standard-library codec; Arrow has both
        return io.BufferedReader(pa.input_stream(path, compression="detect"))
    return open(path, "rb")


def read_problem(error: Exception) -> str:
    return f"the rest of the file could not be read ({type(error).__name__}: {error})"


def json_text(value) -> str | None:
    """The text of a JSON value: a string as it is, null as missing, anything else as its JSON text.

    A JSON escape such as "\\ud800" decodes to a lone surrogate, which no UTF-8 writer accepts: it is replaced
    (and so counted as invalid UTF-8). An ASCII string cannot hold one, and `isascii` costs nothing."""
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text


def json_records(path: str) -> Iterator[tuple[str, object, str | None]]:
    """(location, parsed value, problem) per JSON Lines row of a file; the value is None when there is a problem.

    Each line is decoded on its own (invalid UTF-8 replaced) and parsed with strict=False, which lets raw control
    characters such as NUL stand inside strings (the cleaner removes and counts them). A file that starts with
    "[" and parses as one JSON array gives its items (the `.json` extension covers such files too)."""
    number = 0
    try:
        with open_bytes(path) as stream:
            first = stream.readline().removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark
            rest = None
            if first.lstrip().startswith(b"["):
                rest = stream.read()
                try:
                    items = json.loads((first + rest).decode("utf-8", "replace"), strict=False)
                except json.JSONDecodeError:
                    items = None  # rows after all, the first one malformed
                if isinstance(items, list):
                    for index, item in enumerate(items):
                        yield f"{path}: item {index}", item, None
                    return
            for number, raw in enumerate(itertools.chain([first], stream if rest is None else io.BytesIO(rest)), 1):
                line = raw.decode("utf-8", "replace")
                if line.strip():  # a blank line holds no row
                    yield from parse_json_line(f"{path}:{number}", line)
    except READ_ERRORS as error:
        yield f"{path}:{number + 1}", None, read_problem(error)


def parse_json_line(location: str, line: str) -> Iterator[tuple[str, object, str | None]]:
    try:
        yield location, json.loads(line, strict=False), None
    except json.JSONDecodeError as error:
        yield location, None, f"not valid JSON: {error.msg} (column {error.colno})"


def jsonl_rows(path: str, text_column: str) -> Iterator[dict]:
    for location, value, problem in json_records(path):
        if problem is None and not isinstance(value, dict):
            problem = f"not a JSON object (a JSON {JSON_TYPE_NAMES.get(type(value), type(value).__name__)})"
        if problem is not None:
            yield {"text": None, MALFORMED_COLUMN: f"{location}: {problem}"}
        else:
            yield {"text": json_text(value.get(text_column)), MALFORMED_COLUMN: None}


JSON_TYPE_NAMES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


def csv_rows(path: str, text_column: str) -> Iterator[dict]:
    """The rows of a CSV file (header first, RFC 4180 quoting, fields may span lines), tolerant of dirt.

    A row whose field count differs from the header's is malformed: which field is extra or missing cannot be
    told, so its text column cannot be trusted. An empty cell is missing (None), as in pandas. The file is decoded
    with invalid UTF-8 replaced; a byte-order mark is dropped. Raises ValueError when the header lacks
    text_column."""
    # Documents can be long; the csv module refuses fields over 128 KiB by default (max_document_chars splits
    # them later). A process-wide setting, only ever raised here.
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
    with open_bytes(path) as stream:
        text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline="")
        consumed: list[str] = []  # the lines the current record took: line numbers and end-of-file detection
        ended = False

        def lines():
            nonlocal ended
            for line in text:
                consumed.append(line)
                yield line
            ended = True

        reader = csv.reader(lines())
        header, column, number = None, None, 1
        while True:
            consumed.clear()
            try:
                fields = next(reader)
                problem = None
            except StopIteration:
                return
            except csv.Error as error:
                fields, problem = None, f"not valid CSV ({error})"
            except READ_ERRORS as error:
                yield {"text": None, MALFORMED_COLUMN: f"{path}:{number}: {read_problem(error)}"}
                return
            location, number = f"{path}:{number}", number + len(consumed)
            if problem is None and ended:
                # The csv module asks for another line only inside a quoted field; at the end of the file
                # that is a quote left open (a cut-off file), and the field has swallowed the rest of it.
                problem = "a quoted field is not closed before the end of the file"
            if header is None and problem is None:
                header = fields
                if text_column not in header:
                    raise ValueError(
                        f"text_column={text_column!r} is not a column of the data; available columns: {header} "
                        f"(the header of {path!r})."
                    )
                column = header.index(text_column)
                continue
            if problem is None and not fields:
                continue  # a blank line holds no row
            if problem is None and len(fields) != len(header):
                problem = f"expected {len(header)} fields as in the header, found {len(fields)}"
            if problem is not None:
                yield {"text": None, MALFORMED_COLUMN: f"{location}: {problem}"}
            else:
                yield {"text": fields[column] or None, MALFORMED_COLUMN: None}


def read_rows(path: str, fmt: str, text_column: str) -> Iterator[dict]:
    return jsonl_rows(path, text_column) if fmt == "jsonl" else csv_rows(path, text_column)


def read_files(files: list[str], fmt: str, text_column: str) -> Iterator[dict]:
    """The generator behind `read_tolerant` (module level, so that `datasets` can pickle it)."""
    for path in files:
        yield from read_rows(path, fmt, text_column)


def check_files(files: list[str], fmt: str, text_column: str) -> bool:
    """Before any work: raise a clear error when a file lacks text_column; return whether any file has a row.

    A CSV header names its columns. A JSON Lines file has no header: the column is taken to be missing when none
    of the file's first COLUMN_CHECK_ROWS objects has it (a few rows without it are only missing values)."""
    has_rows = False
    for path in files:
        seen: dict[str, None] = {}
        objects = 0
        rows = csv_rows(path, text_column) if fmt == "csv" else json_records(path)
        for record in rows:
            has_rows = True
            if fmt == "csv":
                break
            value = record[1]
            if isinstance(value, dict):
                if text_column in value:
                    break
                seen.update(dict.fromkeys(value))
                objects += 1
                if objects == COLUMN_CHECK_ROWS:
                    break
        else:
            if seen:
                raise ValueError(
                    f"text_column={text_column!r} is not a column of the data; available columns: {list(seen)} "
                    f"(the keys of the first {objects} JSON object(s) of {path!r}, none of which has it)."
                )
        rows.close()
    return has_rows


def read_tolerant(files: list[str], fmt: str, text_column: str, streaming: bool):
    """The raw rows of JSON Lines / CSV files as a Dataset (cached like the `datasets` builders' results) or an
    IterableDataset: columns "text" and MALFORMED_COLUMN."""
    has_rows = check_files(files, fmt, text_column)
    gen_kwargs = {"files": files, "fmt": fmt, "text_column": text_column}
    if streaming:  # without features: encoding and decoding each row by them would cost 3x the reading
        return datasets.IterableDataset.from_generator(read_files, gen_kwargs=gen_kwargs)
    if not has_rows:  # `datasets` cannot build a dataset from a generator that yields nothing
        return datasets.Dataset.from_dict({"text": [], MALFORMED_COLUMN: []}, features=RAW_FEATURES)
    # The cache key names each file's size and modification time, as the `datasets` builders' keys do: a file
    # edited in place is read again.
    stats = [(path, os.stat(path).st_size, os.stat(path).st_mtime_ns) for path in files]
    key = json.dumps([READER_VERSION, fmt, text_column, stats])
    return datasets.Dataset.from_generator(read_files, features=RAW_FEATURES, gen_kwargs=gen_kwargs,
                                           fingerprint=hashlib.sha256(key.encode()).hexdigest()[:16])


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

