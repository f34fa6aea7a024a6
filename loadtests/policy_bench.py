"""Policy off against auth + limits + budgets on the Redis backend, paired at c=64 (issue 10's 0.85x bar).

`python -m loadtests.policy_bench [--pairs 10] [--pair-duration 3] [--server-cpu 1] [--load-cpu 0] [--doc PATH]`

Two single-worker gateways run side by side against the canned nginx upstream, pinned to the same
core, each with its own control plane (SQLite). "off" disables the built-in policy plug-ins.
"on" runs the real `auth` plug-in (`required: always`) and `limits` on a Redis started here
(pinned to the load core, as a Redis of its own would be): through its admin API the bench makes a
team, an `inference` key and a policy with every limit and a budget (high enough never to refuse),
and prices the route, so every request authenticates, reserves its RPM, TPM, concurrency and
worst-case cost in one Redis round trip, and settles them off the request path. wrk sends the same
key to both. The verdict is on the median per-pair req/s ratio (ABBA, loadtests/paired.py), with
each server's CPU time per request from /proc beside it; `--doc` writes the result into its own
section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from loadtests import bench_servers as servers
from loadtests.docsection import write_section
from loadtests.paired import PairedRun, measure_pairs, pair_table, paired_parser, parse_paired
from loadtests.procs import ProcessFailed, cpu_prefix, free_port, stop_process, wait_for_port
from loadtests.report import Check, fmt
from loadtests.sweep import Target
from loadtests.upstream_nginx import run_nginx
from loadtests.wrk import chat_body

__all__ = ["RPS_TARGET", "main", "policy_table"]

RPS_TARGET = 0.85  # req/s with auth + limits + budgets on Redis over policy off, at least
ADMIN_SECRET = "policy-bench-admin"  # LLMOPS_ADMIN_KEY of both gateways (their own throwaway control planes)
POLICY = {  # every limit and a budget, so each request reserves all of them; high enough never to refuse
    "limits": {"requestsPerMinute": 10**9, "tokensPerMinute": 10**12, "tokensPerDay": 10**12,
               "maxConcurrentRequests": 10**6},
    "budget": {"limitUsd": 10**9, "period": "monthly"},
}
_OFF = [{"name": "auth", "enabled": False}, {"name": "guardrails", "enabled": False},
        {"name": "limits", "enabled": False}]


@contextmanager
def run_redis(cpus: Sequence[int]) -> Iterator[str]:
    """A throwaway redis-server (no persistence) pinned to `cpus`; yields its URL."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise ProcessFailed("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="llmops-bench-redis-") as tmp:
        # raised priority on the busy load core: it stands in for a Redis of its own, whose answer is not
        # queued behind wrk and nginx (without it the policy side waits, idle, for Redis's turn on the core)
        nice = ["nice", "-n", "-10"] if os.geteuid() == 0 else []
        argv = [*nice, *cpu_prefix(cpus), exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", tmp]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_for_port(port, proc=proc, timeout_s=10)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            stop_process(proc)


def _admin(base: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(f"{base}/llm-ops/v1{path}", data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json",
                                          "authorization": f"Bearer {ADMIN_SECRET}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        data: dict[str, Any] = json.loads(resp.read())["data"]
        return data


def _provision(base: str) -> str:
    """A team, a key and the policy, through the admin API; the key's secret."""
    team = _admin(base, "/governance/teams", {"name": "bench"})
    key = _admin(base, "/governance/keys", {"name": "bench", "teamId": team["id"], "roles": ["inference"]})
    _admin(base, "/governance/policies", {"name": "bench", "document": POLICY})
    return str(key["key"])


def _wait_enforced(base: str, body: str, key: str, check_headers: bool = True, timeout_s: float = 30.0) -> None:
    """Until the snapshots reached the generation: the key is accepted and the limits answer headers."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        req = urllib.request.Request(base + "/v1/chat/completions", data=body.encode(), method="POST",
                                     headers={"content-type": "application/json", "authorization": f"Bearer {key}"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                if resp.headers.get("x-ratelimit-limit-tokens") or not check_headers:
                    return
                last = "no x-ratelimit headers yet"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise ProcessFailed(f"policy never enforced on {base}: {last}")


def _readiness(base: str) -> dict[str, Any]:
    with urllib.request.urlopen(base + "/readyz", timeout=10) as resp:
        data: dict[str, Any] = json.loads(resp.read())
        return data


def _config(port: int, up: Any, redis_url: str | None, on: str = "both") -> dict[str, Any]:
    """`redis_url` None: policy off. `on`: what the policy side runs (`both` is the benchmark; the others
    split its cost: `auth` alone, `limits` alone on Redis, `limits-memory` on the in-process backend)."""
    cfg = servers.gateway_config(port, up.chat_url, up.stream_url, up.chat_url, up.chat_url)
    cfg["pricing"] = {"use_litellm_map": False, "models": [
        {"provider": "upstream", "model": "canned", "input_per_mtok": "2.5", "output_per_mtok": "10"}]}
    if redis_url is None:
        cfg["plugins"] = _OFF
        return cfg
    auth: dict[str, Any] = {"name": "auth", "settings": {"required": "always"}}
    limits: dict[str, Any] = {"name": "limits", "settings": {"backend": "redis", "redis_url": redis_url}}
    if on == "auth":
        limits = {"name": "limits", "enabled": False}
    elif on.startswith("limits"):
        auth = {"name": "auth", "enabled": False}  # anonymous requests: the policy's empty scope still applies
        if on == "limits-memory":
            limits = {"name": "limits", "settings": {"backend": "memory"}}
    cfg["plugins"] = [auth, {"name": "guardrails", "enabled": False}, limits]
    return cfg


def policy_table(runs: Sequence[PairedRun]) -> str:
    """Markdown: median req/s and CPU µs per request of each side, the ratios, a verdict."""
    if not runs:
        return "(no runs)\n"
    table, ratio, cpu_ratio = pair_table(runs, "policy off", "auth + limits + budgets (Redis)", "on / off",
                                         "off's CPU over on's")
    lines = [
        *table,
        Check(f"policy on req/s ≥ {RPS_TARGET:.2f} x policy off (median paired ratio)", ratio >= RPS_TARGET,
              f"ratio {fmt(ratio)}; CPU ratio {fmt(cpu_ratio)}").line,
    ]
    return "\n".join(lines) + "\n"


def _section(table: str, command: str, errors: str, per_trip: Any) -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return "\n".join([
        "<!-- policy:start (written by loadtests/policy_bench.py --doc) -->",
        "## Inline policy: auth + limits + budgets on Redis vs policy off",
        "",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} cores, load {load}",
        f"- OS: {platform.platform()}; Python {platform.python_version()}",
        "- Both gateways: one worker on the server core, canned nginx upstream, wrk, nginx and Redis on the",
        "  load core (Redis at `nice -10`, standing in for a Redis of its own). \"on\": the real `auth`",
        "  plug-in (`required: always`, a key made through the admin API) and `limits` on Redis with a policy",
        "  setting requestsPerMinute, tokensPerMinute, tokensPerDay, maxConcurrentRequests and a monthly",
        "  budget (priced route): one Redis round trip per request, shared by the requests waiting at that",
        f"  moment ({per_trip} requests per round trip on average), settlements batched off the request path.",
        "- On this shared 2-core machine single pairs move a lot (see the ratio range): the verdict is on the",
        "  median of the pairs; see the instruction counts after this section for the stable figures. Before",
        "  the limit scripts read and wrote each counter once per call (Redis ~160 µs of CPU per request on",
        "  the load core, now ~25 µs), runs moved between 0.68 and 0.83.",
        f"- Non-200 answers during the runs: {errors}",
        "",
        "```",
        command,
        "```",
        "",
        table.rstrip("\n"),
        "<!-- policy:end -->",
    ])


def _write_doc(doc: Path, section: str) -> None:
    write_section(doc, "policy", section)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = paired_parser("loadtests.policy_bench", __doc__.splitlines()[0])
    p.add_argument("--on", choices=["both", "auth", "limits", "limits-memory"], default="both",
                   help="what the policy side runs (default both; the others split the cost)")
    return parse_paired(p, argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    body = chat_body("bench")
    os.environ["LLMOPS_ADMIN_KEY"] = ADMIN_SECRET  # inherited by both gateways
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="llmops-policy-bench-")))
        up = stack.enter_context(run_nginx(cpus=[args.load_cpu]))
        redis_url = stack.enter_context(run_redis([args.load_cpu]))
        targets, pids = [], []
        for name, redis in (("off", None), ("on", redis_url)):
            cfg = _config(free_port(), up, redis, args.on)
            cfg["control"] = {"data_dir": str(tmp / f"control-{name}")}
            gw = servers.start_gateway(cfg, [args.server_cpu], tmp, name=f"gateway-{name}")
            stack.callback(stop_process, gw.proc)
            targets.append((name, gw))
            pids.append(gw.proc.pid)
        key = _provision(targets[1][1].base)
        servers.probe(targets[0][1].base, body)
        try:
            _wait_enforced(targets[1][1].base, body, key, check_headers=args.on != "auth")
        except ProcessFailed as exc:
            log = (tmp / "gateway-on.log").read_text(encoding="utf-8", errors="replace")[-3000:]
            raise ProcessFailed(f"{exc}\n--- gateway-on.log ---\n{log}") from None
        headers = {"authorization": f"Bearer {key}"}
        off, on = (Target(name, gw.label, gw.base, body, headers=headers) for name, gw in targets)
        runs = measure_pairs(off, on, pids[0], pids[1], concurrency=64, pairs=args.pairs,
                             duration_s=args.pair_duration, wrk_cpus=[args.load_cpu], names=("off", "on"))
        limits = _readiness(on.url).get("plugins", {}).get("limits", {})
        print(f"limits backend after the runs: {limits}", file=sys.stderr)
        per_trip = limits.get("requests_per_round_trip", "-")
    errors = ", ".join(f"{side} {sum(getattr(r, side).errors for r in runs)}" for side in ("floor", "gateway"))
    errors = errors.replace("floor", "off").replace("gateway", "on")
    table = policy_table(runs)
    print(table)
    if args.doc:
        command = (f".venv/bin/python -m loadtests.policy_bench --pairs {args.pairs} --pair-duration "
                   f"{args.pair_duration:g}{'' if args.on == 'both' else f' --on {args.on}'} --doc {args.doc}")
        _write_doc(args.doc, _section(table, command, errors, per_trip))
    return 0


if __name__ == "__main__":
    sys.exit(main())
