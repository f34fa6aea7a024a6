"""Prefix-aware routing (issue 16): `balance: prefix_affinity` against random, least_inflight and vllm_queue, on
simulated vLLM replicas with a prefix cache (adapters/testdoubles/vllm_sim.py, a TEST DOUBLE).

`python -m loadtests.routing_bench [--replicas 8] [--duration 20] [--warmup 5] [--rounds 2] [--doc docs/benchmarks.md]`
(workload, simulator and pinning knobs: routing_cfg.py, `--help`).

Per round, per workload (shared contexts, random prompts: routing_workload.py), per mode (order rotated each
round, so no mode always runs first): a fresh simulator process (cold caches) and a fresh `llmops serve` with
one provider over its replicas in that mode (scraping /metrics every 0.5 s) and one route. For the shared
workload each customer's context is first sent once (`prime`), so every mode starts from each context
cached on some replica, as a fleet that served them before would. Then `--users` closed-loop users, each
thinking `--think` s on average between a reply and its next request, stream chats for `--warmup` s and
`--duration` s more; the measured window is the latter (routing_driver.py). Per run: completed requests,
errors, TTFT percentiles, the replicas' prefix-cache hit rate, the spread of requests and of sampled queues
over replicas, and the gateway's CPU per request (routing_stats.py). Medians over rounds, and ratios to
vllm_queue taken per round, go to the table with the issue's targets.

The gateway is pinned to `--gateway-cpu`, the simulator and this process (the users) to `--load-cpu`, so the
gateway's CPU time is its own and the load generator cannot starve it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import aiohttp

from loadtests.bench_servers import start_gateway
from loadtests.docsection import write_section
from loadtests.paired import process_cpu_s
from loadtests.procs import ProcessFailed, free_port, start_process, stop_process
from loadtests.routing_cfg import WORKLOADS, BenchCfg, bench_cfg, parser
from loadtests.routing_driver import drive, prime, sample_loads, sim_stats
from loadtests.routing_stats import MODES, RunResult, results_table, summarize, target_rows
from loadtests.routing_workload import Workload, WorkloadName, prime_bodies

__all__ = ["gateway_config", "main", "rotation", "run_bench", "run_once", "sim_argv", "start_sim"]

MODEL = "sim-model"  # what the simulator serves
ROUTE = "sim"  # what the users ask the gateway for
T = TypeVar("T")


def rotation(items: Sequence[T], rounds: int) -> list[list[T]]:
    """Each round's order: rotated by one more each round, so no item always runs first."""
    return [[*items[r % len(items):], *items[:r % len(items)]] for r in range(rounds)]


def sim_argv(params: dict[str, Any]) -> list[str]:
    flags = [x for k, v in params.items() for x in ("--" + k.replace("_", "-"), str(v))]
    return [sys.executable, "-m", "adapters.testdoubles.vllm_sim", *flags]


