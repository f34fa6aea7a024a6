"""Usage rows in the store, exactly once: ``usage_records`` plus their hourly ``usage_rollups``.

``write_usage`` writes a batch in one transaction: rows go in with ``ON CONFLICT (record_id) DO
NOTHING ... RETURNING record_id``, and only the rows that came back (the ones this call
inserted) are added to the rollups with ``INSERT ... ON CONFLICT DO UPDATE SET col = col +
excluded.col``. A batch written twice (a timed-out commit that did land, a spill file replayed
after a crash) changes nothing the second time, and the rollups always equal the sums of the rows.

* **SQLite** (3.35+ for RETURNING): SQLAlchemy's multi-row VALUES; the rollup deltas are summed
  here (``rollup_deltas``) and upserted.
* **PostgreSQL**: the batch is COPYed into a per-connection temporary stage table, then one
  statement inserts the rows and, from the rows its ``RETURNING`` reports, upserts the rollups
  (the same sums as ``rollup_deltas``, in SQL). asyncpg encodes COPY rows in C and Python never
  sees the inserted ids: about half the gateway CPU of the VALUES path, which itself is about
  half of SQLAlchemy's executemany (measured for docs/benchmarks.md, "Metering").

``UsageRow`` is what is stored and also the line format of the gateway's spill files. Strings are
cut to their column widths and NULs removed when a row is made, so a hostile model name can never
make a batch fail forever.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import msgspec
from sqlalchemy import String, func, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.dataplane import ROLLUP_DIMENSIONS, usage_records, usage_rollups
from adapters.store import ConstraintViolation, InvalidValue, Store, StoreError, StoreUnavailable
from adapters.usage import UsageRecord

__all__ = ["SQLITE_MIN_VERSION", "UsageRow", "rollup_deltas", "row_from_record", "write_usage"]

SQLITE_MIN_VERSION = (3, 35, 0)  # INSERT ... RETURNING
_ESTIMATED = frozenset({"counted", "estimated"})  # counts that are not the upstream's own
_SUMS = ("requests", "errors", "unpriced_requests", "estimated_requests", "prompt_tokens", "completion_tokens",
         "cached_read_tokens", "cache_write_tokens", "reasoning_tokens", "cost_usd", "latency_s_sum")


class UsageRow(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One ``usage_records`` row (``ts`` in epoch seconds); one JSON line of a spill file."""

    record_id: str
    request_id: str
    ts: float
    endpoint: str
    route: str
    model: str
    provider: str
    status: int
    latency_s: float
    usage_source: str
    variant: str | None = None
    key_id: str | None = None
    team: str | None = None
    stream: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: Decimal | None = None
    price_source: str | None = None
    error: str | None = None
    ttft_s: float | None = None
    attempts: int = 1
    gpu_usd_per_hour: Decimal | None = None  # not a usage_records column: the rollups keep it


_WIDTHS: dict[str, int] = {c.name: c.type.length for c in usage_records.c
                           if isinstance(c.type, String) and c.type.length}


def _fit(value: str, column: str) -> str:
    """Fit a string into its column: NULs out (PostgreSQL refuses them), cut to the width."""
    if "\x00" in value:
        value = value.replace("\x00", "")
    width = _WIDTHS[column]
    return value if len(value) <= width else value[:width]


def _fit_opt(value: str | None, column: str) -> str | None:
    return None if value is None else _fit(value, column)


def row_from_record(r: UsageRecord) -> UsageRow:
    """The stored shape of a record (``record_id`` must be set)."""
    p = r.principal
    return UsageRow(
        record_id=_fit(r.record_id, "record_id"), request_id=_fit(r.request_id, "request_id"), ts=r.ts,
        endpoint=_fit(r.endpoint, "endpoint"), route=_fit(r.route, "route"), model=_fit(r.model, "model"),
        provider=_fit(r.provider, "provider"), status=r.status, latency_s=r.latency_s,
        usage_source=_fit(r.usage_source, "usage_source"), variant=_fit_opt(r.variant, "variant"),
        key_id=None if p is None else _fit(p.key_id, "key_id"), team=None if p is None else _fit_opt(p.team, "team"),
        stream=r.stream, prompt_tokens=r.prompt_tokens, completion_tokens=r.completion_tokens,
        cached_read_tokens=r.cached_read_tokens, cache_write_tokens=r.cache_write_tokens,
        reasoning_tokens=r.reasoning_tokens, cost_usd=r.cost_usd, price_source=_fit_opt(r.price_source, "price_source"),
        error=_fit_opt(r.error, "error"), ttft_s=r.ttft_s, attempts=r.attempts, gpu_usd_per_hour=r.gpu_usd_per_hour,
    )


