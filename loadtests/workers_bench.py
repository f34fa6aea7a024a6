"""Where `--workers 2` spends CPU, at c=64 (issue 8: workers share nothing on the hot path).

`python -m loadtests.workers_bench [--rounds 6] [--duration 3] [--server-cpus 1] [--load-cpu 0]`

Three series against the canned nginx upstream, every gateway pinned to the same
server core, wrk and nginx on the other, run once per round in rotating order so
drift on this shared machine hits each alike:

- ``w1``: one single-worker gateway, c=64;
- ``indep2``: two independent single-worker gateways, c=32 each, loaded at once: two
  processes that share nothing but the core;
- ``w2``: ``llmops serve --workers 2``, c=64.

A server's CPU time is the sum over its whole process tree from /proc (supervisor
and workers). Issue 8's target: CPU per request with two workers within 10 % of one
worker's. On a box where the workers must share a core, ``indep2`` / ``w1`` is what
time-slicing two processes costs, and ``w2`` / ``indep2`` is what the workers share on
top of that; req/s can only rise as far as the cores beside the load generator
allow, so the table also gives the projection per core (requests per CPU-second).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from loadtests import bench_servers as servers
from loadtests.paired import process_cpu_s
from loadtests.procs import free_port, stop_process
from loadtests.report import Check, fmt
from loadtests.upstream_nginx import run_nginx
from loadtests.wrk import chat_body, run_wrk

__all__ = ["CPU_TARGET", "SERIES", "Sample", "main", "tree_cpu_s", "workers_table"]

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


@dataclass(frozen=True)
class Sample:
    """One run of one series: server CPU µs per request (process trees summed) and req/s."""

    series: str
    cpu_us: float
    rps: float


SERIES = ("w1", "indep2", "w2")
_ORDERS = ("w1 indep2 w2", "indep2 w2 w1", "w2 w1 indep2", "w2 indep2 w1", "indep2 w1 w2", "w1 w2 indep2")


def workers_table(samples: Sequence[Sample]) -> str:
    """Markdown: medians per series, the three ratios, and the verdicts.

    `w1`: one worker at c=64. `indep2`: two independent single-worker gateways on the same
    core, c=32 each (nothing shared but the core). `w2`: `--workers 2` at c=64."""
    by = {name: [x for x in samples if x.series == name] for name in SERIES}
    if not all(by.values()):
        return "(no runs)\n"
    cpu = {k: statistics.median(x.cpu_us for x in v) for k, v in by.items()}
    rps = {k: statistics.median(x.rps for x in v) for k, v in by.items()}
    w2_w1, indep_w1, w2_indep = cpu["w2"] / cpu["w1"], cpu["indep2"] / cpu["w1"], cpu["w2"] / cpu["indep2"]
    lines = [
        f"{len(by['w1'])} rounds, each series once per round in rotating order, medians",
        "",
        "| series | req/s | CPU µs / request | req per CPU-second (per core) |",
        "|---|---:|---:|---:|",
        *(f"| {label} | {fmt(rps[k], 0)} | {fmt(cpu[k], 1)} | {fmt(1e6 / cpu[k], 0)} |" for k, label in (
            ("w1", "--workers 1, c=64"), ("indep2", "two independent gateways, c=32 each"),
            ("w2", "--workers 2, c=64"))),
        "",
        f"- CPU per request, two independent processes / one: {fmt(indep_w1)} (what sharing one core costs)",
        f"- CPU per request, `--workers 2` / two independent processes: {fmt(w2_indep)} (what the workers share)",
        "",
        Check(f"CPU per request with 2 workers ≤ {CPU_TARGET:.2f} x one worker's", w2_w1 <= CPU_TARGET,
              f"ratio {fmt(w2_w1)}").line,
        Check(f"--workers 2 costs ≤ {CPU_TARGET:.2f} x two independent processes on the same core (share nothing)",
              w2_indep <= CPU_TARGET, f"ratio {fmt(w2_indep)}").line,
    ]
    return "\n".join(lines) + "\n"


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtests.workers_bench", description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=6, help="rounds of the three series (default 6)")
    p.add_argument("--duration", type=float, default=3.0, help="seconds per run (default 3)")
    p.add_argument("--server-cpus", default="1", help="comma-separated cores for every gateway (default 1)")
    p.add_argument("--load-cpu", type=int, default=0, help="core for wrk and nginx (default 0)")
    args = p.parse_args(argv)
    args.server_cpus = [int(c) for c in args.server_cpus.split(",")]
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    return args


def _measure(series: str, gateways: dict[str, list[servers.Running]], body: str, duration_s: float,
             load_cpu: int) -> Sample:
    runs = gateways[series]
    pids = [g.proc.pid for g in runs]
    before = sum(tree_cpu_s(p) or 0.0 for p in pids)
    conns = 64 // len(runs)
    with ThreadPoolExecutor(len(runs)) as pool:
        results = list(pool.map(lambda g: run_wrk(g.base, body, connections=conns, duration_s=duration_s,
                                                  cpus=[load_cpu]), runs))
    spent = sum(tree_cpu_s(p) or 0.0 for p in pids) - before
    done = sum(r.requests for r in results)
    return Sample(series, spent * 1e6 / done if done else float("inf"), sum(r.rps for r in results))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    body = chat_body("bench")
    samples: list[Sample] = []
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="llmops-workers-bench-")))
        up = stack.enter_context(run_nginx(cpus=[args.load_cpu]))

        def start(name: str, workers: int) -> servers.Running:
            cfg = servers.gateway_config(free_port(), up.chat_url, up.stream_url, up.chat_url, up.chat_url)
            cfg["control"] = {"data_dir": str(tmp / f"control-{name}")}  # each its own SQLite file
            gw = servers.start_gateway(cfg, args.server_cpus, tmp, workers=workers, name=name)
            stack.callback(stop_process, gw.proc)
            servers.probe(gw.base, body)
            return gw

        gateways = {"w1": [start("w1", 1)], "indep2": [start("indep-a", 1), start("indep-b", 1)],
                    "w2": [start("w2", 2)]}
        print(f"{args.rounds} rounds x 3 series x {args.duration:.0f} s; gateways on cores {args.server_cpus}, "
              f"wrk and nginx on core {args.load_cpu} (this box: {os.cpu_count()} cores)", file=sys.stderr, flush=True)
        for i in range(args.rounds):
            for series in _ORDERS[i % len(_ORDERS)].split():
                samples.append(_measure(series, gateways, body, args.duration, args.load_cpu))
            last = {x.series: f"{x.cpu_us:.0f} µs {x.rps:.0f}/s" for x in samples[-3:]}
            print(f"  round {i + 1}/{args.rounds}: {last}", file=sys.stderr, flush=True)
    print(workers_table(samples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