def start_sim(params: dict[str, Any], cpus: Sequence[int], log: Path,
              timeout_s: float = 30.0) -> tuple[subprocess.Popen[bytes], list[str]]:
    """The simulator as a child; its replicas' URLs from the JSON line it prints once they all listen."""
    proc = start_process(sim_argv(params), cpus=cpus, log=log)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith("{"):
                    return proc, list(json.loads(line)["urls"])
            if proc.poll() is not None:
                raise ProcessFailed(f"simulator exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
            time.sleep(0.05)
        raise ProcessFailed(f"simulator printed no URLs within {timeout_s:g} s:\n{log.read_text()[-2000:]}")
    except BaseException:
        stop_process(proc)
        raise


def gateway_config(port: int, urls: Sequence[str], mode: str, epsilon: float) -> dict[str, Any]:
    """One provider over the replicas in `mode` and one route; no control plane (nothing but routing costs)."""
    return {
        "server": {"host": "127.0.0.1", "port": port, "log_level": "warning"},
        "control": {"enabled": False},
        "providers": [{"name": "sim", "kind": "openai", "base_urls": list(urls), "balance": mode,
                       "metrics_interval_s": 0.5, "prefix_affinity": {"epsilon": epsilon}}],
        "routes": [{"name": ROUTE, "targets": [{"provider": "sim", "model": MODEL}]}],
    }


def _cpus(core: int | None) -> list[int]:
    return [] if core is None else [core]


@contextlib.contextmanager
def _servers(cfg: BenchCfg, mode: str, tmp: Path) -> Iterator[tuple[str, list[str], int]]:
    """A fresh simulator and gateway: the gateway's chat URL, the replicas' stats URLs, the gateway's pid."""
    sim, urls = start_sim({**cfg.sim, "replicas": cfg.replicas, "model": MODEL}, _cpus(cfg.load_cpu),
                          tmp / f"sim-{mode}.log")
    try:
        gw = start_gateway(gateway_config(free_port(), urls, mode, cfg.epsilon), _cpus(cfg.gateway_cpu), tmp,
                           name=f"gateway-{mode}")
        try:
            yield gw.base + "/v1/chat/completions", [u.removesuffix("/v1") + "/sim/stats" for u in urls], gw.proc.pid
        finally:
            stop_process(gw.proc)
    finally:
        stop_process(sim)


async def _measure(cfg: BenchCfg, workload: Workload, mode: str, round_: int, url: str, stats_urls: list[str],
                   pid: int) -> RunResult:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        if cfg.prime and workload.systems:
            failed = await prime(session, url, prime_bodies(workload, ROUTE), 2 * cfg.replicas, within_s=180)
            if failed:
                print(f"    priming: {failed} requests failed", file=sys.stderr)
        t0 = time.monotonic() + cfg.warmup_s
        t1 = t0 + cfg.duration_s
        users = asyncio.create_task(drive(session, url, workload, cfg.users, ROUTE, stop_at=t1,
                                          think_s=cfg.think_s))
        sampler = asyncio.create_task(sample_loads(session, stats_urls, cfg.sample_interval_s, t0, t1))
        await asyncio.sleep(max(0.0, t0 - time.monotonic()))
        cpu0 = process_cpu_s(pid)
        before = await sim_stats(session, stats_urls)
        await asyncio.sleep(max(0.0, t1 - time.monotonic()))
        cpu1 = process_cpu_s(pid)
        after = await sim_stats(session, stats_urls)
        records, samples = await users, await sampler
    if errors := [r.error for r in records if not r.ok]:
        print(f"    {len(errors)} requests failed, the first: {errors[0]}", file=sys.stderr)
    return summarize(workload.name, mode, round_, records, (t0, t1), before, after, samples, (cpu0, cpu1),
                     epsilon=cfg.epsilon, interval_s=cfg.sample_interval_s)


def run_once(cfg: BenchCfg, workload: Workload, mode: str, round_: int, tmp: Path) -> RunResult:
    with _servers(cfg, mode, tmp) as (url, stats_urls, pid):
        return asyncio.run(_measure(cfg, workload, mode, round_, url, stats_urls, pid))


def _progress(r: RunResult) -> str:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v * 1000:.0f}"

    hit = "-" if r.hit_rate is None else f"{r.hit_rate:.0%}"
    cpu = "-" if r.gateway_cpu_us is None else f"{r.gateway_cpu_us:.0f}"
    share = "-" if r.gateway_cpu_share is None else f"{r.gateway_cpu_share:.0%}"
    return (f"  round {r.round + 1} {r.workload:6} {r.mode:15} {r.requests:5} req ({r.errors} err), "
            f"{r.throughput:5.1f} req/s, TTFT p50 {ms(r.ttft_p50_s)} p90 {ms(r.ttft_p90_s)} ms, hit {hit}, "
            f"longest over {r.longest_over_s:.1f} s, gateway {cpu} µs/req ({share})")


def run_bench(cfg: BenchCfg, rounds: int, modes: Sequence[str], workloads: Sequence[WorkloadName]) -> list[RunResult]:
    built = {name: Workload(name, cfg.workload) for name in workloads}
    results: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="llmops-routing-bench-") as tmp:
        for round_, (order, w_order) in enumerate(zip(rotation(modes, rounds), rotation(workloads, rounds),
                                                      strict=True)):
            for name in w_order:
                for mode in order:
                    results.append(run_once(cfg, built[name], mode, round_, Path(tmp)))
                    print(_progress(results[-1]), file=sys.stderr, flush=True)
    return results