def _hour(ts: float) -> datetime:
    """The start of the UTC hour ``ts`` falls in."""
    return datetime.fromtimestamp(ts - ts % 3600, UTC)


def rollup_deltas(rows: Iterable[UsageRow]) -> list[dict[str, Any]]:
    """Hourly sums of ``rows`` per (hour, *ROLLUP_DIMENSIONS), ``''`` for absent dimensions, sorted
    by key (concurrent writers then lock rollup rows in one order, so they cannot deadlock)."""
    acc: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        key = (_hour(r.ts), r.team or "", r.key_id or "", r.route, r.model, r.provider, r.variant or "", r.endpoint)
        s = acc.get(key)
        if s is None:
            s = acc[key] = {"requests": 0, "errors": 0, "unpriced_requests": 0, "estimated_requests": 0,
                            "prompt_tokens": 0, "completion_tokens": 0, "cached_read_tokens": 0,
                            "cache_write_tokens": 0, "reasoning_tokens": 0, "cost_usd": Decimal(0),
                            "gpu_usd_per_hour": Decimal(0), "latency_s_sum": 0.0}
        s["requests"] += 1
        s["errors"] += r.status >= 400
        s["estimated_requests"] += r.usage_source in _ESTIMATED
        s["prompt_tokens"] += r.prompt_tokens
        s["completion_tokens"] += r.completion_tokens
        s["cached_read_tokens"] += r.cached_read_tokens
        s["cache_write_tokens"] += r.cache_write_tokens
        s["reasoning_tokens"] += r.reasoning_tokens
        s["latency_s_sum"] += r.latency_s
        if r.cost_usd is not None:
            s["cost_usd"] += r.cost_usd
        elif r.price_source != "gpu_hour":  # GPU-hour rows are priced per hour by the reports, not unpriced
            s["unpriced_requests"] += 1
        if r.gpu_usd_per_hour is not None and r.gpu_usd_per_hour > s["gpu_usd_per_hour"]:
            s["gpu_usd_per_hour"] = r.gpu_usd_per_hour
    return [{"hour": k[0], **dict(zip(ROLLUP_DIMENSIONS, k[1:], strict=True)), **s} for k, s in sorted(acc.items())]


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
            "usage_source", "estimated")
assert set(_COLUMNS) == {c.name for c in usage_records.c} - {"id"}, "usage_records changed: update _COLUMNS"
_NANO = Decimal(1_000_000_000)


# -- SQLite ------------------------------------------------------------------------------------

def _record_params(r: UsageRow) -> dict[str, Any]:
    d = {f: getattr(r, f) for f in _COLUMNS if f not in ("ts", "estimated")}
    d["ts"] = datetime.fromtimestamp(r.ts, UTC)
    d["estimated"] = r.usage_source in _ESTIMATED
    return d


_SQLITE_INSERT = (sqlite.insert(usage_records).on_conflict_do_nothing(index_elements=["record_id"])
                  .returning(usage_records.c.record_id))


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
    if sqlite3.sqlite_version_info < SQLITE_MIN_VERSION:
        raise StoreError(f"usage metering needs SQLite {'.'.join(map(str, SQLITE_MIN_VERSION))}+ "
                         f"(INSERT ... RETURNING); this Python has {sqlite3.sqlite_version}")
    result = await conn.execute(_SQLITE_INSERT, [_record_params(r) for r in rows])
    inserted = {rid for (rid,) in result.all()}
    fresh = rows if len(inserted) == len(rows) else [r for r in rows if r.record_id in inserted]
    if fresh:
        await conn.execute(_SQLITE_UPSERT, rollup_deltas(fresh))
    return len(fresh)


# -- PostgreSQL --------------------------------------------------------------------------------

