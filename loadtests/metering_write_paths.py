"""Gateway CPU per usage record for each way of writing a batch, on PostgreSQL and SQLite.

`python -m loadtests.metering_write_paths [--reps 20] [--sizes 50 250 1000] [--cpu 1] [--doc docs/benchmarks.md]`

Why `adapters.usage_store` writes as it does: the obvious SQLAlchemy statement (insert ... ON CONFLICT DO
NOTHING RETURNING, run with a list of rows: SQLAlchemy's multi-row VALUES, then the rollup deltas upserted)
against what ships (PostgreSQL: COPY into a stage table plus one insert-and-rollup statement, through asyncpg;
SQLite: look up stored ids, then the driver's executemany). CPU is this process's (user + system) per record,
the database's own work on PostgreSQL excluded (another process), included on SQLite (in-process). Fixed costs
per batch (checkout, round trips) weigh on small batches: at the default 0.25 s flush interval a gateway
serving 1,000 req/s writes batches of about 250.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import func
from sqlalchemy.dialects import postgresql, sqlite

from adapters.adminapi.host import load_control_plane
from adapters.adminapi.settings import ControlCfg
from adapters.dataplane import ROLLUP_DIMENSIONS, usage_records, usage_rollups
from adapters.store import SqlStore, migrate, open_store
from adapters.usage import Principal, UsageRecord, new_record_id
from adapters.usage_store import UsageRow, rollup_deltas, row_from_record, write_usage
from loadtests.docsection import write_section
from loadtests.metering_bench import _postgres

__all__ = ["main"]

_START, _END = "<!-- metering_write_paths:start", "<!-- metering_write_paths:end -->"
Writer = Callable[[SqlStore, list[UsageRow]], Awaitable[int]]


def _rows(n: int) -> list[UsageRow]:
    out = []
    for i in range(n):
        r = UsageRecord(request_id=new_record_id()[:24], route="chat", provider="vllm", model="llama-3.1-8b",
                        stream=bool(i % 2), status=200, latency_s=0.2, ttft_s=0.05, prompt_tokens=120,
                        completion_tokens=40, principal=Principal(f"key-{i % 7}", f"team-{i % 3}"),
                        cost_usd=Decimal("0.000123"), price_source="litellm")
        r.record_id = new_record_id()
        out.append(row_from_record(r))
    return out


async def _sqlalchemy_values(store: SqlStore, rows: list[UsageRow]) -> int:
    """The obvious implementation: SQLAlchemy Core, multi-row VALUES with RETURNING, rollups from Python."""
    pg = store.dialect == "postgresql"
    ins = (postgresql if pg else sqlite).insert(usage_records)
    stmt = ins.on_conflict_do_nothing(index_elements=["record_id"]).returning(usage_records.c.record_id)
    up = (postgresql if pg else sqlite).insert(usage_rollups)
    sums = [c.name for c in usage_rollups.c if c.name not in ("id", "hour", "gpu_usd_per_hour", *ROLLUP_DIMENSIONS)]
    upsert = up.on_conflict_do_update(
        index_elements=["hour", *ROLLUP_DIMENSIONS],
        set_={**{c: usage_rollups.c[c] + up.excluded[c] for c in sums},
              "gpu_usd_per_hour": (func.greatest if pg else func.max)(usage_rollups.c.gpu_usd_per_hour,
                                                                       up.excluded.gpu_usd_per_hour)})
    from datetime import UTC, datetime

    params: list[dict[str, Any]] = []
    for r in rows:
        d = {c.name: getattr(r, c.name, None) for c in usage_records.c if c.name not in ("id", "estimated")}
        d["ts"] = datetime.fromtimestamp(r.ts, UTC)
        d["cost_usd"] = None if r.cost_nano_usd is None else Decimal(r.cost_nano_usd) / 1_000_000_000
        d["estimated"] = r.usage_source in ("counted", "estimated")
        params.append(d)
    async with store.begin() as conn:
        inserted = {rid for (rid,) in (await conn.execute(stmt, params)).all()}
        fresh = [r for r in rows if r.record_id in inserted]
        if fresh:
            await conn.execute(upsert, rollup_deltas(fresh))
    return len(fresh)


async def _shipped(store: SqlStore, rows: list[UsageRow]) -> int:
    return await write_usage(store, rows)


async def _measure(store: SqlStore, write: Writer, size: int, reps: int) -> float:
    """CPU µs per record over `reps` batches of `size` fresh rows (one warm-up batch first)."""
    await write(store, _rows(size))
    batches = [_rows(size) for _ in range(reps)]
    started = time.process_time()
    for rows in batches:
        assert await write(store, rows) == size
    return (time.process_time() - started) / (reps * size) * 1e6


async def _backend(url: str, sizes: Sequence[int], reps: int) -> dict[tuple[str, int], float]:
    store = open_store(url, feed_mode="local")
    assert isinstance(store, SqlStore)
    try:
        await migrate(store, load_control_plane(ControlCfg(), modules=[], environ={}).migration_plan())
        out = {}
        for size in sizes:
            for name, write in (("sqlalchemy", _sqlalchemy_values), ("shipped", _shipped)):
                out[(name, size)] = await _measure(store, write, size, reps)
                print(f"  {store.dialect} {name} batch {size}: {out[(name, size)]:.1f} µs/record", file=sys.stderr)
        return out
    finally:
        await store.aclose()


def _table(results: dict[str, dict[tuple[str, int], float]], sizes: Sequence[int]) -> str:
    head = "| backend | write path | " + " | ".join(f"batch {s}" for s in sizes) + " |"
    lines = [head, "|---|---|" + "---:|" * len(sizes)]
    labels = {"sqlalchemy": "SQLAlchemy multi-row VALUES + RETURNING",
              "shipped": {"postgresql": "COPY to stage + one statement (asyncpg)",
                          "sqlite": "id lookup + driver executemany"}}
    for backend, got in results.items():
        for name in ("sqlalchemy", "shipped"):
            label = labels[name] if isinstance(labels[name], str) else labels[name][backend]  # type: ignore[index]
            lines.append(f"| {backend} | {label} | " + " | ".join(f"{got[(name, s)]:.1f}" for s in sizes) + " |")
    return "\n".join(lines) + "\n"


def _write_doc(doc: Path, table: str, command: str) -> None:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    section = "\n".join([
        f"{_START} (written by loadtests/metering_write_paths.py --doc) -->",
        "### Metering: gateway CPU µs per usage record, by write path",
        "",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} cores, load {load}; "
        f"{platform.platform()}",
        "- One process pinned to one core writing batches of fresh rows (rollups included); PostgreSQL's own",
        "  CPU not counted (another process), SQLite's counted (in-process).",
        "",
        "```",
        command,
        "```",
        "",
        table.rstrip("\n"),
        _END,
    ])
    write_section(doc, "metering_write_paths", section)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.metering_write_paths", description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--sizes", type=int, nargs="+", default=[50, 250, 1000])
    p.add_argument("--cpu", type=int, default=1, help="pin this process to this core (PostgreSQL to the others)")
    p.add_argument("--doc", type=Path)
    args = p.parse_args(argv)
    others = sorted(set(os.sched_getaffinity(0)) - {args.cpu}) or [args.cpu]
    results: dict[str, dict[tuple[str, int], float]] = {}
    with _postgres(others) as cluster, tempfile.TemporaryDirectory(prefix="llmops-write-paths-") as tmp:
        os.sched_setaffinity(0, {args.cpu})
        results["postgresql"] = asyncio.run(_backend(f"{cluster.url}/postgres", args.sizes, args.reps))
        results["sqlite"] = asyncio.run(_backend(f"sqlite:///{tmp}/usage.db", args.sizes, args.reps))
    table = _table(results, args.sizes)
    print(table)
    if args.doc:
        command = (f".venv/bin/python -m loadtests.metering_write_paths --reps {args.reps} --sizes "
                   f"{' '.join(map(str, args.sizes))} --doc {args.doc}")
        _write_doc(args.doc, table, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
