"""Metering on (usage records written to PostgreSQL) against metering off, at c=64, paired (issue 9's 0.90x bar).

`python -m loadtests.metering_bench [--pairs 8] [--pair-duration 3] [--backend postgresql|sqlite]
[--server-cpu 1] [--load-cpu 0] [--doc docs/benchmarks.md]`

Two single-worker gateways, identical but for `metering.enabled`, each with the control plane on its own
database (a throwaway PostgreSQL cluster, pinned with nginx and wrk to the load core; or SQLite files,
whose writes run in the gateway's own process), pinned to the same server core, against the canned nginx
upstream. wrk loads them in alternating runs (ABBA, loadtests/paired.py); the verdict is on the median
per-pair req/s ratio, with each gateway's CPU time per request from /proc beside it. At the end the
metered database must hold one usage record per request the metered gateway answered, and the rollups
must sum to them: a benchmark of a writer that silently wrote nothing would prove nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from loadtests import bench_servers as servers
from loadtests.docsection import write_section
from loadtests.paired import PairedRun, measure_pairs, pair_table, paired_parser, parse_paired
from loadtests.procs import cpu_prefix, free_port, stop_process
from loadtests.report import Check, fmt
from loadtests.sweep import Target
from loadtests.upstream_nginx import run_nginx
from loadtests.wrk import chat_body

__all__ = ["RPS_TARGET", "main", "metering_table", "write_doc"]

RPS_TARGET = 0.90  # req/s with metering writing to the store over metering off, at least
_START, _END = "<!-- metering:start", "<!-- metering:end -->"


def metering_table(runs: Sequence[PairedRun], backend: str = "postgresql", db_cpu_us: float | None = None) -> str:
    """Markdown: median req/s and CPU µs per request of each side, the ratios, a verdict.

    In each run `floor` is the gateway with metering off and `gateway` the one writing usage records."""
    if not runs:
        return "(no runs)\n"
    table, rps_ratio, cpu_ratio = pair_table(runs, "metering off", f"metering on ({backend})", "on / off",
                                             "off's CPU over on's")
    lines = [
        *table,
        *([f"PostgreSQL's own CPU (on the load core, beside wrk and nginx): {fmt(db_cpu_us, 1)} µs per metered "
           "request.", ""] if db_cpu_us is not None else []),
        Check(f"metering on req/s ≥ {RPS_TARGET:.2f} x off (median paired ratio)", rps_ratio >= RPS_TARGET,
              f"ratio {fmt(rps_ratio)}; CPU ratio {fmt(cpu_ratio)}").line,
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class _Database:
    """Where one gateway's control plane lives, and how to count its usage rows."""

    url: str
    count_sql: list[str]  # argv printing "records|rollup_requests"


