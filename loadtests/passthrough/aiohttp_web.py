"""Floor (vi): aiohttp.web server + aiohttp client, on uvloop. One library end to end, no ASGI layer.

Serve: `UPSTREAM_URL=http://127.0.0.1:8081/v1 python -m loadtests.passthrough.aiohttp_web --port 8090`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

UPSTREAM = os.environ.get("UPSTREAM_URL", "http://127.0.0.1:8081/v1").rstrip("/") + "/chat/completions"
_HEADERS = {"content-type": "application/json"}
_SESSION = web.AppKey("session", aiohttp.ClientSession)


async def _session(app: web.Application) -> AsyncIterator[None]:
    connector = aiohttp.TCPConnector(limit=1000, keepalive_timeout=300)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        app[_SESSION] = session
        yield


async def chat(request: web.Request) -> web.Response:
    async with request.app[_SESSION].post(UPSTREAM, data=await request.read(), headers=_HEADERS) as upstream:
        body = await upstream.read()
        return web.Response(body=body, status=upstream.status, content_type=upstream.content_type)


def make_app() -> web.Application:
    app = web.Application()
    app.cleanup_ctx.append(_session)
    app.router.add_post("/v1/chat/completions", chat)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="aiohttp pass-through floor (load tests only)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    web.run_app(make_app(), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
