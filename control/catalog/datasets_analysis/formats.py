"""Which format a dataset file is in, and its record batches, read as a stream.

Every reader yields ``pyarrow.RecordBatch`` objects of at most a few MiB, so a
file of any size is analysed in bounded memory. The schema may differ between
batches (a JSONL key that first appears late; a CSV column that turns out to
hold text after many numeric rows); consumers merge with ``merge_types``.

A few bytes can declare gigabytes (a Parquet cell that zstd shrank 30,000-fold,
10,000 distinct JSONL keys that become 10,000 columns of 10,000 rows), so
``ReadOptions`` also caps what a file may declare: columns, nesting depth,
decompressed bytes and compression ratio (refused with ``TooManyColumns``,
``TooDeep``, ``TooLargeToAnalyse``), and how many rows are analysed: beyond
``max_rows`` the readers only count (and, for CSV and JSONL, still parse) the
rest, and ``Batches.total_rows`` says how many rows the file holds.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Literal

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from control.catalog.datasets_analysis import _csv, _jsonl
from control.catalog.datasets_analysis.errors import (
    CorruptParquet,
    EmptyFile,
    FormatMismatch,
    InvalidEncoding,
    TooDeep,
    TooLargeToAnalyse,
    TooManyColumns,
    UnsupportedFormat,
)

__all__ = ["EXTENSIONS", "Batches", "DatasetFormat", "ReadOptions", "detect_format", "iter_batches"]

DatasetFormat = Literal["csv", "jsonl", "parquet"]
EXTENSIONS: dict[str, DatasetFormat] = {
    ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
    ".parquet": "parquet", ".pq": "parquet",
}
_MAGIC = b"PAR1"
_SNIFF_BYTES = 64 * 1024


class ReadOptions(msgspec.Struct, frozen=True, kw_only=True):
    """Limits that bound memory per batch; a record longer than the limit is refused."""

    batch_rows: int = 10_000  # JSONL and Parquet rows per batch
    # CSV block size, which is also the longest CSV record accepted. Arrow's reader
    # prefetches up to 32 blocks in the background, so this bounds CSV memory to ~32x it.
    csv_block_bytes: int = 1024 * 1024
    max_line_bytes: int = 8 * 1024 * 1024  # longest JSONL line accepted
    csv_delimiter: str = ","
    # What a file may declare. Past these the file is refused, naming the limit.
    max_columns: int = 2048  # CSV header fields, distinct JSONL keys, Parquet leaf columns
    max_depth: int = 64  # JSON / Parquet nesting levels (a flat JSONL object is depth 1)
    max_decompressed_bytes: int = 4 << 30  # Parquet: uncompressed size its metadata declares
    max_compression_ratio: float = 100.0  # Parquet: declared uncompressed size / file size ...
    ratio_floor_bytes: int = 64 << 20  # ... checked only above this uncompressed size
    # Rows analysed (validated, scanned, profiled); the rest is only counted. None: every row.
    max_rows: int | None = None


class Batches(Iterator[pa.RecordBatch]):
    """The record batches of the analysed rows; once exhausted, ``total_rows`` holds the file's row count."""

    def __init__(self, batches: Generator[pa.RecordBatch, None, int]) -> None:
        self._batches = batches
        self.total_rows: int | None = None

    def __iter__(self) -> Batches:
        return self

    def __next__(self) -> pa.RecordBatch:
        try:
            return next(self._batches)
        except StopIteration as stop:
            self.total_rows = stop.value
            raise


