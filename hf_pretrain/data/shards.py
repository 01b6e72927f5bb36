"""Shards of a streamed corpus: the pieces its readers are dealt, and the documents of one piece from an offset.

A source is cut so that every reader (a DataLoader worker of a process) reads pieces of its own, and so that a
saved position inside a piece can be reopened without reading what came before it:

* uncompressed line files (text: one document per line; JSON Lines; CSV whose quoted fields never hold a line
  break) are cut into byte ranges. A line belongs to the range holding its first byte, so every line is read by
  exactly one range; the offset is a byte offset (a seek: constant time).
* Parquet files are cut into their row groups; the offset is a row of the group (the group is read again: the
  cost of one row group).
* Compressed line files stay whole (a compressed stream cannot be entered in the middle); the offset is the
  position in the decompressed bytes, reached by decompressing up to it (bounded by one file).
* `paragraphs` files, JSON-array files and CSV files with line breaks inside quoted fields stay whole; the offset
  is the number of records read (parsed again up to it on resume: bounded by one file).
* Documents held in memory (the built-in corpus) are cut into index ranges.

The raw values read here are cleaned by the reader (data/cleaning.py); malformed rows are marked as the tolerant
readers mark them (data/readers.py, whose parsing functions are used here), never fatal. Files may be fsspec URLs
(`hf://datasets/...`): a path with a protocol is opened through fsspec, any other with `open`.

Public API
----------
`Shard`: one piece: its file (or None for texts in memory), kind, start/end, and its file's size and mtime.
`list_shards(source, readers) -> list[Shard]`: the source's pieces, at least `readers` where its files allow.
`read_shard(shard, source, offset) -> Iterator[tuple[list[tuple[object, str | None]], int]]`: from `offset`, each
    entry's (raw value, malformed problem or None) pairs (a text line may hold several documents) and the offset
    after the entry.
`shards_digest(shards) -> str`: a hash of the pieces and their files' sizes and mtimes (an edited file changes it).
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from .cleaning import MALFORMED_COLUMN, text_values
from .mixture import TextSource
from .readers import (
    JSON_TYPE_NAMES,
    csv_rows,
    json_text,
    jsonl_rows,
    open_bytes,
    parse_json_line,
)
from .sources import COMPRESSION_SUFFIXES

logger = logging.getLogger(__name__)

# A reader's unit of work. Small enough that readers stay balanced (a reader's share of an epoch differs from
# another's by at most one shard), large enough that opening a shard costs nothing next to reading it.
TARGET_SHARD_BYTES = 64 * 2**20
# Pieces smaller than this are cut only where needed to give every reader a shard.
MIN_SHARD_BYTES = 2**20
# Shards per reader aimed for when the bytes allow it: readers then finish an epoch within a quarter of a share.
SHARDS_PER_READER = 4
MEMORY_SHARD_DOCUMENTS = 1000  # documents per index range of an in-memory source
LINE_FORMATS = ("text", "jsonl", "csv")
Entry = tuple[list[tuple[object, "str | None"]], int]


@dataclass(frozen=True)
class Shard:
    """One piece of a source. kind: "lines" (byte range [start, end) of a line file; end None: to its end),
    "rows" (row group `start` of a Parquet file), "records" (a whole file read record by record) or "memory"
    (documents [start, end) of the source's texts). size and mtime are the file's (None for texts in memory)."""

    kind: str
    path: str | None
    start: int
    end: int | None
    size: int | None
    mtime: int | float | None


# --------------------------------------------------------------------------------------------------- opening
def has_protocol(path: str) -> bool:
    return "://" in path


def open_binary(path: str, decompress: bool):
    """A binary file object: fsspec for URLs (decompressed by suffix when asked), `open` otherwise."""
    if has_protocol(path):
        import fsspec

        return fsspec.open(path, "rb", compression="infer" if decompress else None).open()
    return open_bytes(path) if decompress else open(path, "rb")


def file_stats(path: str) -> tuple[int, int | float | None]:
    """(size in bytes, modification time) of a local file or a URL (whose filesystem may not know an mtime)."""
    if has_protocol(path):
        import fsspec

        filesystem, inner = fsspec.core.url_to_fs(path)
        info = filesystem.info(inner)
        return int(info["size"]), info.get("mtime") or info.get("last_modified")
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns


def is_compressed(path: str) -> bool:
    return path.lower().endswith(COMPRESSION_SUFFIXES)


def first_bytes(path: str, count: int = 4096) -> bytes:
    with open_binary(path, decompress=True) as stream:
        return stream.read(count).removeprefix(b"\xef\xbb\xbf")


def csv_header(path: str) -> list[str]:
    with open_binary(path, decompress=True) as stream:
        line = stream.readline().decode("utf-8-sig", "replace")
    return next(csv.reader([line]), [])


def csv_lines_are_records(path: str) -> bool:
    """Whether every line of a CSV file is a whole record: no quoted field holds a line break. A line with an odd
    number of quote characters opens a quoted field that goes on past it (an escaped quote is doubled, so it
    never changes the parity). Reads the file once, when the shards are listed."""
    with open_binary(path, decompress=False) as stream:
        return all(line.count(b'"') % 2 == 0 for line in stream)


# --------------------------------------------------------------------------------------------------- listing
def list_shards(source: TextSource, readers: int) -> list[Shard]:
    """The source's shards, in a fixed order (every rank lists the same): at least `readers` when its files allow
    it, and about SHARDS_PER_READER per reader when its bytes do (module docstring for what is cut how)."""
    if source.texts is not None:
        count = len(source.texts)
        pieces = min(count, max(math.ceil(count / MEMORY_SHARD_DOCUMENTS), readers * SHARDS_PER_READER))
        bounds = [count * i // max(pieces, 1) for i in range(pieces + 1)]
        return [Shard("memory", None, a, b, None, None) for a, b in itertools.pairwise(bounds) if b > a]
    fixed: list[Shard] = []  # row groups and whole files
    splittable: list[tuple[str, int, int | float | None]] = []  # uncompressed line files
    for path in source.files:
        size, mtime = file_stats(path)
        kind = file_kind(source, path)
        if kind == "rows":
            fixed.extend(Shard("rows", path, group, None, size, mtime) for group in range(parquet_row_groups(source, path)))
        elif kind == "ranges":
            splittable.append((path, size, mtime))
        else:
            fixed.append(Shard(kind, path, 0, None, size, mtime))
    shards = []
    counts = piece_counts([size for _, size, _ in splittable], len(fixed), readers)
    for (path, size, mtime), pieces in zip(splittable, counts):
        bounds = [size * i // pieces for i in range(pieces + 1)]
        shards.extend(Shard("lines", path, a, b, size, mtime) for a, b in itertools.pairwise(bounds))
    order = {path: number for number, path in enumerate(source.files)}
    return sorted(shards + fixed, key=lambda shard: (order[shard.path], shard.start))


def piece_counts(sizes: list[int], fixed: int, readers: int) -> list[int]:
    """How many byte ranges each splittable file is cut into, besides `fixed` shards that cannot be cut."""
    total = sum(sizes)
    counts = [max(1, math.ceil(size / TARGET_SHARD_BYTES)) for size in sizes]
    if not total:
        return counts
    wanted = readers * SHARDS_PER_READER - fixed
    if sum(counts) < wanted:  # more, smaller pieces, but not below MIN_SHARD_BYTES
        counts = [max(c, min(math.ceil(wanted * s / total), s // MIN_SHARD_BYTES)) for c, s in zip(counts, sizes)]
    if sum(counts) + fixed < readers:  # every reader needs a shard: cut smaller pieces where that is what it takes
        needed = readers - fixed
        counts = [max(c, math.ceil(needed * s / total)) for c, s in zip(counts, sizes)]
    return [max(1, min(c, s)) for c, s in zip(counts, sizes)]


def file_kind(source: TextSource, path: str) -> str:
    """"rows" (Parquet), "ranges" (an uncompressed line file), "lines" (a compressed one) or "records"."""
    fmt = source.format
    if fmt == "parquet":
        return "rows"
    if fmt == "paragraphs":
        return "records"
    if fmt == "jsonl" and first_bytes(path).lstrip().startswith(b"["):
        return records_only(path, "a JSON-array file")
    if fmt == "csv":
        header = csv_header(path)
        if source.text_column not in header:
            raise ValueError(
                f"text_column={source.text_column!r} is not a column of the data; available columns: {header} "
                f"(the header of {path!r})."
            )
        if is_compressed(path) or not csv_lines_are_records(path):
            return records_only(path, "a compressed CSV file or one with line breaks inside quoted fields")
    if fmt not in LINE_FORMATS + ("csv",):
        raise ValueError(f"format={fmt!r} cannot be streamed; allowed: text, paragraphs, jsonl, csv, parquet.")
    return "lines" if is_compressed(path) else "ranges"


def records_only(path: str, what: str) -> str:
    if has_protocol(path):
        raise ValueError(
            f"{path!r} is {what}: it is read whole, record by record, which a stream does from local files only. "
            "Download it, or convert it to JSON Lines or Parquet."
        )
    return "records"


def parquet_row_groups(source: TextSource, path: str) -> int:
    import pyarrow.parquet as pq

    with open_binary(path, decompress=False) as stream:
        parquet = pq.ParquetFile(stream)
        names = parquet.schema_arrow.names
        if source.text_column not in names:
            raise ValueError(
                f"text_column={source.text_column!r} is not a column of the data; available columns: {names} "
                f"(the schema of {path!r})."
            )
        return parquet.metadata.num_row_groups


def shards_digest(shards: list[Shard]) -> str:
    text = json.dumps([asdict(shard) for shard in shards], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------------- reading
def read_shard(shard: Shard, source: TextSource, offset: int) -> Iterator[Entry]:
    """Entries of the shard from `offset` (0: its start): ([(raw value, malformed problem)], offset after)."""
    if shard.kind == "memory":
        for index in range(max(offset, shard.start), shard.end):
            yield [(source.texts[index], None)], index + 1
    elif shard.kind == "rows":
        yield from read_row_group(shard, source, offset)
    elif shard.kind == "records":
        yield from read_records(shard, source, offset)
    else:
        yield from read_lines(shard, source, offset)


def read_row_group(shard: Shard, source: TextSource, offset: int) -> Iterator[Entry]:
    import pyarrow.parquet as pq

    with open_binary(shard.path, decompress=False) as stream:
        table = pq.ParquetFile(stream).read_row_group(shard.start, columns=[source.text_column])
    values = text_values(table.column(source.text_column))  # invalid UTF-8 comes back as bytes, never raises
    for row in range(offset, len(values)):
        yield [(values[row], None)], row + 1


def read_records(shard: Shard, source: TextSource, offset: int) -> Iterator[Entry]:
    """A whole file, record by record; the offset counts records (malformed ones included)."""
    if source.format == "paragraphs":
        records = ({"text": text, MALFORMED_COLUMN: None} for text in paragraphs(shard.path))
    elif source.format == "csv":
        records = csv_rows(shard.path, source.text_column)
    else:
        records = jsonl_rows(shard.path, source.text_column)
    for number, row in enumerate(records, 1):
        if number > offset:
            yield [(row["text"], row[MALFORMED_COLUMN])], number


def paragraphs(path: str) -> Iterator[str]:
    """The documents of a `paragraphs` file as the `datasets` text builder cuts them (sample_by="paragraph"):
    universal newlines, split at blank lines ("\\n\\n"), empty pieces skipped, the last piece kept as it is."""
    with open_binary(path, decompress=True) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="replace")
        pending = ""
        while chunk := text.read(1 << 20):
            pending += chunk + text.readline()  # a chunk ends at a line end, as the builder's do
            *complete, pending = pending.split("\n\n")
            yield from (piece for piece in complete if piece)
        if pending:
            yield pending


def read_lines(shard: Shard, source: TextSource, offset: int) -> Iterator[Entry]:
    """The lines of a byte range (or of a whole compressed file), each parsed by the source's format."""
    parse = LINE_PARSERS[source.format]
    header = None
    if source.format == "csv":
        header = csv_header(shard.path)
        # Documents can be long; the csv module refuses fields over 128 KiB by default (as readers.csv_rows does).
        csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
    with open_binary(shard.path, decompress=shard.end is None) as stream:
        position = offset or shard.start
        if offset or shard.start:
            skip_to(stream, position if offset else shard.start - 1)
            if not offset:  # a line belongs to the range holding its first byte: drop the one started earlier
                position += len(stream.readline()) - 1
        while shard.end is None or position < shard.end:
            line = stream.readline()
            if not line:
                return
            at, position = position, position + len(line)
            if at == 0:
                line = line.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark
                if header is not None:
                    continue  # the CSV header
            yield parse(line, f"{shard.path}: byte {at}", source, header), position


def skip_to(stream, position: int) -> None:
    if stream.seekable():
        stream.seek(position)
        return
    while position > 0:  # a compressed stream without seek: decompress and drop
        position -= len(stream.read(min(position, 1 << 20)) or b"\0" * position)


def text_line(line: bytes, location: str, source: TextSource, header) -> list[tuple[object, str | None]]:
    """A line of a text file as the `datasets` text builder reads it: universal newlines, so a lone "\\r" also
    ends a document."""
    text = line.decode("utf-8", "replace").replace("\r\n", "\n").removesuffix("\n")
    return [(piece, None) for piece in text.replace("\r", "\n").split("\n")]


def json_line(line: bytes, location: str, source: TextSource, header) -> list[tuple[object, str | None]]:
    text = line.decode("utf-8", "replace")
    if not text.strip():
        return []  # a blank line holds no row
    _, value, problem = next(parse_json_line(location, text))
    if problem is None and not isinstance(value, dict):
        problem = f"not a JSON object (a JSON {JSON_TYPE_NAMES.get(type(value), type(value).__name__)})"
    if problem is not None:
        return [(None, f"{location}: {problem}")]
    return [(json_text(value.get(source.text_column)), None)]


def csv_line(line: bytes, location: str, source: TextSource, header) -> list[tuple[object, str | None]]:
    """A CSV record on one line (csv_lines_are_records checked it), judged as readers.csv_rows judges rows."""
    try:
        fields = next(csv.reader([line.decode("utf-8", "replace")]), [])
    except csv.Error as error:
        return [(None, f"{location}: not valid CSV ({error})")]
    if not fields:
        return []  # a blank line holds no row
    if len(fields) != len(header):
        return [(None, f"{location}: expected {len(header)} fields as in the header, found {len(fields)}")]
    return [(fields[header.index(source.text_column)] or None, None)]


LINE_PARSERS = {"text": text_line, "jsonl": json_line, "csv": csv_line}
