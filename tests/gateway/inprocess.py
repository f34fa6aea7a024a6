"""Drive the gateway app in-process: lifespan by hand, requests through httpx's ASGI transport.

With `FunctionUpstream` providers, a test runs without a single socket.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

from gateway.app import create_app
from gateway.config import GatewayCfg, decode_config
from gateway.state import Gateway


@contextlib.asynccontextmanager
async def in_process(
    cfg: GatewayCfg | dict[str, Any], **kwargs: Any
) -> AsyncIterator[tuple[Gateway, httpx.AsyncClient]]:
    if isinstance(cfg, dict):
        cfg = decode_config(cfg)
    app = create_app(cfg, **kwargs)
    to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                   to_app.get, from_app.put))  # type: ignore[arg-type]
    await to_app.put({"type": "lifespan.startup"})
    started = await from_app.get()
    if started["type"] != "lifespan.startup.complete":
        await task
        raise RuntimeError(started.get("message", "startup failed"))
    try:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield app.state.gateway, client
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        await from_app.get()
        await task


def fn_config(*routes: tuple[str, str], **extra: Any) -> dict[str, Any]:
    """Provider `fn` (replace it with a FunctionUpstream) and one route per (name, model)."""
    return {
        "server": {"log_level": "warning"},
        "control": {"enabled": False},
        "providers": [{"name": "fn", "kind": "openai", "base_url": "http://fn.invalid"}],
        "routes": [{"name": n, "targets": [{"provider": "fn", "model": m}], "retry_backoff_s": 0.0}
                   for n, m in routes or [("r", "m0")]],
        **extra,
    }
