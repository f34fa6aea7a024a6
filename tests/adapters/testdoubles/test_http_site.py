"""How every HTTP test double is served (``SiteServer``): a free port, nothing left behind on a taken one, and
``async with`` stops it."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from adapters.testdoubles.http_site import SiteServer


class _Hello(SiteServer):
    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_get("/", self._hello)
        await self._serve(app, port)

    async def _hello(self, request: web.Request) -> web.Response:
        return web.Response(text="hello")


async def test_served_on_a_free_port_and_stopped_by_async_with() -> None:
    async with _Hello() as hello, aiohttp.ClientSession() as http:
        await hello.start()
        assert hello.port > 0
        url = f"http://{hello.host}:{hello.port}/"
        async with http.get(url) as resp:
            assert await resp.text() == "hello"
        taken = _Hello()
        with pytest.raises(OSError):
            await taken.start(hello.port)
        assert (taken.port, taken._runner) == (0, None)  # no runner kept, no port claimed
    assert hello._runner is None
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(url)
    await hello.stop()  # stopping twice is harmless
