"""Floor (iii): a raw ASGI callable + aiohttp's client. No framework at all: the lowest ASGI floor.

Serve: `UPSTREAM_URL=http://127.0.0.1:8081/v1 uvicorn loadtests.passthrough.asgi_aiohttp:app`
(or under granian: `granian --interface asgi loadtests.passthrough.asgi_aiohttp:app`).
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp

UPSTREAM = os.environ.get("UPSTREAM_URL", "http://127.0.0.1:8081/v1").rstrip("/") + "/chat/completions"
_HEADERS = {"content-type": "application/json"}
_NOT_FOUND = {"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"0")]}
_session: aiohttp.ClientSession | None = None


async def _lifespan(receive: Any, send: Any) -> None:
    global _session
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            connector = aiohttp.TCPConnector(limit=1000, keepalive_timeout=300)
            _session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30))
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if _session is not None:
                await _session.close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["method"] != "POST" or scope["path"] != "/v1/chat/completions" or _session is None:
        await send(_NOT_FOUND)
        await send({"type": "http.response.body", "body": b""})
        return
    chunks, more = [], True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    async with _session.post(UPSTREAM, data=b"".join(chunks), headers=_HEADERS) as upstream:
        body = await upstream.read()
        ctype = upstream.headers.get("content-type", "application/json").encode()
        status = upstream.status
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
