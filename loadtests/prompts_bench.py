"""Template rendering plus A/B assignment against neither, p50 latency at c=1, paired (issue 11: <= 0.2 ms added).

`python -m loadtests.prompts_bench [--pairs 10] [--pair-duration 3] [--server-cpu 1] [--load-cpu 0] [--doc PATH]`

Two single-worker gateways run side by side against the canned nginx upstream, pinned to the same core,
each with its own control plane (SQLite). Both have the built-in plug-ins as a default install does
(auth, prompts, guardrails, limits: idle without keys and policies). "prompts" adds, in its YAML
`prompts:` section, a 2-message template with 3 variables on the route and a running experiment of
three variants (each its own template version or sampling parameters), sticky on `user`; every request
names a user (so it is hashed, not drawn at random) and passes one variable through `llmops.variables`,
so each is assigned, rendered and stripped. "plain" has the same route without them. wrk at c=1 loads
them in alternating runs (ABBA, loadtests/paired.py); the verdict is on the median of the per-pair p50
differences, with req/s and each server's CPU time per request beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from loadtests import bench_servers as servers
from loadtests.docsection import write_section
from loadtests.paired import PairedRun, measure_pairs, pair_table, paired_parser, parse_paired
from loadtests.procs import ProcessFailed, free_port, stop_process
from loadtests.report import Check, fmt
from loadtests.sweep import Target
from loadtests.upstream_nginx import run_nginx

__all__ = ["ADDED_P50_MS", "PROMPTS", "main", "prompts_table"]

ADDED_P50_MS = 0.2  # the p50 a request may gain from rendering plus assignment, at most
_SYSTEM = "You are {{ product }}'s support assistant. Answer in {{ language }}, in at most {{ sentences }} sentences."
PROMPTS: dict[str, Any] = {
    "templates": [
        {"name": "support", "variables": [{"name": "product", "default": "Acme"},
                                          {"name": "language"},
                                          {"name": "sentences", "type": "integer", "default": 3}],
         "messages": [{"role": "system", "content": _SYSTEM},
                      {"role": "user", "content": "Customer tier: {{ language | upper }}."}]},
        {"name": "support-terse", "variables": [{"name": "product", "default": "Acme"}, {"name": "language"}],
         "messages": [{"role": "system", "content": "{{ product }} support. Reply in {{ language }}. Be brief."}]},
    ],
    "experiments": [
        {"id": "support-tone", "route": "bench", "unit": "user", "state": "running",
         "variants": [{"name": "control", "template": "support", "weight": 2},
                      {"name": "terse", "template": "support-terse", "weight": 1},
                      {"name": "cool", "template": "support", "params": {"temperature": 0.2}, "weight": 1}]},
    ],
}


def _body() -> str:
    return json.dumps({"model": "bench", "user": "customer-4711", "messages": [{"role": "user", "content": "hello"}],
                       "llmops": {"variables": {"language": "English"}}}, separators=(",", ":"))


def _check_applied(base: str, body: str) -> None:
    """The experiment must be in force (its headers on the answer), or the run would time nothing."""
    req = urllib.request.Request(base + "/v1/chat/completions", data=body.encode(),
                                 headers={"content-type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        experiment, version = resp.headers.get("x-llmops-experiment"), resp.headers.get("x-llmops-template-version")
    if experiment != "support-tone" or not version:
        raise ProcessFailed(f"the experiment is not applied: x-llmops-experiment={experiment!r}, "
                            f"x-llmops-template-version={version!r}")


def prompts_table(runs: Sequence[PairedRun]) -> tuple[str, float]:
    """Markdown: median p50 of each side, the median paired p50 difference, req/s and CPU; and that difference."""
    if not runs:
        return "(no runs)\n", float("nan")
    added = statistics.median(r.gateway.p50_ms - r.floor.p50_ms for r in runs)
    table, _, _ = pair_table(runs, "plain route", "template + experiment", "prompts / plain",
                             "plain's CPU over prompts'", concurrency=1)
    plain, prompts = (statistics.median(r.floor.p50_ms for r in runs),
                      statistics.median(r.gateway.p50_ms for r in runs))
    p50 = [f"| p50 at c=1, median of {len(runs)} runs | plain {fmt(plain, 3)} ms | prompts {fmt(prompts, 3)} ms |",
           f"| p50 added (median of the per-pair differences) | {fmt(added, 3)} ms | |"]
    lines = [*table, "| | | |", "|---|---|---|", *p50, "",
             Check(f"template + experiment add ≤ {ADDED_P50_MS} ms to p50 at c=1", added <= ADDED_P50_MS,
                   f"added {fmt(added, 3)} ms").line]
    return "\n".join(lines) + "\n", added


def _section(table: str, command: str) -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return "\n".join([
        "<!-- prompts:start (written by loadtests/prompts_bench.py --doc) -->",
        "## Prompts: template rendering plus A/B assignment, latency at c=1",
        "",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} cores, load {load}",
        f"- OS: {platform.platform()}; Python {platform.python_version()}",
        "- Both gateways: one worker on the server core, the built-in plug-ins as installed, canned nginx",
        "  upstream and wrk on the load core. \"prompts\": a 2-message template with 3 variables on the route",
        "  and a running 3-variant experiment sticky on `user` (every request named a user and a variable);",
        "  \"plain\": the same route without them.",
        "",
        "```",
        command,
        "```",
        "",
        table.rstrip("\n"),
        "<!-- prompts:end -->",
    ])


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = paired_parser("loadtests.prompts_bench", __doc__.splitlines()[0])
    return parse_paired(p, argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    body = _body()
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="llmops-prompts-bench-")))
        up = stack.enter_context(run_nginx(cpus=[args.load_cpu]))
        targets, pids = [], []
        for name in ("plain", "prompts"):
            cfg = servers.gateway_config(free_port(), up.chat_url, up.stream_url, up.chat_url, up.chat_url)
            cfg["control"] = {"data_dir": str(tmp / f"control-{name}")}
            if name == "prompts":
                cfg["prompts"] = PROMPTS
            gw = servers.start_gateway(cfg, [args.server_cpu], tmp, name=f"gateway-{name}")
            stack.callback(stop_process, gw.proc)
            servers.probe(gw.base, body)
            if name == "prompts":
                _check_applied(gw.base, body)
            targets.append(Target(name, gw.label, gw.base, body))
            pids.append(gw.proc.pid)
        runs = measure_pairs(targets[0], targets[1], pids[0], pids[1], concurrency=1, pairs=args.pairs,
                             duration_s=args.pair_duration, wrk_cpus=[args.load_cpu], names=("plain", "prompts"))
    table, added = prompts_table(runs)
    print(table)
    if args.doc:
        command = (f".venv/bin/python -m loadtests.prompts_bench --pairs {args.pairs} "
                   f"--pair-duration {args.pair_duration:g} --doc {args.doc}")
        write_section(args.doc, "prompts", _section(table, command))
    return 0 if added <= ADDED_P50_MS else 1


if __name__ == "__main__":
    sys.exit(main())
