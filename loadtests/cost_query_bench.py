"""Cost API query times over 10 million usage records, on SQLite and PostgreSQL (issue 9.4: bar < 1 s each).

`python -m loadtests.cost_query_bench [--records 10000000] [--days 32] [--backends sqlite postgresql]
[--repeat 5] [--workdir DIR [--keep] [--reuse]] [--doc docs/benchmarks.md]`

Per backend: migrate an empty database (the host's core migrations), bulk-load ``--records`` synthetic
usage records spread over ``--days`` days (PostgreSQL: asyncpg COPY; SQLite: executemany, 100k rows per
transaction), build ``usage_rollups`` from them with ``rebuild_rollups`` (a day per transaction, as an
operator would), ``VACUUM ANALYZE`` on PostgreSQL (what autovacuum does after a bulk load; SQLite gets no
``ANALYZE``, as a default deployment has none), then time each 30-day report through the module's own query
functions (``CostReports``, what the HTTP handlers call), ``--repeat`` times: the first run and the median.
The totals of the 30-day aggregate are checked against sums kept while generating, so a fast wrong answer
fails the run.

The population is shaped like a real deployment: 50 teams of 10 keys each (key traffic Zipf-distributed,
s = 1.1), 20 routes (12 chat, 3 completions, 3 embeddings, 2 responses), each key using 1-4 of them; 30
models on 5 providers (``vllm`` priced per GPU-hour, $2.50 x 8 GPUs; ``ollama`` unpriced; three priced per
token); half the routes split 80/20 over two models, four routes run an A/B experiment (variants ``a``,
``b``, and none elsewhere); 1 % of requests have no key; 3 % fail; traffic follows the working day and week.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from loadtests.docsection import write_section

__all__ = ["main"]

END = datetime(2026, 11, 1, tzinfo=UTC)  # data ends here (exclusive); the reports cover the last 30 days
WINDOW_DAYS = 30
CHUNK_ROWS = 100_000
GPU_USD_PER_HOUR = Decimal("2.50") * 8
COLUMNS = ("record_id", "request_id", "ts", "endpoint", "route", "model", "provider", "variant", "key_id", "team",
           "stream", "prompt_tokens", "completion_tokens", "cached_read_tokens", "cache_write_tokens",
           "reasoning_tokens", "cost_usd", "price_source", "status", "error", "latency_s", "ttft_s", "attempts",
           "usage_source", "estimated")
PROVIDERS = ("vllm", "openai", "anthropic", "bedrock", "ollama")
ENDPOINTS = ["chat"] * 12 + ["completions"] * 3 + ["embeddings"] * 3 + ["responses"] * 2


# -- the synthetic population --------------------------------------------------------------------

@dataclass(frozen=True)
class Combo:
    """One (key, route, target, variant) a request can have, with its price per token in nano-dollars."""

    team: str | None
    key_id: str | None
    route: str
    model: str
    provider: str
    variant: str | None
    endpoint: str
    prices: tuple[int, int, int, int] | None  # input, output, cached read, cache write; None: not per token
    price_source: str | None


def _population(rng: random.Random) -> tuple[list[Combo], list[float]]:
    models = [f"model-{m:02d}" for m in range(30)]
    provider_of = {m: PROVIDERS[i % 5] for i, m in enumerate(models)}
    prices: dict[str, tuple[int, int, int, int] | None] = {}
    for m in models:
        if provider_of[m] in ("vllm", "ollama"):
            prices[m] = None
        else:  # $0.15-$5 per million input tokens is 150-5000 nano-dollars a token; output 4x, cache 0.1x/1.25x
            base = rng.choice([150, 250, 400, 1000, 2500, 3000, 5000])
            prices[m] = (base, base * 4, base // 10, base * 5 // 4)
    routes = [(f"route-{r:02d}", ENDPOINTS[r]) for r in range(20)]
    targets = {name: ([(models[(r * 3) % 30], 0.8), (models[(r * 3 + 1) % 30], 0.2)] if r % 2 == 0
                      else [(models[(r * 3) % 30], 1.0)]) for r, (name, _) in enumerate(routes)}
    variants = {name: ([("a", 0.5), ("b", 0.5)] if r % 5 == 0 else [(None, 1.0)])
                for r, (name, _) in enumerate(routes)}
    route_popularity = [1.0 / (r + 1) ** 0.7 for r in range(20)]
    keys = list(range(500))
    rng.shuffle(keys)
    combos: list[Combo] = []
    weights: list[float] = []
    for rank, k in enumerate(keys, start=1):
        key_weight = 1.0 / rank ** 1.1
        used = sorted(set(rng.choices(range(20), weights=route_popularity, k=rng.randint(1, 4))))
        shares = [rng.random() + 0.2 for _ in used]
        for r, share in zip(used, shares, strict=True):
            name, endpoint = routes[r]
            for model, w_target in targets[name]:
                for variant, w_variant in variants[name]:
                    price = prices[model]
                    source = "gpu_hour" if provider_of[model] == "vllm" else (None if price is None else "litellm")
                    combos.append(Combo(f"team-{k % 50:02d}", f"key-{k:03d}", name, model, provider_of[model],
                                        variant, endpoint, price, source))
                    weights.append(key_weight * share / sum(shares) * w_target * w_variant)
    keyed = sum(weights)
    for name, endpoint in routes[:12]:  # 1 % without a key: anonymous routes allowed
        model = targets[name][0][0]
        price = prices[model]
        combos.append(Combo(None, None, name, model, provider_of[model], None, endpoint, price,
                            "gpu_hour" if provider_of[model] == "vllm" else (None if price is None else "litellm")))
        weights.append(keyed * 0.01 / 12)
    return combos, weights


def _hour_weights(hours: list[datetime]) -> list[float]:
    """Working day and week: a peak in the (UTC) afternoon, quiet nights, half traffic at weekends."""
    out = []
    for h in hours:
        day = 0.5 + 0.5 * math.sin(math.pi * max(0.0, min(1.0, (h.hour - 6) / 14)))
        out.append(day * (0.5 if h.weekday() >= 5 else 1.0))
    return out


def _token_pool(rng: random.Random, size: int = 4096) -> list[tuple[int, int, int, int, int]]:
    pool = []
    for _ in range(size):
        prompt = int(rng.lognormvariate(6.5, 1.0)) + 1  # median ~665 tokens
        completion = int(rng.lognormvariate(5.0, 1.0))  # median ~150
        cached = prompt * rng.choice([0, 0, 0, 1, 2, 3]) // 4
        cache_write = prompt // 8 if rng.random() < 0.05 else 0
        reasoning = completion // 3 if rng.random() < 0.1 else 0
        pool.append((prompt, completion, cached, min(cache_write, prompt - cached), reasoning))
    return pool


@dataclass
class Expected:
    """What the reports must say about the query window, summed while generating."""

    requests: int = 0
    token_cost_nano: int = 0
    gpu_hours: set[datetime] = field(default_factory=set)
    total_tokens: int = 0

    def cost_usd(self) -> Decimal:
        return Decimal(self.token_cost_nano) / 1_000_000_000 + GPU_USD_PER_HOUR * len(self.gpu_hours)


def generate(records: int, days: int, seed: int, *, sqlite_ts: bool, expected: Expected,
             window_start: datetime) -> Iterator[list[tuple[Any, ...]]]:
    """Chunks of rows in ``COLUMNS`` order, in time order; ``ts`` as SQLite's stored text or a datetime."""
    rng = random.Random(seed)
    combos, weights = _population(rng)
    cum = list(_accumulate(weights))
    pool = _token_pool(rng)
    latencies = [(round(rng.lognormvariate(0.0, 0.7), 4), round(rng.lognormvariate(-1.5, 0.5), 4))
                 for _ in range(1024)]
    hours = [END - timedelta(hours=h) for h in range(days * 24, 0, -1)]
    hw = _hour_weights(hours)
    total_w = sum(hw)
    per_hour = [int(records * w / total_w) for w in hw]
    for i in range(records - sum(per_hour)):
        per_hour[i % len(per_hour)] += 1
    statuses, status_cum = (200, 429, 500, 502), list(_accumulate([0.97, 0.015, 0.01, 0.005]))
    seq = 0
    chunk: list[tuple[Any, ...]] = []
    for hour, n in zip(hours, per_hour, strict=True):
        in_window = hour >= window_start
        prefix = hour.strftime("%Y-%m-%d %H:")
        picks = rng.choices(combos, cum_weights=cum, k=n)
        tokens = rng.choices(pool, k=n)
        codes = rng.choices(statuses, cum_weights=status_cum, k=n)
        lat = rng.choices(latencies, k=n)
        for combo, tok, status, (latency, ttft) in zip(picks, tokens, codes, lat, strict=True):
            seq += 1
            us = int(rng.random() * 3_600_000_000)
            ts: Any = (f"{prefix}{us // 60_000_000:02d}:{us // 1_000_000 % 60:02d}.{us % 1_000_000:06d}"
                       if sqlite_ts else hour + timedelta(microseconds=us))
            if status == 200:
                prompt, completion, cached, cache_write, reasoning = tok
                if combo.endpoint == "embeddings":
                    completion = reasoning = 0
                error = None
            else:
                prompt = completion = cached = cache_write = reasoning = 0
                error = "rate_limited" if status == 429 else "upstream_error"
            p = combo.prices
            cost = None if p is None else ((prompt - cached - cache_write) * p[0] + completion * p[1]
                                           + cached * p[2] + cache_write * p[3])
            estimated = seq % 50 == 0
            rid = f"{seq:032x}"
            chunk.append((rid, rid, ts, combo.endpoint, combo.route, combo.model, combo.provider, combo.variant,
                          combo.key_id, combo.team, seq % 2 == 0, prompt, completion, cached, cache_write, reasoning,
                          cost, combo.price_source, status, error, latency, ttft if status == 200 else None, 1,
                          "estimated" if estimated else "upstream", estimated))
            if in_window:
                expected.requests += 1
                expected.token_cost_nano += cost or 0
                expected.total_tokens += prompt + completion
                if combo.provider == "vllm":
                    expected.gpu_hours.add(hour)
            if len(chunk) >= CHUNK_ROWS:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def _accumulate(values: list[float]) -> Iterator[float]:
    total = 0.0
    for v in values:
        total += v
        yield total


