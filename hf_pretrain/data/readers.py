"""Tolerant readers of JSON Lines and CSV text files: one bad line makes the `datasets` JSON builder fail the whole
load and its CSV builder skip rows with only a warning, so these read every row they can and mark the others
malformed (a line that is not JSON, a JSON line that is not an object, a CSV row whose field count differs from
the header's, a quote left open at the end of a file, a compressed file cut short), naming the file, line and
problem; the cleaner (data/cleaning.py) drops and counts them. Blank lines hold no row and are skipped (as pandas
and Arrow skip them). Compressed files are read by their suffix.

Public API
----------
`read_rows(path, fmt, text_column) -> Iterator[dict]`: one {"text": str | None, MALFORMED_COLUMN: str | None} per
    row; the second names the file, line and problem of a row that could not be parsed.
`read_tolerant(files, fmt, text_column, streaming)`: those rows as a (cached) Dataset or an IterableDataset.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import hashlib
import io
import itertools
import json
import lzma
import os
import zlib
from collections.abc import Iterator

import datasets
import pyarrow as pa

from .cleaning import MALFORMED_COLUMN

TOLERANT_FORMATS = ("jsonl", "csv")  # text sources in these formats go through `read_rows`
READER_VERSION = 1  # part of the tolerant readers' cache key: bump it when what they yield changes
COLUMN_CHECK_ROWS = 100  # JSON objects read per file to decide that the text column is missing, not just empty

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
