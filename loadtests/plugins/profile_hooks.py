"""Gateway CPU per request with and without the three no-op plug-ins, in-process (no sockets).

    .venv/bin/python -m loadtests.plugins.profile_hooks [--n 4000] [--stream] [--profile]

Drives the ASGI app directly with a FunctionUpstream that returns the canned nginx
completion (or its 50-chunk SSE stream), 64 requests in flight, and prints µs per request
for `none` and `noop3`: the seam's own cost, without wrk, the kernel or the client.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import os
import pstats
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from adapters.testdoubles import FunctionUpstream
from adapters.upstream import UpstreamCall
from adapters.upstream.openai_compat import parse_completion
from loadtests.upstream_nginx import CANNED_COMPLETION, canned_sse_body
from tests.gateway.inprocess import fn_config, in_process

PLUGINS_DIR = Path(__file__).parent
NOOP3 = [{"name": "noop-a"}, {"name": "noop-b"}, {"name": "noop-c"}]
_RAW = json.dumps(CANNED_COMPLETION, separators=(",", ":")).encode()
_SSE = [line.removeprefix("data: ").encode() for line in canned_sse_body().split("\n\n")
        if line.startswith("data: ") and line != "data: [DONE]"]


_CALLGRIND = False


def _callgrind(state: str) -> None:
    """Under `valgrind --tool=callgrind --instr-atstart=no`: count only the measured requests."""
    subprocess.run(["callgrind_control", "-i", state, str(os.getpid())], check=True, capture_output=True)


def _handler(call: UpstreamCall) -> Any:
    if call.stream:
        return _SSE
    return parse_completion(_RAW, "fn")


async def _one(app: Any, body: bytes) -> None:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(msg: dict[str, Any]) -> None:
        return None

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
             "query_string": b"", "headers": [(b"content-type", b"application/json"),
                                              (b"content-length", str(len(body)).encode())],
             "http_version": "1.1", "scheme": "http", "server": ("127.0.0.1", 1), "client": ("127.0.0.1", 2),
             "root_path": "", "asgi": {"version": "3.0"}}
    await app(scope, receive, send)


async def _run(plugins: list[dict[str, Any]], n: int, stream: bool, prof: cProfile.Profile | None) -> float:
    up = FunctionUpstream(_handler, "fn")
    body = json.dumps({"model": "r", "messages": [{"role": "user", "content": "hello"}],
                       **({"stream": True} if stream else {})}).encode()
    async with in_process(fn_config(("r", "m0"), plugins=plugins), upstreams={"fn": up}) as (gw, client):
        app = client._transport.app  # type: ignore[attr-defined]
        sem = asyncio.Semaphore(64)

        async def go() -> None:
            async with sem:
                await _one(app, body)

        await asyncio.gather(*(go() for _ in range(200)))  # warm up
        await gw.usage.drain()
        up.calls.clear()
        gc.collect()
        if prof:
            prof.enable()
        if _CALLGRIND:
            _callgrind("on")
        t0 = time.process_time()
        await asyncio.gather(*(go() for _ in range(n)))
        await gw.usage.drain()
        dt = time.process_time() - t0
        if _CALLGRIND:
            _callgrind("off")
        if prof:
            prof.disable()
        up.calls.clear()
    return dt / n * 1e6


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=4000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--stream", action="store_true")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--only", choices=["none", "noop3"])
    p.add_argument("--callgrind", action="store_true", help="run under valgrind --tool=callgrind --instr-atstart=no")
    args = p.parse_args()
    global _CALLGRIND
    _CALLGRIND = args.callgrind
    sys.path.insert(0, str(PLUGINS_DIR))
    import logging
    logging.disable(logging.WARNING)
    series = {"none": [], "noop3": NOOP3}
    for name, plugins in series.items():
        if args.only and name != args.only:
            continue
        prof = cProfile.Profile() if args.profile else None
        us = [asyncio.run(_run(plugins, args.n, args.stream, prof)) for _ in range(args.rounds)]
        print(f"{name:6s} {'stream' if args.stream else 'json'}: {min(us):7.1f} µs/request (min of {us})")
        if prof:
            pstats.Stats(prof).sort_stats("tottime").print_stats(int(os.environ.get("TOP", "25")))


if __name__ == "__main__":
    main()
