"""Floor (i): Litestar + httpx, the naive pass-through. No features; measures framework + client cost only.

Serve: `UPSTREAM_URL=http://127.0.0.1:8081/v1 uvicorn loadtests.passthrough.litestar_httpx:app`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from litestar import Litestar, Request, Response, post

UPSTREAM = os.environ.get("UPSTREAM_URL", "http://127.0.0.1:8081/v1").rstrip("/") + "/chat/completions"
_HEADERS = {"content-type": "application/json"}


@asynccontextmanager
async def _client(app: Litestar) -> AsyncIterator[None]:
    # One pooled keep-alive client for the process, sized above the benchmark's concurrency.
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:
        app.state.client = client
        yield


@post("/v1/chat/completions", status_code=200)
async def chat(request: Request) -> Response[bytes]:
    client: httpx.AsyncClient = request.app.state.client
    upstream = await client.post(UPSTREAM, content=await request.body(), headers=_HEADERS)
    return Response(upstream.content, status_code=upstream.status_code, media_type=upstream.headers.get("content-type"))


app = Litestar([chat], lifespan=[_client], openapi_config=None)
