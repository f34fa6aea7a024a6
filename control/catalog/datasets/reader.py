"""``catalog.dataset_reader`` (``adapters.adminapi.seams.DATASET_READER``): a ready dataset version's rows.

Evaluation and training read datasets through this seam, never the catalog's tables or files.
``version`` describes a ready version inside the caller's transaction; ``rows`` streams its file
from the object store (local, or S3 through a temporary copy) in file order, parsed off the event
loop, one thread hop per batch.

Values are JSON-like Python, taken from the file as it is rather than from the analysis' Arrow
batches, which exist to profile columns and would change what a caller reads:

* CSV: every cell is the text in the file (``"007"`` and ``"1.50"`` keep their spelling, which an
  exact match against a reference needs); the cells the analysis counts as null (``_csv.NULL_VALUES``,
  e.g. an empty cell) are ``None``. The same pyarrow reader and options as the analysis, without its
  numeric typing, which may differ from one block of the file to the next.
* JSONL: each line decoded by the analysis' own line decoder (``_jsonl._decode``: same limits); a row
  holds the keys its line holds, and a ``messages`` list stays a list of dicts exactly as written
  (Arrow batching would add ``None`` for keys other messages have, or turn a column whose values
  mix types into JSON text).
* Parquet: the analysis' batches (``iter_batches``) as Python values; dates and times become ISO 8601
  strings, decimals their exact text, bytes base64 text, maps lists of ``[key, value]``.

Rows are not PII-redacted (the preview is; the version's ``pii_status`` says what the scan found).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable, Generator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pcsv
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi import Conflict, ModuleContext, NotFound, ServiceUnavailable
from adapters.adminapi.seams import CatalogDatasetVersion
from adapters.objectstore import ObjectNotFound, ObjectStoreError
from control.catalog.datasets_analysis import DatasetError, LineTooLong, ReadOptions, _csv, _jsonl, iter_batches
from control.catalog.settings import AnalysisSettings
from control.catalog.tables import dataset_versions, datasets

__all__ = ["DatasetReader"]

_Rows = Generator[dict[str, Any], None, None]


class DatasetReader:
    def __init__(self, ctx: ModuleContext, analysis: AnalysisSettings) -> None:
        self._ctx = ctx
        # The limits the file was accepted under; every row was parsed then, even past a sampled max_rows.
        self._options = ReadOptions(max_columns=analysis.max_columns, max_depth=analysis.max_depth,
                                    max_decompressed_bytes=analysis.max_decompressed_bytes,
                                    max_compression_ratio=analysis.max_compression_ratio)

    async def version(self, conn: AsyncConnection, dataset_id: str, version: int | None = None
                      ) -> CatalogDatasetVersion:
        row = await self._ready(conn, dataset_id, version)
        schema = (row.profile or {}).get("schema") or []
        return CatalogDatasetVersion(dataset_id=dataset_id, name=row.name, version=row.version, format=row.format,
                                     row_count=row.row_count, columns=[c["name"] for c in schema],
                                     pii_status=row.pii_status)

    async def _ready(self, conn: AsyncConnection, dataset_id: str, version: int | None) -> Any:
        """The version's row (with the dataset's name); NotFound / Conflict as the seam promises."""
        ds = (await conn.execute(select(datasets.c.name, datasets.c.latest_version, datasets.c.deleted_at)
                                 .where(datasets.c.id == dataset_id))).one_or_none()
        if ds is None or ds.deleted_at is not None:
            raise NotFound(f"No dataset {dataset_id!r}")
        number = version if version is not None else ds.latest_version
        if number is None:
            raise Conflict(f"Dataset {dataset_id!r} has no ready version; upload a file first",
                           {"datasetId": dataset_id})
        v = dataset_versions.c
        row = (await conn.execute(select(v.version, v.status, v.format, v.object_key, v.row_count, v.pii_status,
                                         v.profile).where(v.dataset_id == dataset_id, v.version == number))
               ).one_or_none()
        if row is None:
            raise NotFound(f"Dataset {dataset_id!r} has no version {number}")
        if row.status != "ready" or row.object_key is None:
            raise Conflict(f"Version {number} of dataset {dataset_id!r} is {row.status}, not ready: it holds no "
                           "data to read", {"datasetId": dataset_id, "version": number, "status": row.status})
        return _Row(ds.name, row)

    async def rows(self, dataset_id: str, version: int, *, batch_rows: int = 256
                   ) -> AsyncIterator[list[dict[str, Any]]]:
        if batch_rows < 1:
            raise ValueError("batch_rows must be at least 1")
        async with self._ctx.store.read() as conn:
            row = await self._ready(conn, dataset_id, version)
        store = self._ctx.object_store
        if store is None:
            raise ServiceUnavailable("No object store is configured or reachable; datasets cannot be read")
        where = f"version {version} of dataset {dataset_id!r}"
        try:
            async with store.local_path(row.object_key) as path:
                parsed = _parse(path, row.format, self._options)
                try:
                    while batch := await asyncio.to_thread(_take, parsed, batch_rows):
                        yield batch
                except DatasetError as err:  # the file no longer parses as it did when it became ready
                    raise Conflict(f"The file of {where} cannot be read: {err}") from err
                finally:
                    # Cancelled mid-batch, the thread may still be advancing it: then it is left to the GC.
                    with contextlib.suppress(ValueError):
                        parsed.close()
        except ObjectNotFound as err:
            raise ServiceUnavailable(f"The file of {where} is missing from the object store") from err
        except ObjectStoreError as err:
            raise ServiceUnavailable(f"The file of {where} cannot be read from the object store: {err.message}"
                                     ) from err


class _Row:
    """A version row plus its dataset's name (a join would fetch the name once per call anyway)."""

    def __init__(self, name: str, row: Any) -> None:
        self.name = name
        self.version: int = row.version
        self.status: str = row.status
        self.format: str = row.format
        self.object_key: str = row.object_key
        self.row_count: int = row.row_count
        self.pii_status: str | None = row.pii_status
        self.profile: dict[str, Any] | None = row.profile