# -- backends ------------------------------------------------------------------------------------

def _as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def _pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[4]))
    if not found:
        raise SystemExit("PostgreSQL server binaries not installed (apt-get install postgresql)")
    return found[-1].parent


class Postgres:
    """A throwaway cluster under ``root`` (kept with --keep; started again with --reuse)."""

    def __init__(self, root: Path) -> None:
        self.root, self.bin = root, _pg_bin()
        self.port = 0

    def start(self) -> str:
        import socket

        fresh = not (self.root / "data").exists()
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:  # the server runs as postgres: it must reach its directory
            for parent in self.root.parents:
                if parent == Path(tempfile.gettempdir()) or parent == Path("/"):
                    break
                parent.chmod(parent.stat().st_mode | 0o711)
            shutil.chown(self.root, "postgres", "postgres")
        if fresh:
            subprocess.run(_as_postgres([str(self.bin / "initdb"), "-D", str(self.root / "data"), "-U", "postgres",
                                         "-A", "trust", "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"]),
                           check=True, capture_output=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off"
        subprocess.run(_as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-l",
                                     str(self.root / "server.log"), "-w", "-t", "60", "-o", opts, "start"]),
                       check=True, capture_output=True)
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        subprocess.run(_as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast", "-w",
                                     "stop"]), check=False, capture_output=True)

    def version(self) -> str:
        out = subprocess.run([str(self.bin / "postgres"), "--version"], capture_output=True, text=True).stdout
        return out.strip().removeprefix("postgres (PostgreSQL) ")


