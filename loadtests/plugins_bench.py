"""No plug-ins against three no-op plug-ins on every hook, at c=64, paired (issue 8's 0.90x target).

`python -m loadtests.plugins_bench [--pairs 10] [--pair-duration 3] [--server-cpu 1] [--load-cpu 0]`

Two single-worker gateways with the bench's config run side by side against the canned nginx
upstream, pinned to the same core; wrk loads them in alternating runs (ABBA, loadtests/paired.py),
so drift on this shared machine hits both alike. The verdict is on the median per-pair req/s ratio,
with each server's CPU time per request from /proc beside it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from loadtests import bench_servers as servers
from loadtests.paired import PairedRun, measure_pairs, pair_table, paired_parser, parse_paired
from loadtests.procs import free_port, stop_process
from loadtests.report import Check, fmt
from loadtests.sweep import Target
from loadtests.upstream_nginx import run_nginx
from loadtests.wrk import chat_body

__all__ = ["RPS_TARGET", "main", "plugins_table"]

RPS_TARGET = 0.90  # req/s with three no-op plug-ins over none, at least


def plugins_table(runs: Sequence[PairedRun]) -> str:
    """Markdown: median req/s and CPU µs per request of each side, the ratios, a verdict.

    In each run `floor` is the gateway without plug-ins and `gateway` the one with noop3."""
    if not runs:
        return "(no runs)\n"
    table, rps_ratio, cpu_ratio = pair_table(runs, "no plug-ins", "noop3", "noop3 / none", "none's CPU over noop3's")
    lines = [
        *table,
        Check(f"noop3 req/s ≥ {RPS_TARGET:.2f} x no plug-ins (median paired ratio)", rps_ratio >= RPS_TARGET,
              f"ratio {fmt(rps_ratio)}; CPU ratio {fmt(cpu_ratio)}").line,
    ]
    return "\n".join(lines) + "\n"


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = paired_parser("loadtests.plugins_bench", __doc__.splitlines()[0], doc=False)
    return parse_paired(p, argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    body = chat_body("bench")
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="llmops-plugins-bench-")))
        up = stack.enter_context(run_nginx(cpus=[args.load_cpu]))
        targets, pids = [], []
        for plugins in ("none", "noop3"):
            cfg = servers.gateway_config(free_port(), up.chat_url, up.stream_url, up.chat_url, up.chat_url,
                                         plugins=plugins)
            cfg["control"] = {"data_dir": str(tmp / f"control-{plugins}")}
            gw = servers.start_gateway(cfg, [args.server_cpu], tmp, name=f"gateway-{plugins}")
            stack.callback(stop_process, gw.proc)
            servers.probe(gw.base, body)
            targets.append(Target(plugins, gw.label, gw.base, body))
            pids.append(gw.proc.pid)
        runs = measure_pairs(targets[0], targets[1], pids[0], pids[1], concurrency=64, pairs=args.pairs,
                             duration_s=args.pair_duration, wrk_cpus=[args.load_cpu], names=("none", "noop3"))
    print(plugins_table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
