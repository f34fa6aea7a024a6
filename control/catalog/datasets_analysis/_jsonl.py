"""JSON Lines, read line by line with msgspec and batched into Arrow.

``pyarrow.json`` would read the whole file into memory and reports no line
numbers, hence this. A key whose values mix JSON types within a batch (1 and
"1", or objects with clashing fields) becomes a string column holding the
values' JSON text, so one odd record never fails the file.

Each batch is also flushed when rows x keys reaches ``_MAX_BATCH_CELLS``: a
batch becomes one Arrow column per key, so many sparse keys cost rows x keys
cells, not the size of the text.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa

from control.catalog.datasets_analysis.errors import (
    InvalidEncoding,
    InvalidJsonLine,
    LineTooLong,
    NonObjectLine,
    TooDeep,
    TooManyColumns,
)

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()
_JSON_KIND = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}
_MAX_BATCH_CELLS = 1 << 20


def iter_jsonl(path: Path, *, batch_rows: int, max_line_bytes: int, max_columns: int = 2048, max_depth: int = 64,
               max_rows: int | None = None) -> Generator[pa.RecordBatch, None, int]:
    """Batches of the first ``max_rows`` records; every later line is still decoded and checked, only counted.

    Returns the number of records in the file.
    """
    rows: list[dict[str, Any]] = []
    columns: set[str] = set()  # every key seen so far, for the column cap
    batch_keys: set[str] = set()
    count = 0
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
            value = _decode(text, line, max_depth)
            count += 1
            if max_rows is not None and count > max_rows:
                continue
            new = value.keys() - columns
            if new:
                columns |= new
                if len(columns) > max_columns:
                    raise TooManyColumns(f"more than {max_columns} distinct keys (columns)", line=line)
            rows.append(value)
            batch_keys |= value.keys()
            if len(rows) >= batch_rows or len(rows) * len(batch_keys) >= _MAX_BATCH_CELLS:
                yield to_batch(rows)
                rows, batch_keys = [], set()
    if rows:
        yield to_batch(rows)
    return count


def _decode(text: bytes, line: int, max_depth: int) -> dict[str, Any]:
    try:
        value = _decoder.decode(text)
    except RecursionError:  # msgspec gives up on very deep nesting (~1000 levels) this way
        raise TooDeep(f"JSON nested too deeply to decode; the limit is {max_depth} levels", line=line) from None
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
    # A value nests no deeper than its count of brackets: only walk lines that might be too deep.
    if text.count(b"{") + text.count(b"[") > max_depth and _depth_over(value, max_depth):
        raise TooDeep(f"JSON nested more than {max_depth} levels deep", line=line)
    return value


def _depth_over(value: Any, limit: int) -> bool:
    """Whether ``value`` nests more than ``limit`` levels (the top-level object is level 1); no recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


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
