"""Usage rows in the store, exactly once: ``usage_records`` plus their hourly ``usage_rollups``.

``write_usage`` writes a batch in one transaction: the rows whose ``record_id`` is not stored yet go
in, and exactly those are added to the rollups (``INSERT ... ON CONFLICT DO UPDATE SET col = col +
excluded.col``). A batch written twice (a timed-out commit that did land, a spill file replayed
after a crash) changes nothing the second time, and the rollups always equal the sums of the rows.

* **PostgreSQL**: on the store's connection, through asyncpg itself: the batch is COPYed into a
  per-connection temporary stage table, then one statement inserts it with ``ON CONFLICT
  (record_id) DO NOTHING RETURNING record_id`` and upserts the rollups from exactly the rows
  RETURNING names (the sums ``rollup_deltas`` computes, in SQL). Four round trips per batch.
* **SQLite**: inside the store's ``BEGIN IMMEDIATE`` transaction no other writer exists: the batch
  is inserted with the driver's ``executemany`` (``ON CONFLICT (record_id) DO NOTHING``, under a
  savepoint) and, when every row went in (the usual case), ``rollup_deltas`` of them upserted; when
  some were stored already (a replay), the savepoint is rolled back and the ids already stored are
  looked up, the others inserted.

Both bypass SQLAlchemy's per-value processing for the rows, which cost the gateway several times
the CPU (docs/benchmarks.md, "Metering"); the column encodings (``UtcDateTime``, ``UsdAmount``)
are reproduced here and tested to read back through SQLAlchemy unchanged.

``UsageRow`` is what is stored and also the line format of the gateway's spill files. Strings are
cut to their column widths and NULs removed when a row is made, so a hostile model name can never
make a batch fail forever.
"""

from __future__ import annotations

import contextlib
import functools
import math
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from itertools import compress, repeat
from operator import attrgetter, gt, is_, is_not, le
from typing import Any

import msgspec
from msgspec.structs import astuple
from sqlalchemy import String, func
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.dataplane import ROLLUP_DIMENSIONS, usage_records, usage_rollups
from adapters.store import ConstraintViolation, InvalidValue, Store, StoreUnavailable
from adapters.usage import UsageRecord

__all__ = ["UsageRow", "rollup_deltas", "row_from_record", "write_usage"]

_ESTIMATED = frozenset({"counted", "estimated"})  # counts that are not the upstream's own
_TOKEN_SUMS = ("prompt_tokens", "completion_tokens", "cached_read_tokens", "cache_write_tokens", "reasoning_tokens")
_SUMS = ("requests", "errors", "unpriced_requests", "estimated_requests", "prompt_tokens", "completion_tokens",
         "cached_read_tokens", "cache_write_tokens", "reasoning_tokens", "cost_usd", "latency_s_sum")


