"""CSV: pyarrow's streaming reader for speed, Python's csv module to say exactly where it failed.

All columns are read as strings, then each batch is typed here (integer, float,
boolean or string) with a promotion that only widens. Letting pyarrow infer
types would fix them from the first block and fail on, say, a text value at
row 100,000 of a column that started numeric.

pyarrow's errors carry no line numbers, so when it refuses the file we re-read
it with the csv module up to the first bad record (only on that error path).

pyarrow reads NUL bytes as text, so the whole file is scanned for them first
(a C-speed ``find`` per MiB): a NUL anywhere makes the file binary, not CSV.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Generator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from control.catalog.datasets_analysis.errors import (
    DatasetError,
    EmptyFile,
    InvalidEncoding,
    InvalidHeader,
    LineTooLong,
    MalformedData,
    RaggedRow,
    TooManyColumns,
)

# Cells read as null. Deliberately short: 'NA' or 'None' can be real text values.
NULL_VALUES = ["", "NULL", "null", "NaN", "nan", "N/A"]
_INTEGER = r"^-?(?:0|[1-9]\d{0,17})$"  # no leading zeros: '007' is an identifier, not 7
_FLOAT = r"^[-+]?(?:(?:0|[1-9]\d*)(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?$"
_BOOLEAN = r"^(?i:true|false)$"
_ARROW = {"integer": pa.int64(), "float": pa.float64(), "boolean": pa.bool_(), "string": pa.string()}


def iter_csv(path: Path, *, delimiter: str, block_bytes: int, max_columns: int = 2048,
             max_rows: int | None = None) -> Generator[pa.RecordBatch, None, int]:
    """Typed batches of the first ``max_rows`` records; the rest is still parsed, only counted.

    Returns the number of records in the file.
    """
    refuse_nul(path)
    header = _read_header(path, delimiter)
    if len(header) > max_columns:
        raise TooManyColumns(f"the header names {len(header)} columns; the limit is {max_columns}", line=1)
    reader_args = {
        "read_options": pcsv.ReadOptions(block_size=block_bytes, use_threads=False),
        "parse_options": pcsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
        "convert_options": pcsv.ConvertOptions(
            column_types={name: pa.string() for name in header},
            null_values=NULL_VALUES,
            strings_can_be_null=True,
        ),
    }
    typer = _Typer(header)
    total = 0
    try:
        reader = pcsv.open_csv(path, **reader_args)
        for batch in reader:
            room = batch.num_rows if max_rows is None else max_rows - total
            total += batch.num_rows
            if room > 0:
                yield typer.apply(batch if room >= batch.num_rows else batch.slice(0, room))
    except pa.ArrowInvalid as exc:
        raise locate_error(path, delimiter, len(header), block_bytes, str(exc)) from exc
    return total


def refuse_nul(path: Path, chunk_bytes: int = 1 << 20) -> None:
    """Raise ``InvalidEncoding`` with the line of the first NUL byte anywhere in the file."""
    lines = 0
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_bytes):
            at = chunk.find(b"\x00")
            if at >= 0:
                line = lines + chunk.count(b"\n", 0, at) + 1
                raise InvalidEncoding("the file contains NUL bytes: it is binary, not text", line=line)
            lines += chunk.count(b"\n")


def _read_header(path: Path, delimiter: str) -> list[str]:
    with path.open("rb") as handle:
        lines = _Lines(handle)
        try:
            header = next(csv.reader(lines, delimiter=delimiter, strict=True), None)
        except csv.Error as exc:
            raise InvalidHeader(f"the header cannot be parsed: {exc}", line=1) from exc
    if not header:
        raise EmptyFile("the CSV file has no header line")
    seen: set[str] = set()
    for index, name in enumerate(header, start=1):
        if not name.strip():
            raise InvalidHeader(f"column {index} has an empty name", line=1)
        if name in seen:
            raise InvalidHeader(f"column name {name!r} appears twice", line=1)
        seen.add(name)
    return header


class _Typer:
    """Types each batch's string columns, widening per column as later batches demand."""

    def __init__(self, header: list[str]) -> None:
        self._kinds = dict.fromkeys(header, "null")

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        columns = []
        for name, column in zip(batch.schema.names, batch.columns, strict=True):
            kind = self._kinds[name]
            if kind != "string" and column.null_count < len(column):
                kind = _widen(kind, _classify(column))
                self._kinds[name] = kind
            columns.append(_convert(column, kind))
        return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def _classify(column: pa.Array) -> str:
    values = column.drop_null()
    for kind, pattern in (("integer", _INTEGER), ("float", _FLOAT), ("boolean", _BOOLEAN)):
        if pc.all(pc.match_substring_regex(values, pattern)).as_py():
            return kind
    return "string"


def _widen(current: str, seen: str) -> str:
    if current in ("null", seen):
        return seen
    if {current, seen} == {"integer", "float"}:
        return "float"
    return "string"


def _convert(column: pa.Array, kind: str) -> pa.Array:
    if kind == "null":
        return pa.nulls(len(column))  # no value seen yet: typed later, must not pin the column to string
    if kind == "string":
        return column
    if kind == "boolean":
        return pc.equal(pc.utf8_lower(column), "true")
    return pc.cast(column, _ARROW[kind])


class _Lines:
    """Decoded lines of a binary file, counting line numbers and bytes for error reports."""

    def __init__(self, handle: object) -> None:
        self._handle = handle
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")("strict")
        self.line = 0
        self.bytes_read = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        raw = self._handle.readline()  # type: ignore[attr-defined]
        if not raw:
            raise StopIteration
        self.line += 1
        self.bytes_read += len(raw)
        if b"\x00" in raw:
            raise InvalidEncoding("NUL byte: the file is binary, not text", line=self.line)
        try:
            return self._decoder.decode(raw)
        except UnicodeDecodeError as exc:
            raise InvalidEncoding(f"invalid UTF-8 at byte {exc.start} of the line", line=self.line) from None


def locate_error(
    path: Path, delimiter: str, width: int, block_bytes: int, arrow_message: str
) -> DatasetError:
    """Re-read the file with the csv module and describe its first bad record."""
    csv.field_size_limit(max(csv.field_size_limit(), block_bytes))
    with path.open("rb") as handle:
        lines = _Lines(handle)
        reader = csv.reader(lines, delimiter=delimiter, strict=True)
        ended_at, bytes_before = 0, 0
        try:
            for record in reader:
                start = ended_at + 1
                ended_at, size = lines.line, lines.bytes_read - bytes_before
                bytes_before = lines.bytes_read
                if size > block_bytes:
                    return LineTooLong(block_bytes, line=start)
                if record and len(record) != width:
                    return RaggedRow(line=start, expected=width, actual=len(record))
        except DatasetError as exc:
            return exc
        except csv.Error as exc:
            return MalformedData(f"CSV syntax error: {exc}", line=lines.line)
    if "straddl" in arrow_message:
        return LineTooLong(block_bytes, line=ended_at)
    return MalformedData(f"the CSV file cannot be parsed: {arrow_message}")
