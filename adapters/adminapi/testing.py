"""Serve a throwaway admin app for tests: ``async with admin_test_app(cfg, modules=[...]) as t:``.

The app runs *in the test's own event loop* (in-process through httpx's ASGI
transport, or on a real uvicorn loopback socket with ``real_socket=True``), so a
test may also use ``t.plane.store`` (open while the block runs) directly, e.g. to
inspect rows or subscribe to the change feed. (Litestar's ``AsyncTestClient``
would run the app in a second loop on another thread, where the store's pooled
connections cannot be shared with the test.)

``t.client`` is an ``httpx.AsyncClient`` aimed at the app that already sends the
bootstrap admin key (``t.bootstrap_key``); pass ``headers={"authorization": ""}``
to send none. Unexpected server errors come back as 500 envelopes, as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import uvicorn
from litestar import Litestar
from litestar.types import ControllerRouterHandler

from adapters.adminapi.host import ControlPlane, load_control_plane
from adapters.adminapi.plugin import ControlModule
from adapters.adminapi.settings import ControlCfg

__all__ = ["AdminTestApp", "admin_test_app", "serve_asgi"]

BOOTSTRAP_KEY = "test-bootstrap-admin-key"


@dataclass
class AdminTestApp:
    client: httpx.AsyncClient
    plane: ControlPlane
    app: Litestar
    bootstrap_key: str
    url: str


@contextlib.asynccontextmanager
async def admin_test_app(
    cfg: ControlCfg,
    *,
    modules: Sequence[ControlModule] | None = None,
    admin_routes: Sequence[ControllerRouterHandler] = (),
    bootstrap_key: str = BOOTSTRAP_KEY,
    real_socket: bool = False,
) -> AsyncIterator[AdminTestApp]:
    """Start the plane, then serve it in-process (default, fast) or on a uvicorn socket (``real_socket``)."""
    plane = load_control_plane(cfg, modules=modules, admin_routes=admin_routes, environ={},
                               bootstrap_admin_key=bootstrap_key)
    # The plane's lifespan is entered here rather than by the app, so both transports share it.
    app = Litestar(route_handlers=plane.route_handlers, exception_handlers=plane.exception_handlers,
                   openapi_config=plane.openapi_config)
    headers = {"authorization": f"Bearer {bootstrap_key}"}
    async with plane.lifespan(), contextlib.AsyncExitStack() as stack:
        if real_socket:
            url = await stack.enter_async_context(serve_asgi(app))
            transport: httpx.AsyncBaseTransport | None = None
        else:
            url, transport = "http://admin.test", httpx.ASGITransport(app=app, raise_app_exceptions=False)  # type: ignore[arg-type]  # Litestar's ASGI types are narrower TypedDicts
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30, transport=transport) as client:
            yield AdminTestApp(client=client, plane=plane, app=app, bootstrap_key=bootstrap_key, url=url)


@contextlib.asynccontextmanager
async def serve_asgi(app: Any, *, lifespan: Literal["on", "off"] = "off") -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port in the current loop; yields its base URL."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan=lifespan))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(30):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("uvicorn failed to start")
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 15)
        sock.close()