@dataclass(frozen=True)
class Cluster:
    url: str  # postgresql://…:port (no database)
    bin_dir: Path
    data_dir: Path

    def cpu_s(self) -> float | None:
        """CPU seconds of the server so far: the postmaster, its live backends, and those that exited."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            total = _proc_cpu_s(pid, with_children=True)
            return total + sum(_proc_cpu_s(int(c)) for c in children)
        except (OSError, ValueError, IndexError):
            return None


def _proc_cpu_s(pid: int, with_children: bool = False) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # exited meanwhile: its time is in the postmaster's children's total
        return 0.0
    ticks = int(fields[11]) + int(fields[12]) + ((int(fields[13]) + int(fields[14])) if with_children else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def _postgres(cpus: Sequence[int]) -> Iterator[Cluster]:
    """A throwaway cluster (fsync off, as the test suite's), pinned to `cpus`."""
    # A directory of its own: the server's user must be able to enter it.
    with tempfile.TemporaryDirectory(prefix="llmops-metering-pg-") as tmp, _cluster(Path(tmp), cpus) as found:
        yield found


@contextlib.contextmanager
def _cluster(root: Path, cpus: Sequence[int]) -> Iterator[Cluster]:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[4]))
    if not found:
        raise SystemExit("PostgreSQL server binaries not installed (apt-get install postgresql)")
    bin_dir = found[-1].parent
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", free_port()
    subprocess.run([*as_pg, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync",
                    "-E", "UTF8", "--locale=C.UTF-8"], check=True, capture_output=True)
    opts = (f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off")
    subprocess.run([*cpu_prefix(cpus), *as_pg, str(bin_dir / "pg_ctl"), "-D", str(data), "-l",
                    str(root / "server.log"), "-w", "-o", opts, "start"], check=True, capture_output=True)
    try:
        yield Cluster(f"postgresql://postgres@127.0.0.1:{port}", bin_dir, data)
    finally:
        subprocess.run([*as_pg, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       check=False, capture_output=True)


def _pg_database(cluster: Cluster, name: str) -> _Database:
    base = cluster.url
    port = base.rsplit(":", 1)[1]
    psql = [str(cluster.bin_dir / "psql"), "-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-p", port, "-U", "postgres"]
    subprocess.run([*psql, "-d", "postgres", "-c", f'CREATE DATABASE "{name}"'], check=True, capture_output=True)
    count = [*psql, "-d", name, "-c", _COUNT_SQL]
    return _Database(f"{base}/{name}", count)


_COUNT_SQL = ("SELECT (SELECT count(*) FROM usage_records) || '|' || "
              "(SELECT coalesce(sum(requests), 0) FROM usage_rollups)")


def _sqlite_database(path: Path) -> _Database:
    script = f"import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute({_COUNT_SQL!r}).fetchone()[0])"
    return _Database(f"sqlite:///{path}", [sys.executable, "-c", script, str(path)])


def _stored(db: _Database) -> tuple[int, int]:
    out = subprocess.run(db.count_sql, check=True, capture_output=True, text=True).stdout.strip()
    records, rolled = out.split("|")
    return int(records), int(rolled)


def _served(base: str, route: str = "bench") -> int:
    """Requests the gateway answered on `route`, from its own /metrics."""
    import urllib.request

    with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("llmops_requests_total{") and f'route="{route}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def write_doc(doc: Path, table: str, command: str, backend: str, stored: tuple[int, int, int]) -> None:
    """Replace (or append) this benchmark's own section of `doc`."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    section = "\n".join([
        f"{_START} (written by loadtests/metering_bench.py --doc) -->",
        "## Metering: usage records written to the store vs metering off",
        "",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} cores, load {load}",
        f"- OS: {platform.platform()}; Python {platform.python_version()}; SQLite {sqlite3.sqlite_version}",
        "- Two single-worker gateways on one core, identical but for `metering.enabled`, each with its control",
        f"  plane on its own {backend} database; the canned nginx upstream and wrk (c=64)"
        + (" share the other core with PostgreSQL." if backend == "postgresql"
           else " on the other core; SQLite runs in the gateway's process."),
        "  Alternating runs (ABBA); CPU is the gateway process's own (user + system) per request.",
        f"- Check after the runs: the metered gateway answered {stored[0]:,} requests; its database held "
        f"{stored[1]:,} usage records and rollups summing to {stored[2]:,}.",
        "",
        "```",
        command,
        "```",
        "",
        table.rstrip("\n"),
        _END,
    ])
    write_section(doc, "metering", section)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = paired_parser("loadtests.metering_bench", __doc__.splitlines()[0], pairs=8)
    p.add_argument("--backend", choices=["postgresql", "sqlite"], default="postgresql")
    return parse_paired(p, argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    body = chat_body("bench")
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="llmops-metering-bench-")))
        up = stack.enter_context(run_nginx(cpus=[args.load_cpu]))
        if args.backend == "postgresql":
            cluster: Cluster | None = stack.enter_context(_postgres([args.load_cpu]))
            assert cluster is not None
            dbs = {side: _pg_database(cluster, f"bench_{side}") for side in ("off", "on")}
        else:
            cluster = None
            dbs = {side: _sqlite_database(tmp / f"control-{side}.db") for side in ("off", "on")}
        targets, pids, bases = [], [], []
        for side in ("off", "on"):
            cfg = servers.gateway_config(free_port(), up.chat_url, up.stream_url, up.chat_url, up.chat_url)
            cfg["control"] = {"data_dir": str(tmp / f"control-{side}"), "database_url": dbs[side].url,
                              "modules": []}
            cfg["metering"] = {"enabled": side == "on"}
            gw = servers.start_gateway(cfg, [args.server_cpu], tmp, name=f"gateway-{side}")
            stack.callback(stop_process, gw.proc)
            servers.probe(gw.base, body)
            targets.append(Target(f"metering-{side}", gw.label, gw.base, body))
            pids.append(gw.proc.pid)
            bases.append(gw.base)
        pg_before = cluster.cpu_s() if cluster else None
        runs = measure_pairs(targets[0], targets[1], pids[0], pids[1], concurrency=64, pairs=args.pairs,
                             duration_s=args.pair_duration, wrk_cpus=[args.load_cpu], names=("off", "on"))
        pg_after = cluster.cpu_s() if cluster else None
        served = _served(bases[1])
        deadline = time.monotonic() + 30
        while (stored := _stored(dbs["on"]))[0] < served and time.monotonic() < deadline:
            time.sleep(0.5)  # the writer's last batches (every 0.25 s)
        off_rows = _stored(dbs["off"])[0]
    db_cpu_us = None
    if pg_before is not None and pg_after is not None and served:
        db_cpu_us = (pg_after - pg_before) * 1e6 / served
    table = metering_table(runs, args.backend, db_cpu_us)
    print(table)
    print(f"metered gateway answered {served} requests on the bench route; its database holds {stored[0]} usage "
          f"records (rollups: {stored[1]} requests); the unmetered one holds {off_rows}")
    ok = stored[0] >= served and stored[1] == stored[0] and off_rows == 0
    if not ok:
        print("FAIL: the metered database does not hold one record per answered request", file=sys.stderr)
    if args.doc:
        command = (f".venv/bin/python -m loadtests.metering_bench --pairs {args.pairs} --pair-duration "
                   f"{args.pair_duration:g} --backend {args.backend} --doc {args.doc}")
        write_doc(args.doc, table, command, args.backend, (served, *stored))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