async def _load_sqlite(path: Path, chunks: Iterator[list[tuple[Any, ...]]]) -> int:
    """executemany in 100k-row transactions on a plain sqlite3 connection (the bench's own, no pool)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA cache_size=-1000000")  # 1 GB: the indexes of 10M rows stay in memory while loading
    sql = f"INSERT INTO usage_records ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    count = 0
    try:
        for chunk in chunks:
            db.execute("BEGIN")
            db.executemany(sql, chunk)
            db.execute("COMMIT")
            count += len(chunk)
    finally:
        db.close()
    return count


async def _load_postgres(url: str, chunks: Iterator[list[tuple[Any, ...]]]) -> int:
    import asyncpg

    conn = await asyncpg.connect(url)
    count = 0
    try:
        for chunk in chunks:
            await conn.copy_records_to_table("usage_records", records=chunk, columns=list(COLUMNS))
            count += len(chunk)
    finally:
        await conn.close()
    return count


async def _vacuum(url: str) -> None:
    """What autovacuum does after a bulk load (VACUUM cannot run inside the store's transactions)."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute("VACUUM ANALYZE usage_rollups")
        await conn.execute("VACUUM ANALYZE observability_daily_usage")
    finally:
        await conn.close()


# -- the run -------------------------------------------------------------------------------------

@dataclass
class Result:
    backend: str
    version: str
    records: int
    rollup_rows: int
    window_rollup_rows: int
    summary_rows: int
    window_records: int
    load_s: float
    rebuild_s: float
    summary_s: float
    db_bytes: int
    timings: dict[str, list[float]]


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


async def _time(label: str, run: Callable[[], Awaitable[Any]], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await run()
        times.append(time.perf_counter() - started)
    print(f"  {label}: first {times[0] * 1000:.0f} ms, median {statistics.median(times) * 1000:.0f} ms", flush=True)
    return times


async def _run_backend(backend: str, args: argparse.Namespace, workdir: Path) -> Result:
    from sqlalchemy import func, insert, select, update

    from adapters.adminapi import ControlCfg, load_control_plane
    from adapters.dataplane import usage_rollups
    from adapters.store import Store, migrate, open_store
    from control.observability import (
        CostReports,
        ObservabilitySettings,
        UsageQuery,
        Window,
        module,
        rebuild_rollups,
        refresh_days,
    )
    from control.observability.tables import daily_usage, dirty_days

    async def count(store: Store, table: Any, *where: Any) -> int:
        async with store.read() as conn:
            return int((await conn.execute(select(func.count()).select_from(table).where(*where))).scalar_one())

    home = workdir / backend
    marker = home / "dataset.json"
    dataset = {"records": args.records, "days": args.days, "seed": args.seed}
    reuse = args.reuse and marker.exists() and _dataset_of(marker) == dataset
    if not reuse:
        shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True, exist_ok=True)
    pg = Postgres(home / "pg") if backend == "postgresql" else None
    url = pg.start() if pg else f"sqlite:///{home / 'bench.db'}"
    version = pg.version() if pg else sqlite3.sqlite_version
    window = Window(END - timedelta(days=WINDOW_DAYS), END)
    expected = Expected()
    store = open_store(url, feed_mode="local", timeout_s=600)
    saved: dict[str, Any] = json.loads(marker.read_text()) if reuse else {**dataset}
    try:
        # the host's core migrations and observability's (the daily summary and its triggers)
        await migrate(store, load_control_plane(ControlCfg(), modules=[module], environ={}).migration_plan())
        if reuse:
            expected = Expected(saved["requests"], saved["token_cost_nano"],
                                {datetime.fromisoformat(h) for h in saved["gpu_hours"]}, saved["total_tokens"])
        else:
            chunks = generate(args.records, args.days, args.seed, sqlite_ts=pg is None, expected=expected,
                              window_start=window.start)
            started = time.perf_counter()
            loaded = await (_load_postgres(url, chunks) if pg else _load_sqlite(home / "bench.db", chunks))
            saved["load_s"] = time.perf_counter() - started
            print(f"{backend}: loaded {loaded:,} records in {saved['load_s']:.0f} s", flush=True)
            started = time.perf_counter()
            await rebuild_rollups(store, END - timedelta(days=args.days), END,
                                  gpu_usd_per_hour={"vllm": GPU_USD_PER_HOUR}, timeout_s=600)
            saved["rebuild_s"] = time.perf_counter() - started
            print(f"{backend}: rollups rebuilt in {saved['rebuild_s']:.0f} s", flush=True)
            saved.update(requests=expected.requests, token_cost_nano=expected.token_cost_nano,
                         gpu_hours=sorted(h.isoformat() for h in expected.gpu_hours),
                         total_tokens=expected.total_tokens)
        async with store.read() as conn:
            dirty = list((await conn.execute(select(dirty_days.c.day))).scalars())
        started = time.perf_counter()  # what the background refresher does; here all at once, timed
        await refresh_days(store, dirty, timeout_s=600)
        if not reuse:  # a reused database has only the day the last run left marked
            saved["summary_s"] = time.perf_counter() - started
            print(f"{backend}: daily summary of {len(dirty)} days built in {saved['summary_s']:.0f} s", flush=True)
        marker.write_text(json.dumps(saved))
        # Steady state: today is still being written, so its summary is always dirty: the reports read the
        # last day of the window from the hourly rows (a no-op update fires the trigger, as a write would).
        async with store.begin() as conn:
            await conn.execute(update(usage_rollups).where(usage_rollups.c.hour == window.end - timedelta(hours=1))
                               .values(requests=usage_rollups.c.requests))
        if pg:
            await _vacuum(url)
        rollup_rows = await count(store, usage_rollups)
        window_rows = await count(store, usage_rollups, usage_rollups.c.hour >= window.start,
                                  usage_rollups.c.hour < window.end)
        summary_rows = await count(store, daily_usage, daily_usage.c.day >= window.start,
                                   daily_usage.c.day < window.end)
        reports = CostReports(store, ObservabilitySettings(gpus={"vllm": 8}))
        aggregate = await reports.cost_aggregate(window, None)
        assert aggregate.requests == expected.requests, (aggregate.requests, expected.requests)
        assert Decimal(aggregate.cost_usd or 0) == expected.cost_usd(), (aggregate.cost_usd, expected.cost_usd())
        assert aggregate.total_tokens == expected.total_tokens
        assert aggregate.gpu_hours == 8 * len(expected.gpu_hours)
        by_team_day = UsageQuery(window.start, window.end, "day", ("team",))
        queries: dict[str, Callable[[], Awaitable[Any]]] = {
            "usage by team by day": lambda: reports.usage(by_team_day),
            "usage by model, total": lambda: reports.usage(UsageQuery(window.start, window.end, "total", ("model",))),
            # granularity=hour covers at most max_hourly_range_days (7) per query: the longest hourly report
            "usage by team by hour, 7 days": lambda: reports.usage(
                UsageQuery(window.end - timedelta(days=7), window.end, "hour", ("team",))),
            "top spenders by team": lambda: reports.top_spenders(window, "team", 10),
            "top spenders by key": lambda: reports.top_spenders(window, "key_id", 10),
            "cost-profiles": lambda: reports.cost_profiles(window),
            "cost-aggregate": lambda: reports.cost_aggregate(window, None),
            "cost-aggregate gpu": lambda: reports.cost_aggregate(window, "gpu"),
        }
        print(f"{backend}: {window_rows:,} hourly rollup rows and {summary_rows:,} summary rows in the window")
        timings = {label: await _time(label, run, args.repeat) for label, run in queries.items()}
        # For comparison: every day dirty (right after a rebuild or the migration, before the refresher ran),
        # so the whole window comes from the hourly rollups.
        async with store.begin() as conn:
            marked = set((await conn.execute(select(dirty_days.c.day))).scalars())
            await conn.execute(insert(dirty_days), [{"day": day} for day in (
                window.start + timedelta(days=d) for d in range(WINDOW_DAYS)) if day not in marked])
        timings["usage by team by day, hourly rows only"] = await _time(
            "hourly rows only", lambda: reports.usage(by_team_day), min(args.repeat, 3))
        await refresh_days(store, [window.start + timedelta(days=d) for d in range(WINDOW_DAYS)], timeout_s=600)
    finally:
        await store.aclose()
        if pg:
            pg.stop()
    return Result(backend, version, args.records, rollup_rows, window_rows, summary_rows, expected.requests,
                  saved.get("load_s", 0.0), saved.get("rebuild_s", 0.0), saved.get("summary_s", 0.0),
                  _dir_bytes(home), timings)


def _dataset_of(marker: Path) -> dict[str, Any]:
    saved = json.loads(marker.read_text())
    return {k: saved[k] for k in ("records", "days", "seed")}


def _table(results: list[Result]) -> str:
    head = "| Query (30 days) | " + " | ".join(f"{r.backend} first | {r.backend} median" for r in results) + " |"
    rule = "|---|" + "---:|---:|" * len(results)
    lines = [head, rule]
    for label in results[0].timings:
        cells = []
        for r in results:
            times = r.timings[label]
            cells += [f"{times[0] * 1000:.0f} ms", f"{statistics.median(times) * 1000:.0f} ms"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _facts(results: list[Result], args: argparse.Namespace) -> list[str]:
    out = []
    for r in results:
        out.append(f"- {r.backend} {r.version}: {args.records:,} records over {args.days} days "
                   f"({r.window_records:,} in the 30-day window), loaded in "
                   f"{r.load_s:.0f} s ({args.records / max(r.load_s, 1e-9):,.0f} rows/s); `rebuild_rollups` "
                   f"{r.rebuild_s:.0f} s, daily summary {r.summary_s:.0f} s; {r.rollup_rows:,} hourly rollup rows "
                   f"({r.window_rollup_rows:,} in the window), {r.summary_rows:,} summary rows in the window; "
                   f"{r.db_bytes / 2**30:.1f} GiB on disk.")
    return out


def _section(results: list[Result], args: argparse.Namespace, command: str) -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    worst = max(max(statistics.median(t) for label, t in r.timings.items() if "hourly rows only" not in label)
                for r in results)
    return "\n".join([
        "<!-- cost_query:start (written by loadtests/cost_query_bench.py --doc) -->",
        "## Cost API: 30-day reports over 10 million usage records",
        "",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} cores, load {load}",
        f"- OS: {platform.platform()}; Python {platform.python_version()}",
        "- Through `control.observability.CostReports`, the functions the HTTP handlers call; each query ran",
        f"  {args.repeat} times (first run and median). Whole days come from observability's daily summary of",
        "  `usage_rollups`, the last day of the window from the hourly rollups (kept dirty, as today always is in",
        "  production). The last row is the same report with every day dirty (hourly rows only: right after a",
        "  rebuild or the migration, until the background refresher catches up). The 30-day totals are checked",
        "  against sums kept while generating. Population: 50 teams, 500 keys (Zipf), 20 routes, 30 models, 5",
        "  providers (one GPU-hour priced), 3 variants, 4 endpoints (see the module docstring). PostgreSQL:",
        "  default settings except fsync off, `VACUUM ANALYZE` of both tables after the load; SQLite: WAL, no",
        "  `ANALYZE`.",
        *_facts(results, args),
        "- Load, rebuild and summary times count generating the records in Python, and depend on whatever else",
        "  the machine runs (the load average above is the one when the queries ran).",
        f"- Bar: under 1 s each; slowest median here {worst * 1000:.0f} ms.",
        *(["- Queries timed on the databases an earlier run of the same command built and kept (`--workdir DIR",
           "  --keep`, then `--reuse`); load, rebuild and summary times are that run's."] if args.reuse else []),
        "",
        "```",
        command,
        "```",
        "",
        _table(results),
        "<!-- cost_query:end -->",
    ])


def _write_doc(doc: Path, section: str) -> None:
    write_section(doc, "cost_query", section)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=10_000_000)
    p.add_argument("--days", type=int, default=32, help="days of data (the reports cover the last 30)")
    p.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--seed", type=int, default=9)
    p.add_argument("--workdir", type=Path, help="where the databases go (default: a temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep the databases (in --workdir) for --reuse")
    p.add_argument("--reuse", action="store_true", help="time the queries on databases a --keep run left")
    p.add_argument("--doc", type=Path, help="write the table into this markdown file (its own section)")
    args = p.parse_args(argv)
    if args.days <= WINDOW_DAYS:
        p.error(f"--days must exceed {WINDOW_DAYS}, so the window has data on both sides")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cost-query-bench-"))
    results = []
    try:
        for backend in args.backends:
            results.append(asyncio.run(_run_backend(backend, args, workdir)))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(_table(results))
    if args.doc:
        command = (f".venv/bin/python -m loadtests.cost_query_bench --records {args.records} --days {args.days} "
                   f"--backends {' '.join(args.backends)} --repeat {args.repeat} --doc {args.doc}")
        _write_doc(args.doc, _section(results, args, command))


if __name__ == "__main__":
    main()
