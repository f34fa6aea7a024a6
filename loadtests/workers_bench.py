"""`--workers 1` against `--workers 2` at c=64, paired (issue 8: workers share nothing on the hot path).

`python -m loadtests.workers_bench [--pairs 6] [--pair-duration 3] [--server-cpus 1] [--load-cpu 0]`

Two gateways with the bench's config (loadtests/bench_servers.py) run side by
side against the canned nginx upstream, pinned to the same server cores; wrk
loads them in alternating runs (ABBA, loadtests/paired.py). A server's CPU
time is the sum over its whole process tree from /proc: the supervisor and
every worker. The target: CPU time per request with two workers within 10 % of
one worker's. req/s with two workers can only rise as far as the cores beside
the load generator allow, so the table also gives the projection per core:
requests per CPU-second, what each dedicated core would serve.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from loadtests import bench_servers as servers
from loadtests.paired import PairedRun, measure_pairs, process_cpu_s
from loadtests.procs import free_port, stop_process
from loadtests.report import Check, fmt
from loadtests.sweep import Target
from loadtests.upstream_nginx import run_nginx
from loadtests.wrk import chat_body

__all__ = ["CPU_TARGET", "main", "tree_cpu_s", "workers_table"]

CPU_TARGET = 1.10  # two workers' CPU per request over one worker's, at most


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def tree_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of `pid` and all its live descendants, or None where `pid` is unreadable."""
    own = process_cpu_s(pid)
    if own is None:
        return None
    return own + sum(tree_cpu_s(c) or 0.0 for c in _children(pid))


def workers_table(runs: Sequence[PairedRun]) -> str:
    """Markdown: median req/s, CPU µs per request and requests per CPU-second of each, the ratios, a verdict.

    In each run `floor` is the one-worker gateway and `gateway` the two-worker one."""
    if not runs:
        return "(no runs)\n"

    def median(values: Sequence[float | None]) -> float | None:
        got = [v for v in values if v]
        return statistics.median(got) if got else None

    rps = (median([r.floor.rps for r in runs]), median([r.gateway.rps for r in runs]))
    cpu = (median([r.floor_cpu_us for r in runs]), median([r.gateway_cpu_us for r in runs]))
    per_core = tuple(1e6 / c if c else None for c in cpu)
    rps_ratio = median([r.ratio for r in runs])
    cpu_ratio = cpu[1] / cpu[0] if cpu[0] and cpu[1] else None
    lines = [
        f"{len(runs)} pairs at c=64, medians",
        "",
        "| | req/s | CPU µs / request | req per CPU-second (per core) |",
        "|---|---:|---:|---:|",
        f"| --workers 1 | {fmt(rps[0], 0)} | {fmt(cpu[0], 1)} | {fmt(per_core[0], 0)} |",
        f"| --workers 2 | {fmt(rps[1], 0)} | {fmt(cpu[1], 1)} | {fmt(per_core[1], 0)} |",
        f"| 2 / 1 | {fmt(rps_ratio)} | {fmt(cpu_ratio)} | {fmt(1 / cpu_ratio if cpu_ratio else None)} |",
        "",
        Check(f"CPU per request with 2 workers ≤ {CPU_TARGET:.2f} x one worker's",
              None if cpu_ratio is None else cpu_ratio <= CPU_TARGET,
              f"ratio {fmt(cpu_ratio)}").line,
    ]
    return "\n".join(lines) + "\n"


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtests.workers_bench", description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=6, help="paired runs (default 6)")
    p.add_argument("--pair-duration", type=float, default=3.0, help="seconds per run (default 3)")
    p.add_argument("--concurrency", type=int, default=64, help="wrk connections (default 64)")
    p.add_argument("--server-cpus", default="1", help="comma-separated cores for both gateways (default 1)")
    p.add_argument("--load-cpu", type=int, default=0, help="core for wrk and nginx (default 0)")
    args = p.parse_args(argv)
    args.server_cpus = [int(c) for c in args.server_cpus.split(",")]
    if args.pairs < 1:
        p.error("--pairs must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    body = chat_body("bench")
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="llmops-workers-bench-")))
        up = stack.enter_context(run_nginx(cpus=[args.load_cpu]))
        targets, pids = [], []
        for n in (1, 2):
            cfg = servers.gateway_config(free_port(), up.chat_url, up.stream_url, up.chat_url, up.chat_url)
            cfg["control"] = {"data_dir": str(tmp / f"control-w{n}")}  # each its own SQLite file
            gw = servers.start_gateway(cfg, args.server_cpus, tmp, workers=n, name=f"gateway-w{n}")
            stack.callback(stop_process, gw.proc)
            servers.probe(gw.base, body)
            targets.append(Target(f"w{n}", gw.label, gw.base, body))
            pids.append(gw.proc.pid)
        print(f"{args.pairs} pairs x {args.pair_duration:.0f} s at c={args.concurrency}; gateways on cores "
              f"{args.server_cpus}, wrk and nginx on core {args.load_cpu} (this box: {os.cpu_count()} cores)",
              file=sys.stderr, flush=True)
        runs = measure_pairs(targets[0], targets[1], pids[0], pids[1], concurrency=args.concurrency,
                             pairs=args.pairs, duration_s=args.pair_duration, wrk_cpus=[args.load_cpu],
                             cpu_s=tree_cpu_s, names=("w1", "w2"))
    print(workers_table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