def _section(cfg: BenchCfg, table: str, targets: str, command: str, rounds: int) -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    w = cfg.workload
    sim = ", ".join(f"`{k}` {v:g}" if isinstance(v, float) else f"`{k}` {v}" for k, v in cfg.sim.items())
    pinned = ("not pinned" if cfg.gateway_cpu is None else
              f"the gateway pinned to core {cfg.gateway_cpu}, the simulator and the users to core {cfg.load_cpu}")
    return "\n".join([
        "<!-- routing:start (written by loadtests/routing_bench.py --doc) -->",
        "## Prefix-aware routing (issue 16)",
        "",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} cores, load {load}; {pinned}.",
        f"- OS: {platform.platform()}; Python {platform.python_version()}",
        f"- Simulator (adapters/testdoubles/vllm_sim.py, a test double): {cfg.replicas} replicas, {sim}.",
        f"- Workloads, {cfg.users} closed-loop streaming users each (a user waits an exponential {cfg.think_s:g} s on "
        f"average between a reply and its next request): **shared**: {w.customers} customers, each with "
        f"a {w.context_tokens:,}-token system prompt; conversations of {w.turns[0]}-{w.turns[1]} turns with a random "
        f"customer, each turn sending the history back plus a {w.user_tokens[0]}-{w.user_tokens[1]}-token user "
        f"message{'; every context sent once before the warm-up' if cfg.prime else ''}. **random**: one unique "
        f"{w.random_tokens[0]:,}-{w.random_tokens[1]:,}-token prompt per request, nothing shared.",
        f"- Per round, workload and mode (order rotated per round): a fresh simulator and `llmops serve` (one "
        f"provider over the replicas in that mode, /metrics scraped every 0.5 s, epsilon {cfg.epsilon:g}, no "
        f"control plane); {cfg.warmup_s:g} s of warm-up, then {cfg.duration_s:g} s measured. Medians of "
        f"{rounds} rounds; ratios are taken per round, then their median.",
        "- Columns: TTFT is to the first content chunk, over requests completed in the window; the hit rate is",
        "  the replicas' prefix-cache hits over queries (tokens) in the window; requests max/mean is the busiest",
        "  replica's share of the window's requests over the mean; load max/mean the mean over 0.25 s samples of",
        "  the busiest replica's running + waiting over the mean; longest over bound the longest stretch one",
        "  replica stayed above ceil((1 + epsilon) x mean load); gateway CPU is its process's user + system time",
        "  over the window, per completed request and as a share of one core.",
        "- Other work ran on the machine meanwhile (the load average above).",
        "",
        "```",
        command,
        "```",
        "",
        table,
        "",
        targets,
        "<!-- routing:end -->",
    ])


def _command(argv: Sequence[str]) -> str:
    return " ".join([".venv/bin/python", "-m", "loadtests.routing_bench", *argv])


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    workloads = [w for w in args.workloads.split(",") if w]
    if bad := [m for m in modes if m not in MODES] + [w for w in workloads if w not in WORKLOADS]:
        p.error(f"unknown modes or workloads: {', '.join(bad)}")
    if args.rounds < 1 or args.replicas < 1 or args.users < 1:
        p.error("--rounds, --replicas and --users must be at least 1")
    cfg = bench_cfg(args)
    if cfg.load_cpu is not None and cfg.load_cpu in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {cfg.load_cpu})  # the users share the simulator's core, not the gateway's
    results = run_bench(cfg, args.rounds, modes, cast(list[WorkloadName], workloads))
    table = results_table(results)
    targets, _ = target_rows(results)
    print(table + "\n\n" + targets)
    if args.doc:
        command = _command(sys.argv[1:] if argv is None else argv)
        write_section(args.doc, "routing", _section(cfg, table, targets, command, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
