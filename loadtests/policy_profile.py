"""The policy plug-ins' cost per request, in-process (no sockets but Redis's): instruction counts that this
shared machine's timings cannot give.

    .venv/bin/python -m loadtests.policy_profile --redis-url redis://127.0.0.1:6379/0 [--n 1000] [--only both]
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/tmp/cg.out \\
        .venv/bin/python -m loadtests.policy_profile --redis-url ... --only both --callgrind
    callgrind_annotate /tmp/cg.out | grep 'PROGRAM TOTALS'   # divided by --n: instructions per request

Drives the ASGI app directly (64 in flight) with a FunctionUpstream answering the canned nginx completion
after one pass of the event loop (a request waits for its upstream, as a real one does, so a Redis round
trip is an extra wait, not the only one). Variants: `off` (no policy plug-in), `default` (the built-ins as
enabled by default, nothing in force), `auth` (a key, `required: always`), `limits-memory` and
`limits-redis` (a policy with every limit and a budget; the principal set by a stub), `both` (auth and
limits on Redis: what loadtests.policy_bench measures end to end).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import msgspec

from adapters.adminapi.auth import generate_key
from adapters.gateway_plugins import Principal, RequestContext
from adapters.snapshots import ControlSnapshots, KeySpec, KeysSnapshot, PoliciesSnapshot, PolicySpec, TeamSpec
from adapters.testdoubles import FunctionUpstream
from adapters.upstream import UpstreamCall
from adapters.upstream.openai_compat import parse_completion
from loadtests.upstream_nginx import CANNED_COMPLETION
from policies.documents import PolicyDocument
from tests.gateway.inprocess import fn_config, in_process

__all__ = ["main"]

POLICY = {"limits": {"requestsPerMinute": 10**9, "tokensPerMinute": 10**12, "tokensPerDay": 10**12,
                     "maxConcurrentRequests": 10**6}, "budget": {"limitUsd": 10**9, "period": "monthly"}}
_RAW = json.dumps(CANNED_COMPLETION, separators=(",", ":")).encode()
_NOW = datetime(2026, 1, 1, tzinfo=UTC)
_OFF = {"name": "limits", "enabled": False}


class _Principal:
    """The limits variants without auth: every request acts for one key of team `bench`."""

    name = "principal"

    def on_request(self, ctx: RequestContext) -> None:
        ctx.principal = Principal(key_id="key_bench", team="bench")


async def _answer(call: UpstreamCall) -> Any:
    await asyncio.sleep(0)  # one pass of the loop, as an upstream's answer takes
    return parse_completion(_RAW, "fn")


def _variant(name: str, redis_url: str | None) -> tuple[list[dict[str, Any]], bool, bool]:
    """(plug-in configs, auth with a key, policy in force)."""
    no_auth: dict[str, Any] = {"name": "auth", "enabled": False}
    no_guard: dict[str, Any] = {"name": "guardrails", "enabled": False}
    redis: dict[str, Any] = {"name": "limits",
                             "settings": {"backend": "redis", "redis_url": redis_url, "timeout_s": 10}}
    variants: dict[str, tuple[list[dict[str, Any]], bool, bool]] = {
        "off": ([no_auth, no_guard, _OFF], False, False),
        "default": ([], False, False),
        "auth": ([{"name": "auth", "settings": {"required": "always"}}, no_guard, _OFF], True, False),
        "limits-memory": ([no_auth, no_guard, {"name": "limits"}], False, True),
        "limits-redis": ([no_auth, no_guard, redis], False, True),
        "both": ([{"name": "auth", "settings": {"required": "always"}}, no_guard, redis], True, True),
    }
    return variants[name]


async def _one(app: Any, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
             "query_string": b"", "headers": [(b"content-type", b"application/json"),
                                              (b"content-length", str(len(body)).encode()), *headers],
             "http_version": "1.1", "scheme": "http", "server": ("127.0.0.1", 1), "client": ("127.0.0.1", 2),
             "root_path": "", "asgi": {"version": "3.0"}}
    await app(scope, receive, send)


def _instrument(state: str) -> None:
    """Under callgrind: count only what runs between on and off (blocking on purpose: nothing else runs)."""
    subprocess.run(["callgrind_control", "-i", state, str(os.getpid())], check=True, capture_output=True)


async def _run(name: str, n: int, redis_url: str | None, callgrind: bool) -> float:
    plugins, with_key, policy = _variant(name, redis_url)
    key_id, token, digest = generate_key()
    keys = KeysSnapshot(generation=1, published_at=_NOW, teams=[TeamSpec(id="t1", name="bench")],
                        keys=[KeySpec(id=key_id, team_id="t1", secret_sha256=digest, roles=["inference"])])
    policies = PoliciesSnapshot(generation=1, published_at=_NOW, policies=[
        PolicySpec(id="pol_bench", name="bench", version=1, document=msgspec.convert(POLICY, PolicyDocument))])
    cfg = fn_config(("r", "m0"), plugins=plugins)
    cfg["pricing"] = {"use_litellm_map": False, "models": [
        {"provider": "fn", "model": "m0", "input_per_mtok": "2.5", "output_per_mtok": "10"}]}
    extra = [] if with_key else [_Principal()]
    body = json.dumps({"model": "r", "messages": [{"role": "user", "content": "hello"}]}).encode()
    headers = [(b"authorization", f"Bearer {token}".encode())] if with_key else []
    async with in_process(cfg, upstreams={"fn": FunctionUpstream(_answer, "fn")}, plugins=extra) as (gw, client):
        gw.generation.control = ControlSnapshots(keys=keys if with_key else None, policies=policies if policy else None)
        app = client._transport.app  # type: ignore[attr-defined]
        sem = asyncio.Semaphore(64)

        async def go() -> None:
            async with sem:
                await _one(app, body, headers)

        await asyncio.gather(*(go() for _ in range(300)))  # warm up: caches, plans, the Redis connection
        await gw.usage.drain()
        gc.collect()
        if callgrind:
            _instrument("on")
        started = time.process_time()
        await asyncio.gather(*(go() for _ in range(n)))
        await gw.usage.drain()
        spent = time.process_time() - started
        if callgrind:
            _instrument("off")
    return spent / n * 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.policy_profile", description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--redis-url", help="a Redis for the limits-redis and both variants")
    p.add_argument("--only", choices=["off", "default", "auth", "limits-memory", "limits-redis", "both"])
    p.add_argument("--callgrind", action="store_true", help="under valgrind: count only the measured requests")
    args = p.parse_args(argv)
    logging.disable(logging.WARNING)
    names = [args.only] if args.only else ["off", "default", "auth", "limits-memory", "limits-redis", "both"]
    for name in names:
        if name in ("limits-redis", "both") and not args.redis_url:
            print(f"{name:14s} skipped: --redis-url not given")
            continue
        us = asyncio.run(_run(name, args.n, args.redis_url, args.callgrind))
        print(f"{name:14s} {us:8.1f} µs CPU per request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
