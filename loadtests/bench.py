"""The side-by-side benchmark: upstream direct, bare floor, llmops gateway, LiteLLM proxy, in one run.

`python -m loadtests.bench [--duration 6] [--rounds 3] [--pairs 10] [--quick] [--out docs/benchmarks.md]`

Every server is one worker process pinned to the server core; wrk, nginx, the
mock upstreams and the stream client share the load core, so all series pay
the same costs. Non-streaming load comes from wrk against a canned nginx
upstream; stream timing (TTFT, chunk spacing) from an aiohttp client against
the llmops mock upstream. Every child is stopped on the way out, whatever
happens; every loop is bounded by `--duration`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from loadtests import bench_servers as servers
from loadtests.bench_doc import keep_sections, render
from loadtests.paired import PairedRun, measure_pairs
from loadtests.passthrough import FLOOR
from loadtests.procs import ProcessFailed, free_port, stop_process
from loadtests.streams import StreamResults, measure_spacing, measure_ttft
from loadtests.sweep import Target, sweep
from loadtests.upstream_nginx import run_nginx
from loadtests.wrk import chat_body

__all__ = ["main"]

CONCURRENCIES = (1, 16, 64)
PACED_TOKENS_PER_S = 50.0  # 20 ms between chunks: easy to see if a relay bunches them


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench", description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=6.0, help="seconds per wrk point (default 6)")
    p.add_argument("--quick", action="store_true", help="one round of 3 s points, short stream phases")
    p.add_argument("--rounds", type=int, default=3, help="repeat each sweep, keep each point's best (default 3)")
    p.add_argument("--pairs", type=int, default=10, help="paired floor/gateway runs at c=64 (default 10; 0: skip)")
    p.add_argument("--pair-duration", type=float, default=3.0, help="seconds per paired run (default 3)")
    p.add_argument("--out", default="docs/benchmarks.md", help="markdown report (default docs/benchmarks.md)")
    p.add_argument("--no-litellm", action="store_true", help="skip series (d)")
    p.add_argument("--floor", default=FLOOR, help=f"pass-through variant for series (b) (default {FLOOR})")
    p.add_argument("--gateway-plugins", choices=sorted(servers.PLUGIN_SETS), default="none",
                   help="plug-ins the gateway runs with (noop3: three no-op plug-ins on every hook; default none)")
    p.add_argument("--server-cpu", type=int, default=1, help="core for the servers under test (default 1)")
    p.add_argument("--load-cpu", type=int, default=0, help="core for wrk, upstreams, client (default 0)")
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.rounds, args.pairs = min(args.duration, 3.0), 1, min(args.pairs, 2)
    return args


def _start_optional(stack: ExitStack, notes: list[str], label: str, start: object) -> servers.Running | None:
    """Start a server whose absence only skips its series; the reason goes in the report."""
    try:
        run = start()  # type: ignore[operator]
    except ProcessFailed as exc:
        notes.append(f"{label} skipped: {str(exc).strip()[:600]}")
        _log(f"! {label} skipped: {exc}")
        return None
    stack.callback(stop_process, run.proc)
    return run


def _probe_or_drop(run: servers.Running | None, body: str, notes: list[str]) -> servers.Running | None:
    if run is None:
        return None
    try:
        servers.probe(run.base, body)
    except ProcessFailed as exc:
        notes.append(f"{run.label} skipped: sanity request failed: {exc}")
        _log(f"! {run.label}: sanity request failed: {exc}")
        stop_process(run.proc)
        return None
    return run


def _check_pinning(
    runs: Sequence[servers.Running | None], server_cpus: set[int], load_cpus: set[int], notes: list[str]
) -> None:
    """taskset silently does nothing on a 1-core box; say so instead of printing misleading numbers."""
    for run in runs:
        if run is None:
            continue
        want = load_cpus if run.label.startswith("mock") else server_cpus
        try:
            got = os.sched_getaffinity(run.proc.pid)
        except OSError:
            continue
        if got != want:
            notes.append(f"{run.label} ran on cores {sorted(got)}, not {sorted(want)} as intended")
            _log(f"! {run.label} pinned to {sorted(got)}, wanted {sorted(want)}")


async def _streams(direct_fast: str, direct_paced: str, gateway: str | None, seconds: float) -> StreamResults:
    res = StreamResults(expected_gap_ms=1e3 / PACED_TOKENS_PER_S)
    for c in (1, 16):
        res.ttft[("direct", c)] = await measure_ttft(direct_fast, "canned", concurrency=c, duration_s=seconds)
        if gateway:
            res.ttft[("gateway", c)] = await measure_ttft(gateway, "bench-ttft", concurrency=c, duration_s=seconds)
    res.spacing["direct"] = await measure_spacing(direct_paced, "canned")
    if gateway:
        res.spacing["gateway"] = await measure_spacing(gateway, "bench-paced")
    return res


def run(args: argparse.Namespace, command: str) -> int:
    server_cpus, load_cpus = [args.server_cpu], [args.load_cpu]
    notes: list[str] = []
    body = chat_body("bench")
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="llmops-bench-")))
        _log("starting nginx, mock upstreams, floor, gateway, LiteLLM …")
        up = stack.enter_context(run_nginx(cpus=load_cpus))
        fast = servers.start_mock(0, load_cpus, tmp, "fast")
        stack.callback(stop_process, fast.proc)
        paced = servers.start_mock(PACED_TOKENS_PER_S, load_cpus, tmp, "paced")
        stack.callback(stop_process, paced.proc)
        floor = servers.start_floor(args.floor, up.chat_url, server_cpus, tmp)
        stack.callback(stop_process, floor.proc)
        servers.probe(floor.base, body)
        gw_cfg = servers.gateway_config(free_port(), up.chat_url, up.stream_url, fast.base + "/v1", paced.base + "/v1",
                                        plugins=args.gateway_plugins)
        gateway = _probe_or_drop(
            _start_optional(
                stack, notes, "(c) llmops gateway", lambda: servers.start_gateway(gw_cfg, server_cpus, tmp)
            ),
            body,
            notes,
        )
        litellm = None
        if not args.no_litellm:
            litellm = _probe_or_drop(
                _start_optional(
                    stack,
                    notes,
                    "(d) LiteLLM proxy",
                    lambda: servers.start_litellm(up.chat_url, up.stream_url, server_cpus, tmp),
                ),
                body,
                notes,
            )
        else:
            notes.append("(d) LiteLLM proxy skipped: --no-litellm")

        _check_pinning([floor, fast, paced, gateway, litellm], set(server_cpus), set(load_cpus), notes)
        direct = f"http://127.0.0.1:{up.chat_port}"
        targets = [Target("a", "nginx direct", direct, body), Target("b", floor.label, floor.base, body)]
        if gateway:
            targets.append(Target("c", "llmops gateway", gateway.base, body))
        if litellm:
            targets.append(Target("d", f"LiteLLM proxy {litellm.detail}".strip(), litellm.base, body))
        _log(f"non-streaming sweep: {len(targets)} series x {CONCURRENCIES}, {args.duration:.0f} s per point")
        main_series = sweep(targets, CONCURRENCIES, args.duration, wrk_cpus=load_cpus, rounds=max(1, args.rounds))
        pairs: list[PairedRun] = []
        if gateway and args.pairs > 0:
            _log(f"paired floor/gateway runs at c=64: {args.pairs} pairs x {args.pair_duration:.0f} s")
            pairs = measure_pairs(
                targets[1], targets[2], floor.proc.pid, gateway.proc.pid,
                pairs=args.pairs, duration_s=args.pair_duration, wrk_cpus=load_cpus,
            )

        sse_body = chat_body("bench-sse", stream=True)
        sse_targets = [Target("a", "nginx canned SSE direct", f"http://127.0.0.1:{up.stream_port}", sse_body)]
        if gateway:
            sse_targets.append(Target("c", "llmops gateway", gateway.base, sse_body))
        if litellm:
            sse_targets.append(Target("d", "LiteLLM proxy", litellm.base, sse_body))
        _log("streaming sweep (wrk, canned 50-chunk SSE)")
        sse_series = sweep(
            sse_targets, CONCURRENCIES, max(2.0, args.duration / 2), wrk_cpus=load_cpus, rounds=max(1, args.rounds)
        )

        _log("stream timing (TTFT, chunk spacing)")
        if args.load_cpu in os.sched_getaffinity(0):
            os.sched_setaffinity(0, {args.load_cpu})  # the stream client runs in this process
        stream_res = asyncio.run(
            _streams(
                fast.base + "/v1",
                paced.base + "/v1",
                gateway.base + "/v1" if gateway else None,
                2.0 if args.quick else 5.0,
            )
        )
    text = render(
        command=command,
        series=main_series,
        sse_series=sse_series,
        streams=stream_res,
        pairs=pairs,
        concurrencies=CONCURRENCIES,
        notes=notes
        + [f"{s.label}: {s.note}" for s in main_series if s.note]
        + [f"streaming, {s.label}: {s.note}" for s in sse_series if s.note],
        gateway_config=gw_cfg,
        pinning=f"servers under test on core {args.server_cpu}; wrk, nginx, mock upstreams and the "
        f"stream client on core {args.load_cpu}",
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        text = keep_sections(text, out.read_text(encoding="utf-8"))
    out.write_text(text, encoding="utf-8")
    _log(f"wrote {args.out}")
    print(text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return run(_parse(argv), command=" ".join([".venv/bin/python -m loadtests.bench", *argv]))


if __name__ == "__main__":
    sys.exit(main())