_STAGE = "llmops_usage_stage"
_STAGE_COLUMNS = (*_COLUMNS, "gpu_usd_per_hour", "hour")
_STAGE_DDL = text(
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGE} ON COMMIT DELETE ROWS AS SELECT {', '.join(_COLUMNS)}, "
    f"cost_usd AS gpu_usd_per_hour, ts AS hour FROM usage_records WITH NO DATA"
)
_DIMS = ", ".join(ROLLUP_DIMENSIONS)
# Data-modifying CTEs run once, to completion, whether or not the outer query reads them: the rows
# go in, the rollups take exactly the rows RETURNING names, and the outer query counts them.
_WRITE_FROM_STAGE = text(f"""
WITH inserted AS (
    INSERT INTO usage_records ({', '.join(_COLUMNS)}) SELECT {', '.join(_COLUMNS)} FROM {_STAGE}
    ON CONFLICT (record_id) DO NOTHING RETURNING record_id
), rolled AS (
    INSERT INTO usage_rollups (hour, {_DIMS}, {', '.join(_SUMS)}, gpu_usd_per_hour)
    SELECT hour, coalesce(team, ''), coalesce(key_id, ''), route, model, provider, coalesce(variant, ''), endpoint,
           count(*), count(*) FILTER (WHERE status >= 400),
           count(*) FILTER (WHERE cost_usd IS NULL AND price_source IS DISTINCT FROM 'gpu_hour'),
           count(*) FILTER (WHERE estimated), sum(prompt_tokens), sum(completion_tokens), sum(cached_read_tokens),
           sum(cache_write_tokens), sum(reasoning_tokens), coalesce(sum(cost_usd), 0), sum(latency_s),
           coalesce(max(gpu_usd_per_hour), 0)
    FROM {_STAGE} JOIN inserted USING (record_id)
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8 ORDER BY 1, 2, 3, 4, 5, 6, 7, 8
    ON CONFLICT (hour, {_DIMS}) DO UPDATE SET
        {', '.join(f'{c} = usage_rollups.{c} + excluded.{c}' for c in _SUMS)},
        gpu_usd_per_hour = greatest(usage_rollups.gpu_usd_per_hour, excluded.gpu_usd_per_hour)
)
SELECT count(*) FROM inserted
""")


def _nano(v: Decimal | None) -> int | None:
    """``UsdAmount``'s encoding: COPY bypasses SQLAlchemy's column types."""
    return None if v is None else int((v * _NANO).to_integral_value(ROUND_HALF_EVEN))


def _stage_tuple(r: UsageRow) -> tuple[Any, ...]:
    """The row in ``_STAGE_COLUMNS`` order, as asyncpg's COPY encodes it."""
    ts = r.ts
    return (r.record_id, r.request_id, datetime.fromtimestamp(ts, UTC), r.endpoint, r.route, r.model, r.provider,
            r.variant, r.key_id, r.team, r.stream, r.prompt_tokens, r.completion_tokens, r.cached_read_tokens,
            r.cache_write_tokens, r.reasoning_tokens, _nano(r.cost_usd), r.price_source, r.status, r.error,
            r.latency_s, r.ttft_s, r.attempts, r.usage_source, r.usage_source in _ESTIMATED,
            _nano(r.gpu_usd_per_hour), datetime.fromtimestamp(ts - ts % 3600, UTC))


async def _write_postgres(conn: AsyncConnection, rows: list[UsageRow]) -> int:
    # Through SQLAlchemy first, so that its lazily begun transaction is open before the COPY: the
    # stage table empties at every commit, so an autocommitted COPY would vanish at once.
    await conn.execute(_STAGE_DDL)
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection  # asyncpg.Connection, in the transaction SQLAlchemy began
    assert driver is not None
    records = [_stage_tuple(r) for r in rows]
    with _copy_errors():
        await driver.copy_records_to_table(_STAGE, records=records, columns=_STAGE_COLUMNS)
    return int((await conn.execute(_WRITE_FROM_STAGE)).scalar_one())


@contextlib.contextmanager
def _copy_errors() -> Iterator[None]:
    """asyncpg's own errors from the COPY (SQLAlchemy translates only what runs through it), as the
    store's: the same outage / bad value distinction ``adapters.store.sql`` draws."""
    import asyncpg

    try:
        yield
    except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError) as err:
        raise StoreUnavailable(f"database unavailable ({type(err).__name__})") from err
    except asyncpg.DataError as err:
        raise InvalidValue(str(err).splitlines()[0] if str(err) else type(err).__name__) from err
    except asyncpg.IntegrityConstraintViolationError as err:
        raise ConstraintViolation(str(err).splitlines()[0] if str(err) else type(err).__name__) from err
    except (OverflowError, ValueError, TypeError) as err:  # asyncpg refusing to encode a value (int4 range)
        raise InvalidValue(f"{type(err).__name__}: {err}") from err
