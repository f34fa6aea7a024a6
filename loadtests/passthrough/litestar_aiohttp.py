"""Floor (ii): Litestar + aiohttp's client. The gateway's own stack, minus every feature.

Serve: `UPSTREAM_URL=http://127.0.0.1:8081/v1 uvicorn loadtests.passthrough.litestar_aiohttp:app`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from litestar import Litestar, Request, Response, post

UPSTREAM = os.environ.get("UPSTREAM_URL", "http://127.0.0.1:8081/v1").rstrip("/") + "/chat/completions"
_HEADERS = {"content-type": "application/json"}


@asynccontextmanager
async def _session(app: Litestar) -> AsyncIterator[None]:
    connector = aiohttp.TCPConnector(limit=1000, keepalive_timeout=300)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        app.state.session = session
        yield


@post("/v1/chat/completions", status_code=200)
async def chat(request: Request) -> Response[bytes]:
    session: aiohttp.ClientSession = request.app.state.session
    async with session.post(UPSTREAM, data=await request.body(), headers=_HEADERS) as upstream:
        body = await upstream.read()
        return Response(body, status_code=upstream.status, media_type=upstream.content_type)


app = Litestar([chat], lifespan=[_session], openapi_config=None)