class UsageRow(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """One ``usage_records`` row as stored: ``ts`` in epoch seconds, money in whole nano-dollars
    (``UsdAmount``'s unit), plus the GPU-hour price the rollups keep. Also one JSON line of a spill
    file. The field order is the PostgreSQL stage table's (``_STAGE_DDL``)."""

    record_id: str
    request_id: str
    ts: float
    endpoint: str
    route: str
    model: str
    provider: str
    variant: str | None = None
    key_id: str | None = None
    team: str | None = None
    stream: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cost_nano_usd: int | None = None
    price_source: str | None = None
    status: int
    error: str | None = None
    latency_s: float
    ttft_s: float | None = None
    attempts: int = 1
    usage_source: str
    experiment: str | None = None
    episode_id: str | None = None
    fallback: bool = False
    first_provider: str | None = None
    gpu_nano_usd_per_hour: int | None = None  # not a usage_records column: the rollups keep it


_NANO = Decimal(1_000_000_000)


def _nano(v: Decimal | None) -> int | None:
    """Dollars to whole nano-dollars, rounded half-even: ``UsdAmount``'s encoding."""
    return None if v is None else int((v * _NANO).to_integral_value(ROUND_HALF_EVEN))


_WIDTHS: dict[str, int] = {c.name: c.type.length for c in usage_records.c
                           if isinstance(c.type, String) and c.type.length}
_TEXT = ("record_id", "request_id", "endpoint", "route", "model", "provider", "usage_source", "variant", "key_id",
         "team", "price_source", "error", "experiment", "episode_id", "first_provider")
_TEXT_WIDTHS = tuple(_WIDTHS[f] for f in _TEXT)


def row_from_record(r: UsageRecord) -> UsageRow:
    """The stored shape of a record (``record_id`` must be set). Strings are made to fit their
    columns: NULs removed (PostgreSQL refuses them), then cut to the column's width."""
    p = r.principal
    row = UsageRow(  # keywords in field order: msgspec then matches each at the first try
        record_id=r.record_id, request_id=r.request_id, ts=r.ts, endpoint=r.endpoint, route=r.route, model=r.model,
        provider=r.provider, variant=r.variant, key_id=None if p is None else p.key_id,
        team=None if p is None else p.team, stream=r.stream, prompt_tokens=r.prompt_tokens,
        completion_tokens=r.completion_tokens, cached_read_tokens=r.cached_read_tokens,
        cache_write_tokens=r.cache_write_tokens, reasoning_tokens=r.reasoning_tokens,
        cost_nano_usd=None if r.cost_usd is None else _nano(r.cost_usd), price_source=r.price_source,
        status=r.status, error=r.error, latency_s=r.latency_s, ttft_s=r.ttft_s, attempts=r.attempts,
        usage_source=r.usage_source, experiment=r.experiment, episode_id=r.episode_id, fallback=r.fallback,
        first_provider=r.first_provider,
        gpu_nano_usd_per_hour=None if r.gpu_usd_per_hour is None else _nano(r.gpu_usd_per_hour),
    )
    texts = (row.record_id, row.request_id, row.endpoint, row.route, row.model, row.provider, row.usage_source,
             row.variant or "", row.key_id or "", row.team or "", row.price_source or "", row.error or "",
             row.experiment or "", row.episode_id or "", row.first_provider or "")  # _TEXT
    # rare: one check for all (operator.gt, a plain C function: int.__gt__ is a slot wrapper, ~1 µs a call)
    if "\x00" in "".join(texts) or any(map(gt, map(len, texts), _TEXT_WIDTHS)):
        for f, width in zip(_TEXT, _TEXT_WIDTHS, strict=True):
            value = getattr(row, f)
            if value is not None:
                setattr(row, f, value.replace("\x00", "")[:width])
    return row


_get = {f: attrgetter(f) for f in UsageRow.__struct_fields__}


def rollup_deltas(rows: Iterable[UsageRow]) -> list[dict[str, Any]]:
    """Hourly sums of ``rows`` per (hour, *ROLLUP_DIMENSIONS), ``''`` for absent dimensions, sorted
    by key (concurrent writers then lock rollup rows in one order, so they cannot deadlock).

    Rows are grouped first, then each group's columns summed by C loops (``map``/``sum`` over
    attribute getters): a batch has a handful of groups, and per-row Python arithmetic on a dict of
    sums cost more than the insert itself."""
    groups: dict[tuple[Any, ...], list[UsageRow]] = {}
    for r in rows:
        ts = r.ts
        key = (ts - ts % 3600, r.team or "", r.key_id or "", r.route, r.model, r.provider, r.variant or "", r.endpoint)
        group = groups.get(key)
        if group is None:
            groups[key] = [r]
        else:
            group.append(r)
    out = []
    for k, g in sorted(groups.items()):
        costs = list(map(_get["cost_nano_usd"], g))
        sources = list(map(_get["price_source"], g))
        if "gpu_hour" in sources:  # GPU-hour rows are priced per hour by the reports, not unpriced
            unpriced = sum(c is None and p != "gpu_hour" for c, p in zip(costs, sources, strict=True))
        else:
            unpriced = costs.count(None)
        gpu = max(0, max(filter(None, map(_get["gpu_nano_usd_per_hour"], g)), default=0))
        out.append({
            "hour": datetime.fromtimestamp(k[0], UTC), **dict(zip(ROLLUP_DIMENSIONS, k[1:], strict=True)),
            "requests": len(g), "errors": sum(map(le, repeat(400), map(_get["status"], g))),
            "unpriced_requests": unpriced,
            "estimated_requests": sum(map(_ESTIMATED.__contains__, map(_get["usage_source"], g))),
            **{f: sum(map(_get[f], g)) for f in _TOKEN_SUMS},
            "cost_usd": Decimal(sum(filter(None, costs))) / _NANO,  # dollars again, exactly, for UsdAmount
            "gpu_usd_per_hour": Decimal(gpu) / _NANO, "latency_s_sum": sum(map(_get["latency_s"], g), 0.0),
        })
    return out


async def write_usage(store: Store, rows: Sequence[UsageRow], *, timeout_s: float | None = None) -> int:
    """Insert ``rows`` and add the newly inserted ones to the rollups, in one transaction under one
    deadline (``timeout_s``; default the store's). Returns how many rows were new: rows whose
    ``record_id`` is stored already are skipped, rollups included. Raises the store's errors:
    ``StoreUnavailable`` when the database is down or past the deadline (then nothing was written,
    or everything was, and a retry is safe either way); ``InvalidValue``/``ConstraintViolation``
    when a row itself is refused."""
    unique = list({r.record_id: r for r in rows}.values())  # one batch must not count a record twice either
    if not unique:
        return 0
    async with store.begin(timeout_s=timeout_s) as conn:
        if store.dialect == "postgresql":
            return await _write_postgres(conn, unique)
        return await _write_sqlite(conn, unique)


_COLUMNS = ("record_id", "request_id", "ts", "endpoint", "route", "model", "provider", "variant", "key_id", "team",
            "stream", "prompt_tokens", "completion_tokens", "cached_read_tokens", "cache_write_tokens",
            "reasoning_tokens", "cost_usd", "price_source", "status", "error", "latency_s", "ttft_s", "attempts",
            "usage_source", "estimated", "experiment", "episode_id", "fallback", "first_provider")
assert set(_COLUMNS) == {c.name for c in usage_records.c} - {"id"}, "usage_records changed: update _COLUMNS"


# -- SQLite ------------------------------------------------------------------------------------
# Inside the store's write transaction (BEGIN IMMEDIATE: no other writer, in any process, until it
# commits). The rows go through the sqlite3 driver's executemany, in C: SQLAlchemy's per-value
# processing cost about four times as much gateway CPU, and SQLite runs in the gateway's own process.
# NULLs are literals in the statement, never bound: the driver passes every bound None through its
# adapter registry (about 0.7 µs each, most of a typical row's cost), so rows are grouped by which of
# their values are NULL, one statement per pattern (a batch has one or two).

_SQLITE_LOOKUP_CHUNK = 500  # ids per "IN (...)": well under SQLite's limit on bound variables
_NONES = (None,) * len(_COLUMNS)
_SAVEPOINT = "llmops_usage_batch"


def _ts_text(ts: float) -> str:
    """``UtcDateTime``'s SQLite text of an epoch time (naive UTC, microseconds), exactly as
    ``datetime.fromtimestamp(ts, UTC)`` rounds it (half-even), with the date part made once per second."""
    frac, whole = math.modf(ts)
    us = round(frac * 1e6)
    if us >= 1_000_000:
        whole, us = whole + 1, us - 1_000_000
    elif us < 0:
        whole, us = whole - 1, us + 1_000_000
    return f"{_second_text(int(whole))}.{us:06d}"


@functools.lru_cache(maxsize=8)
def _second_text(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _sqlite_tuple(r: UsageRow) -> tuple[Any, ...]:
    """The row in ``_COLUMNS`` order as SQLAlchemy stores it on SQLite: ``UtcDateTime`` as naive UTC
    text with microseconds, booleans as 0/1 (``UsdAmount`` is nano-dollars already)."""
    return (r.record_id, r.request_id, _ts_text(r.ts), r.endpoint, r.route, r.model, r.provider, r.variant, r.key_id,
            r.team, int(r.stream), r.prompt_tokens, r.completion_tokens, r.cached_read_tokens, r.cache_write_tokens,
            r.reasoning_tokens, r.cost_nano_usd, r.price_source, r.status, r.error, r.latency_s, r.ttft_s,
            r.attempts, r.usage_source, int(r.usage_source in _ESTIMATED), r.experiment, r.episode_id, int(r.fallback),
            r.first_provider)


def _sqlite_groups(rows: Iterable[UsageRow]) -> dict[tuple[bool, ...], list[tuple[Any, ...]]]:
    """The rows' values without their NULLs, grouped by where the NULLs were (``_sqlite_insert``'s key)."""
    groups: dict[tuple[bool, ...], list[tuple[Any, ...]]] = {}
    for r in rows:
        values = _sqlite_tuple(r)
        nulls = tuple(map(is_, values, _NONES))
        group = groups.get(nulls)
        if group is None:
            group = groups[nulls] = []
        group.append(tuple(compress(values, map(is_not, values, _NONES))))
    return groups


@functools.lru_cache(maxsize=64)
def _sqlite_insert(nulls: tuple[bool, ...]) -> str:
    values = ", ".join("NULL" if null else "?" for null in nulls)
    return (f"INSERT INTO usage_records ({', '.join(_COLUMNS)}) VALUES ({values}) "
            "ON CONFLICT (record_id) DO NOTHING")


def _sqlite_upsert() -> Any:
    ins = sqlite.insert(usage_rollups)
    t, new = usage_rollups.c, ins.excluded
    return ins.on_conflict_do_update(
        index_elements=["hour", *ROLLUP_DIMENSIONS],
        set_={**{c: t[c] + new[c] for c in _SUMS},
              "gpu_usd_per_hour": func.max(t.gpu_usd_per_hour, new.gpu_usd_per_hour)},  # scalar max() in SQLite
    )


_SQLITE_UPSERT = _sqlite_upsert()


async def _write_sqlite(conn: AsyncConnection, rows: list[UsageRow]) -> int:
    raw = await conn.get_raw_connection()
    db = raw.driver_connection  # aiosqlite.Connection, in the transaction the store began
    assert db is not None
    with _sqlite_errors():
        await db.execute(f"SAVEPOINT {_SAVEPOINT}")
        if await _insert_sqlite(db, rows) == len(rows):
            fresh = rows
            await db.execute(f"RELEASE {_SAVEPOINT}")
        else:  # some were stored before (a replay): undo, find them, insert exactly the others
            await db.execute(f"ROLLBACK TO {_SAVEPOINT}")
            await db.execute(f"RELEASE {_SAVEPOINT}")
            existing: set[str] = set()
            for i in range(0, len(rows), _SQLITE_LOOKUP_CHUNK):
                ids = [r.record_id for r in rows[i:i + _SQLITE_LOOKUP_CHUNK]]
                found = await db.execute_fetchall(
                    f"SELECT record_id FROM usage_records WHERE record_id IN ({', '.join('?' * len(ids))})", ids)
                existing.update(rid for (rid,) in found)
            fresh = [r for r in rows if r.record_id not in existing]
            if fresh:
                await _insert_sqlite(db, fresh)
    if fresh:
        await conn.execute(_SQLITE_UPSERT, rollup_deltas(fresh))
    return len(fresh)


async def _insert_sqlite(db: Any, rows: list[UsageRow]) -> int:
    """Insert ``rows`` (those whose ``record_id`` is stored already are skipped); how many went in."""
    inserted = 0
    for nulls, values in _sqlite_groups(rows).items():
        cursor = await db.executemany(_sqlite_insert(nulls), values)
        inserted += cursor.rowcount
    return inserted


@contextlib.contextmanager
def _sqlite_errors() -> Iterator[None]:
    """sqlite3's errors from the driver calls above, as the store's (``adapters.store.sql``'s rules)."""
    try:
        yield
    except sqlite3.IntegrityError as err:
        raise ConstraintViolation(str(err)) from err
    except sqlite3.OperationalError as err:
        if any(hint in str(err).lower() for hint in ("locked", "disk i/o", "unable to open", "readonly", "full",
                                                      "busy")):
            raise StoreUnavailable(f"database unavailable ({err})") from err
        raise


# -- PostgreSQL --------------------------------------------------------------------------------

_STAGE = "llmops_usage_stage"
_PG_TYPES = {str: "varchar", float: "float8", int: "int8", bool: "boolean"}
_STAGE_COLUMNS = UsageRow.__struct_fields__  # COPY sends msgspec.structs.astuple(row) as it is


def _pg_type(field: str) -> str:
    hint = UsageRow.__annotations__[field]  # "str | None" etc. (postponed annotations)
    return _PG_TYPES[{"str": str, "float": float, "int": int, "bool": bool}[hint.split(" |")[0]]]


# Created once per connection, outside any transaction (so no rollback can take it away); every
# commit or rollback empties it, so a failed batch never leaks into the next one.
_STAGE_DDL = (f"CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGE} "
              f"({', '.join(f'{c} {_pg_type(c)}' for c in _STAGE_COLUMNS)}) ON COMMIT DELETE ROWS")
_DIMS = ", ".join(ROLLUP_DIMENSIONS)
_FROM_ROW = {"ts": "to_timestamp(ts)", "cost_usd": "cost_nano_usd",
             "estimated": "usage_source IN ('counted', 'estimated')"}  # usage_records columns not copied as they are
# Data-modifying CTEs run once, to completion, whether or not the outer query reads them: the rows
# go in, the rollups take exactly the rows RETURNING names, and the outer query counts them.
_WRITE_FROM_STAGE = f"""
WITH inserted AS (
    INSERT INTO usage_records ({', '.join(_COLUMNS)})
    SELECT {', '.join(_FROM_ROW.get(c, c) for c in _COLUMNS)} FROM {_STAGE}
    ON CONFLICT (record_id) DO NOTHING RETURNING record_id, ts AS stored_ts
), rolled AS (
    INSERT INTO usage_rollups (hour, {_DIMS}, {', '.join(_SUMS)}, gpu_usd_per_hour)
    SELECT date_trunc('hour', stored_ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', coalesce(team, ''),
           coalesce(key_id, ''), route, model, provider, coalesce(variant, ''), endpoint,
           count(*), count(*) FILTER (WHERE status >= 400),
           count(*) FILTER (WHERE cost_nano_usd IS NULL AND price_source IS DISTINCT FROM 'gpu_hour'),
           count(*) FILTER (WHERE usage_source IN ('counted', 'estimated')), sum(prompt_tokens),
           sum(completion_tokens), sum(cached_read_tokens), sum(cache_write_tokens), sum(reasoning_tokens),
           coalesce(sum(cost_nano_usd), 0), sum(latency_s), coalesce(max(gpu_nano_usd_per_hour), 0)
    FROM {_STAGE} JOIN inserted USING (record_id)
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8 ORDER BY 1, 2, 3, 4, 5, 6, 7, 8
    ON CONFLICT (hour, {_DIMS}) DO UPDATE SET
        {', '.join(f'{c} = usage_rollups.{c} + excluded.{c}' for c in _SUMS)},
        gpu_usd_per_hour = greatest(usage_rollups.gpu_usd_per_hour, excluded.gpu_usd_per_hour)
)
SELECT count(*) FROM inserted
"""


async def _write_postgres(conn: AsyncConnection, rows: list[UsageRow]) -> int:
    """On the store's connection (its checkout, deadline and error translation), but through asyncpg
    itself: BEGIN, COPY, one statement, COMMIT. SQLAlchemy's own transaction stays unstarted (it
    begins lazily, at its first statement), so its commit sends nothing."""
    records = [astuple(r) for r in rows]
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection  # asyncpg.Connection
    assert driver is not None
    info = conn.info  # lives with the pooled connection, as does its temporary table
    with _asyncpg_errors(info):
        if not info.get(_STAGE):
            await driver.execute(_STAGE_DDL)
            info[_STAGE] = True
        async with driver.transaction():
            await driver.copy_records_to_table(_STAGE, records=records, columns=_STAGE_COLUMNS)
            return int(await driver.fetchval(_WRITE_FROM_STAGE))


_OUTAGE_CLASSES = ("08", "40", "53", "57")  # connection, rollback (deadlock), resources, shutting down


@contextlib.contextmanager
def _asyncpg_errors(info: dict[Any, Any]) -> Iterator[None]:
    """asyncpg's errors as the store's, drawing ``adapters.store.sql``'s line between "the database is
    not there (retry later)" and "this value is refused". Anything else (a bug in the SQL) passes
    through unchanged."""
    import asyncpg

    try:
        yield
    except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError) as err:
        raise StoreUnavailable(f"database unavailable ({type(err).__name__})") from err
    except asyncpg.UndefinedTableError as err:  # the stage table was dropped (DISCARD TEMP): make it again
        info.pop(_STAGE, None)
        raise StoreUnavailable("usage stage table missing; recreated on the next batch") from err
    except asyncpg.PostgresError as err:
        state = str(getattr(err, "sqlstate", "") or "")
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        if state[:2] in _OUTAGE_CLASSES:
            raise StoreUnavailable(f"database unavailable ({message})") from err
        if state[:2] == "22":
            raise InvalidValue(message) from err
        if state[:2] == "23":
            raise ConstraintViolation(message) from err
        raise
    except (OverflowError, ValueError, TypeError) as err:  # asyncpg refusing to encode a value (int4 range)
        raise InvalidValue(f"{type(err).__name__}: {err}") from err
