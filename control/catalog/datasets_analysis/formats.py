"""Which format a dataset file is in, and its record batches, read as a stream.

Every reader yields ``pyarrow.RecordBatch`` objects of at most a few MiB, so a
file of any size is analysed in bounded memory. The schema may differ between
batches (a JSONL key that first appears late; a CSV column that turns out to
hold text after many numeric rows); consumers merge with ``merge_types``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
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
    UnsupportedFormat,
)

__all__ = ["EXTENSIONS", "DatasetFormat", "ReadOptions", "detect_format", "iter_batches"]

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
) -> Iterator[pa.RecordBatch]:
    """Stream the file as record batches; raises a ``DatasetError`` subclass at the first bad record."""
    options = options or ReadOptions()
    if fmt == "csv":
        return _csv.iter_csv(
            Path(path), delimiter=options.csv_delimiter, block_bytes=options.csv_block_bytes
        )
    if fmt == "jsonl":
        return _jsonl.iter_jsonl(
            Path(path), batch_rows=options.batch_rows, max_line_bytes=options.max_line_bytes
        )
    if fmt == "parquet":
        return _iter_parquet(Path(path), batch_rows=options.batch_rows)
    raise UnsupportedFormat(f"unsupported format {fmt!r}")


def _iter_parquet(path: Path, *, batch_rows: int) -> Iterator[pa.RecordBatch]:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise CorruptParquet(f"the Parquet file cannot be opened: {exc}") from exc
    done = 0
    batches = parquet.iter_batches(batch_size=batch_rows)
    while True:
        try:
            batch = next(batches, None)
        except (pa.ArrowException, OSError) as exc:
            raise CorruptParquet(f"the Parquet data is corrupt: {exc}", row=done + 1) from exc
        if batch is None:
            return
        done += batch.num_rows
        yield _decode_dictionaries(batch)


def _decode_dictionaries(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Categorical columns come back dictionary-encoded; the analysis wants plain values."""
    if not any(pa.types.is_dictionary(f.type) for f in batch.schema):
        return batch
    columns = [c.dictionary_decode() if pa.types.is_dictionary(c.type) else c for c in batch.columns]
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)