def _take(rows: _Rows, n: int) -> list[dict[str, Any]]:
    """Up to ``n`` next rows; runs in a worker thread (the generator is never advanced concurrently)."""
    out: list[dict[str, Any]] = []
    for row in rows:
        out.append(row)
        if len(out) == n:
            break
    return out


def _parse(path: Path, fmt: str, options: ReadOptions) -> _Rows:
    if fmt == "csv":
        return _csv_rows(path, options)
    if fmt == "jsonl":
        return _jsonl_rows(path, options)
    if fmt == "parquet":
        return _parquet_rows(path, options)
    raise Conflict(f"Unsupported dataset format {fmt!r}")


def _csv_rows(path: Path, o: ReadOptions) -> _Rows:
    header = _csv._read_header(path, o.csv_delimiter)
    convert = pcsv.ConvertOptions(column_types={name: pa.string() for name in header},
                                  null_values=_csv.NULL_VALUES, strings_can_be_null=True)
    try:
        reader = pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=o.csv_block_bytes, use_threads=False),
                               parse_options=pcsv.ParseOptions(delimiter=o.csv_delimiter, newlines_in_values=True),
                               convert_options=convert)
        for batch in reader:
            yield from batch.to_pylist()
    except pa.ArrowInvalid as exc:
        raise _csv.locate_error(path, o.csv_delimiter, len(header), o.csv_block_bytes, str(exc)) from exc


def _jsonl_rows(path: Path, o: ReadOptions) -> _Rows:
    """The line loop of ``_jsonl.iter_jsonl`` (BOM, blank lines skipped, line limit), yielding the dicts."""
    with path.open("rb") as handle:
        line = 0
        while raw := handle.readline(o.max_line_bytes + 1):
            line += 1
            if len(raw) > o.max_line_bytes and not raw.endswith(b"\n"):
                raise LineTooLong(o.max_line_bytes, line=line)
            text = raw.strip()
            if line == 1 and text.startswith(b"\xef\xbb\xbf"):
                text = text[3:]
            if text:
                yield _jsonl._decode(text, line, o.max_depth)


def _parquet_rows(path: Path, o: ReadOptions) -> _Rows:
    for batch in iter_batches(path, "parquet", o):
        fixes = {field.name: fix for field in batch.schema if (fix := _fixer(field.type)) is not None}
        for row in batch.to_pylist():
            for name, fix in fixes.items():
                row[name] = fix(row[name])
            yield row


def _fixer(dtype: pa.DataType) -> Callable[[Any], Any] | None:
    """A converter to JSON-like values for Arrow types whose Python values are not (None: nothing to do)."""
    t = pa.types
    if (t.is_temporal(dtype) or t.is_decimal(dtype) or t.is_binary(dtype) or t.is_large_binary(dtype)
            or t.is_fixed_size_binary(dtype) or t.is_map(dtype)):
        return _jsonable
    if t.is_struct(dtype):
        nested = [dtype.field(i).type for i in range(dtype.num_fields)]
    elif t.is_list(dtype) or t.is_large_list(dtype) or t.is_fixed_size_list(dtype):
        nested = [dtype.value_type]
    else:
        return None
    return _jsonable if any(_fixer(n) is not None for n in nested) else None


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    with contextlib.suppress(TypeError, ValueError):
        return float(value)
    return str(value)