def detect_format(
    path: str | os.PathLike[str], *, filename: str | None = None, declared: str | None = None
) -> DatasetFormat:
    """The format named by ``declared`` or the file name, checked against the content.

    Without either, the content decides: Parquet magic, a leading ``{`` (JSONL),
    otherwise CSV. Raises ``EmptyFile``, ``UnsupportedFormat``, ``FormatMismatch``,
    ``CorruptParquet`` or ``InvalidEncoding`` before any parsing starts.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise EmptyFile("the file is empty")
    with path.open("rb") as handle:
        head = handle.read(_SNIFF_BYTES)
        handle.seek(max(0, size - len(_MAGIC)))
        tail = handle.read(len(_MAGIC))

    if declared is not None and declared not in ("csv", "jsonl", "parquet"):
        raise UnsupportedFormat(f"unsupported format {declared!r}; use csv, jsonl or parquet")
    by_name = _format_from_name(filename or path.name, required=filename is not None and declared is None)
    if declared is not None and by_name is not None and declared != by_name:
        raise FormatMismatch(f"the file name says {by_name} but the declared format is {declared}")
    expected: DatasetFormat | None = declared or by_name  # type: ignore[assignment]

    if head.startswith(_MAGIC):
        if expected not in (None, "parquet"):
            raise FormatMismatch(f"the content is Parquet, not {expected}")
        if tail != _MAGIC:
            raise CorruptParquet("the Parquet footer is missing: the file is truncated")
        return "parquet"
    if expected == "parquet":
        raise CorruptParquet("the file does not start with the Parquet magic bytes")
    if b"\x00" in head:
        line = head.count(b"\n", 0, head.index(b"\x00")) + 1
        raise InvalidEncoding("the file contains NUL bytes: it is binary, not text", line=line)
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not text:
        raise EmptyFile("the file holds only whitespace")
    if expected is not None:
        return expected
    return "jsonl" if text.startswith(b"{") else "csv"


def _format_from_name(name: str, *, required: bool) -> DatasetFormat | None:
    suffix = Path(name).suffix.lower()
    fmt = EXTENSIONS.get(suffix)
    if fmt is None and required:
        raise UnsupportedFormat(
            f"file extension {suffix or '(none)'!r} is not supported; use " + ", ".join(sorted(EXTENSIONS))
        )
    return fmt


def iter_batches(
    path: str | os.PathLike[str], fmt: DatasetFormat, options: ReadOptions | None = None
) -> Batches:
    """Stream the file as record batches; raises a ``DatasetError`` subclass at the first bad record."""
    o = options or ReadOptions()
    if fmt == "csv":
        return Batches(_csv.iter_csv(Path(path), delimiter=o.csv_delimiter, block_bytes=o.csv_block_bytes,
                                     max_columns=o.max_columns, max_rows=o.max_rows))
    if fmt == "jsonl":
        return Batches(_jsonl.iter_jsonl(Path(path), batch_rows=o.batch_rows, max_line_bytes=o.max_line_bytes,
                                         max_columns=o.max_columns, max_depth=o.max_depth, max_rows=o.max_rows))
    if fmt == "parquet":
        return Batches(_iter_parquet(Path(path), o))
    raise UnsupportedFormat(f"unsupported format {fmt!r}")


_BATCH_TARGET_BYTES = 64 << 20  # Parquet rows per batch shrink so a batch of wide rows stays near this


def _iter_parquet(path: Path, options: ReadOptions) -> Generator[pa.RecordBatch, None, int]:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise CorruptParquet(f"the Parquet file cannot be opened: {exc}") from exc
    declared_bytes = _check_parquet_declarations(parquet, path.stat().st_size, options)
    total = parquet.metadata.num_rows
    row_bytes = declared_bytes / total if total else 0
    batch_rows = max(1, min(options.batch_rows, int(_BATCH_TARGET_BYTES / row_bytes) if row_bytes else 1 << 30))
    done = 0
    batches = parquet.iter_batches(batch_size=batch_rows)
    while options.max_rows is None or done < options.max_rows:
        try:
            batch = next(batches, None)
        except (pa.ArrowException, OSError) as exc:
            raise CorruptParquet(f"the Parquet data is corrupt: {exc}", row=done + 1) from exc
        if batch is None:
            break
        if options.max_rows is not None and done + batch.num_rows > options.max_rows:
            batch = batch.slice(0, options.max_rows - done)
        done += batch.num_rows
        yield _decode_dictionaries(batch)
    return max(total, done)  # the footer's count, unless the pages held more


def _check_parquet_declarations(parquet: pq.ParquetFile, file_bytes: int, options: ReadOptions) -> int:
    """Refuse a footer that declares more than the limits allow; returns the declared uncompressed bytes."""
    meta = parquet.metadata
    if meta.num_columns > options.max_columns:
        raise TooManyColumns(f"the file has {meta.num_columns} leaf columns; the limit is {options.max_columns}")
    depth = max((_type_depth(field.type) for field in parquet.schema_arrow), default=0) + 1
    if depth > options.max_depth:
        raise TooDeep(f"the schema nests {depth} levels deep; the limit is {options.max_depth}")
    declared = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    if declared > options.max_decompressed_bytes:
        raise TooLargeToAnalyse(f"the file declares {declared} bytes uncompressed; the limit is "
                                f"{options.max_decompressed_bytes}")
    ratio = declared / max(file_bytes, 1)
    if declared > options.ratio_floor_bytes and ratio > options.max_compression_ratio:
        raise TooLargeToAnalyse(f"the file declares {declared} bytes uncompressed from {file_bytes} "
                                f"({ratio:.0f}x); the limit is {options.max_compression_ratio:g}x")
    return declared


def _type_depth(root: pa.DataType) -> int:
    """Nesting levels of an Arrow type (a scalar is 0), walked without recursion."""
    deepest, stack = 0, [(root, 0)]
    while stack:
        typ, depth = stack.pop()
        deepest = max(deepest, depth)
        if pa.types.is_struct(typ):
            stack.extend((typ.field(i).type, depth + 1) for i in range(typ.num_fields))
        elif pa.types.is_map(typ):
            stack.extend(((typ.key_type, depth + 1), (typ.item_type, depth + 1)))
        elif pa.types.is_list(typ) or pa.types.is_large_list(typ) or pa.types.is_fixed_size_list(typ):
            stack.append((typ.value_type, depth + 1))
    return deepest


def _decode_dictionaries(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Categorical columns come back dictionary-encoded; the analysis wants plain values."""
    if not any(pa.types.is_dictionary(f.type) for f in batch.schema):
        return batch
    columns = [c.dictionary_decode() if pa.types.is_dictionary(c.type) else c for c in batch.columns]
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)
