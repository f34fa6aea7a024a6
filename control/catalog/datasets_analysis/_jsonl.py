"""JSON Lines, read line by line with msgspec and batched into Arrow.

``pyarrow.json`` would read the whole file into memory and reports no line
numbers, hence this. A key whose values mix JSON types within a batch (1 and
"1", or objects with clashing fields) becomes a string column holding the
values' JSON text, so one odd record never fails the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa

from control.catalog.datasets_analysis.errors import (
    InvalidEncoding,
    InvalidJsonLine,
    LineTooLong,
    NonObjectLine,
)

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()
_JSON_KIND = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}


def iter_jsonl(path: Path, *, batch_rows: int, max_line_bytes: int) -> Iterator[pa.RecordBatch]:
    rows: list[dict[str, Any]] = []
    with path.open("rb") as handle:
        line = 0
        while raw := handle.readline(max_line_bytes + 1):
            line += 1
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                raise LineTooLong(max_line_bytes, line=line)
            text = raw.strip()
            if line == 1 and text.startswith(b"\xef\xbb\xbf"):
                text = text[3:]
            if not text:
                continue  # blank lines (a trailing newline, say) carry no record
            rows.append(_decode(text, line))
            if len(rows) >= batch_rows:
                yield to_batch(rows)
                rows = []
    if rows:
        yield to_batch(rows)


def _decode(text: bytes, line: int) -> dict[str, Any]:
    try:
        value = _decoder.decode(text)
    except UnicodeDecodeError as exc:  # msgspec < 0.19 raises this for invalid UTF-8 inside a string
        raise InvalidEncoding(f"invalid UTF-8 at byte {exc.start} of the line", line=line) from None
    except msgspec.DecodeError as exc:
        # Newer msgspec reports invalid UTF-8 inside a string as a plain DecodeError; look for it
        # ourselves (only on this error path) so both versions give the same answer.
        _check_encoding(text, line)
        raise InvalidJsonLine(f"invalid JSON: {exc}", line=line) from None
    if not isinstance(value, dict):
        kind = "null" if value is None else _JSON_KIND.get(type(value), type(value).__name__)
        hint = "; JSON Lines needs one object per line, not one array" if isinstance(value, list) else ""
        raise NonObjectLine(f"expected a JSON object, found {kind}{hint}", line=line)
    return value


def _check_encoding(text: bytes, line: int) -> None:
    if b"\x00" in text:
        raise InvalidEncoding("NUL byte: the line is binary, not JSON text", line=line)
    try:
        text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEncoding(f"invalid UTF-8 at byte {exc.start} of the line", line=line) from None


def to_batch(rows: list[dict[str, Any]]) -> pa.RecordBatch:
    names = list(dict.fromkeys(key for row in rows for key in row))
    arrays = [_column([row.get(name) for row in rows]) for name in names]
    return pa.RecordBatch.from_arrays(arrays, names=names)


def _column(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
        text = [v if v is None or isinstance(v, str) else _encoder.encode(v).decode() for v in values]
        return pa.array(text, pa.string())
