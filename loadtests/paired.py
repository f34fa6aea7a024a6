"""The floor-vs-gateway target at c=64, measured as a paired A/B.

On a shared VM throughput moves by ±20 % from one run to the next, so the
ratio of two sweep points is mostly noise: best-of-rounds can flatter either
side. Here the floor and the gateway alternate in short runs (ABBA order, so a
slow drift hits both alike), each pair gives one ratio, and the target is
judged on the median ratio. Each run also reads the server's own CPU time from
/proc: CPU time per request is what a dedicated core would turn into
throughput, and co-tenants move it far less than they move req/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from loadtests.report import fmt
from loadtests.sweep import Target
from loadtests.wrk import WrkResult, run_wrk

__all__ = ["PairedRun", "PairedSummary", "measure_pairs", "pair_table", "process_cpu_s", "summarize_pairs"]


@dataclass(frozen=True)
class PairedRun:
    floor: WrkResult
    gateway: WrkResult
    floor_cpu_us: float | None  # server CPU time per request, when /proc could be read
    gateway_cpu_us: float | None

    @property
    def ratio(self) -> float:
        return self.gateway.rps / self.floor.rps if self.floor.rps > 0 else 0.0


@dataclass(frozen=True)
class PairedSummary:
    pairs: int
    median_ratio: float
    min_ratio: float
    max_ratio: float
    floor_cpu_us: float | None  # medians
    gateway_cpu_us: float | None

    @property
    def cpu_ratio(self) -> float | None:
        """Floor CPU per request over the gateway's: the req/s ratio two dedicated cores would give."""
        if not self.floor_cpu_us or not self.gateway_cpu_us:
            return None
        return self.floor_cpu_us / self.gateway_cpu_us


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of one process (Linux /proc), or None where unreadable."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _run(target: Target, pid: int, concurrency: int, duration_s: float, wrk_cpus: Sequence[int] | None,
         cpu_s: Callable[[int], float | None]) -> tuple[WrkResult, float | None]:
    before = cpu_s(pid)
    res = run_wrk(target.url, target.body, connections=concurrency, duration_s=duration_s, cpus=wrk_cpus,
                  path=target.path, headers=target.headers)
    after = cpu_s(pid)
    if before is None or after is None or res.requests <= 0:
        return res, None
    return res, (after - before) * 1e6 / res.requests


def measure_pairs(
    floor: Target,
    gateway: Target,
    floor_pid: int,
    gateway_pid: int,
    *,
    concurrency: int = 64,
    pairs: int = 10,
    duration_s: float = 3.0,
    wrk_cpus: Sequence[int] | None = None,
    cpu_s: Callable[[int], float | None] = process_cpu_s,
    names: tuple[str, str] = ("floor", "gateway"),
) -> list[PairedRun]:
    """`pairs` back-to-back (floor, gateway) runs; odd pairs run the gateway first (ABBA).

    `cpu_s` reads a server's CPU seconds by pid (one process by default); `names` label the progress lines."""
    out = []
    for i in range(pairs):
        order = [(floor, floor_pid), (gateway, gateway_pid)]
        if i % 2:
            order.reverse()
        got = {t.key: _run(t, pid, concurrency, duration_s, wrk_cpus, cpu_s) for t, pid in order}
        (f, f_cpu), (g, g_cpu) = got[floor.key], got[gateway.key]
        run = PairedRun(f, g, f_cpu, g_cpu)
        out.append(run)
        print(
            f"  pair {i + 1}/{pairs} c={concurrency}: {names[0]} {f.rps:7.0f} req/s, {names[1]} {g.rps:7.0f} req/s, "
            f"ratio {run.ratio:.2f}",
            file=sys.stderr,
            flush=True,
        )
    return out


def summarize_pairs(runs: Sequence[PairedRun]) -> PairedSummary | None:
    if not runs:
        return None
    ratios = [r.ratio for r in runs]
    f_cpu = [r.floor_cpu_us for r in runs if r.floor_cpu_us]
    g_cpu = [r.gateway_cpu_us for r in runs if r.gateway_cpu_us]
    return PairedSummary(
        pairs=len(runs),
        median_ratio=statistics.median(ratios),
        min_ratio=min(ratios),
        max_ratio=max(ratios),
        floor_cpu_us=statistics.median(f_cpu) if f_cpu else None,
        gateway_cpu_us=statistics.median(g_cpu) if g_cpu else None,
    )


def pair_table(runs: Sequence[PairedRun], first: str, second: str, ratio_row: str,
               cpu_note: str, concurrency: int = 64) -> tuple[list[str], float, float | None]:
    """The medians table every paired A/B benchmark prints (`floor` = `first`, `gateway` = `second`),
    with the median req/s ratio and the CPU ratio (first's CPU over second's) for its verdict.

    `runs` must not be empty. CPU medians come from the pairs where both sides could be read."""
    cpus = [(r.floor_cpu_us, r.gateway_cpu_us) for r in runs if r.floor_cpu_us and r.gateway_cpu_us]
    rps = (statistics.median(r.floor.rps for r in runs), statistics.median(r.gateway.rps for r in runs))
    cpu = (statistics.median(c[0] for c in cpus), statistics.median(c[1] for c in cpus)) if cpus else (None, None)
    ratio = statistics.median(r.ratio for r in runs)
    cpu_ratio = cpu[0] / cpu[1] if cpu[0] and cpu[1] else None
    lines = [
        f"{len(runs)} pairs at c={concurrency}, medians (ratio range {fmt(min(r.ratio for r in runs))}"
        f" to {fmt(max(r.ratio for r in runs))})",
        "",
        "| | req/s | CPU µs / request |",
        "|---|---:|---:|",
        f"| {first} | {fmt(rps[0], 0)} | {fmt(cpu[0], 1)} |",
        f"| {second} | {fmt(rps[1], 0)} | {fmt(cpu[1], 1)} |",
        f"| {ratio_row} | {fmt(ratio)} | {fmt(cpu_ratio)} ({cpu_note}) |",
        "",
    ]
    return lines, ratio, cpu_ratio


def paired_parser(prog: str, description: str, *, pairs: int = 10, doc: bool = True) -> argparse.ArgumentParser:
    """The options every paired benchmark takes; add its own, then parse with ``parse_paired``."""
    p = argparse.ArgumentParser(prog=f"python -m {prog}", description=description)
    p.add_argument("--pairs", type=int, default=pairs, help=f"paired runs (default {pairs})")
    p.add_argument("--pair-duration", type=float, default=3.0, help="seconds per run (default 3)")
    p.add_argument("--server-cpu", type=int, default=1, help="core for both servers (default 1)")
    p.add_argument("--load-cpu", type=int, default=0, help="core for wrk and nginx (default 0)")
    if doc:
        p.add_argument("--doc", type=Path, help="write the result into this markdown file (its own section)")
    return p


def parse_paired(p: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    args = p.parse_args(argv)
    if args.pairs < 1:
        p.error("--pairs must be at least 1")
    return args
