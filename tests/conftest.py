"""Shared fixtures: the mock upstream (test double) and a gateway on a real socket."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from adapters.adminapi.testing import serve_asgi
from adapters.testdoubles.mock_upstream import MockServer, start_mock_upstream
from gateway.app import create_app
from gateway.config import GatewayCfg, decode_config
from gateway.state import Gateway


@dataclass
class RunningGateway:
    url: str
    gateway: Gateway

    @property
    def base_url(self) -> str:
        return self.url + "/v1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def run_gateway(cfg: GatewayCfg | dict[str, Any], **kwargs: Any) -> AsyncIterator[RunningGateway]:
    """Serve the real app with uvicorn on a loopback port inside the test's loop."""
    if isinstance(cfg, dict):
        cfg = decode_config(cfg)
    app = create_app(cfg, **kwargs)
    async with serve_asgi(app, lifespan="on") as url:
        yield RunningGateway(url=url, gateway=app.state.gateway)


def capture_usage(gateway: Gateway) -> list[Any]:
    """Attach a usage consumer that collects every record; returns the live list."""
    seen: list[Any] = []

    class _Capture:
        async def consume(self, records: Any) -> None:
            seen.extend(records)

    gateway.usage.add_consumer(_Capture())
    return seen


def simple_config(*upstream_urls: str, **route: Any) -> dict[str, Any]:
    """One openai-kind provider per URL, route `r` over the first, the rest as fallbacks."""
    providers = [{"name": f"p{i}", "kind": "openai", "base_url": u} for i, u in enumerate(upstream_urls)]
    targets = [{"provider": "p0", "model": "m0"}]
    fallbacks = [{"provider": f"p{i}", "model": f"m{i}"} for i in range(1, len(upstream_urls))]
    return {
        "server": {"log_level": "warning"},
        "control": {"enabled": False},
        "providers": providers,
        "routes": [{"name": "r", "targets": targets, "fallbacks": fallbacks, "retry_backoff_s": 0.0, **route}],
    }


@pytest.fixture
async def mock() -> AsyncIterator[MockServer]:
    server = await start_mock_upstream()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def mock2() -> AsyncIterator[MockServer]:
    server = await start_mock_upstream()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture(autouse=True)
def _asyncio_tasks_dumped_before_a_timeout(request: pytest.FixtureRequest) -> Any:
    """Just before pytest-timeout kills a test, print every pending asyncio task's stack to stderr.

    pytest-timeout shows the threads, which for an async test is only the event loop waiting in ``select``;
    which coroutine was waiting on what is the part that explains a hang (a rare one seen only in CI)."""
    import asyncio
    import sys
    import threading

    marker = request.node.get_closest_marker("timeout")
    limit = float(marker.args[0]) if marker is not None and marker.args else float(request.config.getini("timeout"))
    if limit <= 0:
        yield
        return

    def dump() -> None:
        tasks = [t for t in list(asyncio.tasks._all_tasks) if not t.done()]  # type: ignore[attr-defined]
        print(f"\n+++ {len(tasks)} pending asyncio task(s) of {request.node.nodeid} near its timeout +++",
              file=sys.stderr)
        for task in tasks:
            with contextlib.suppress(Exception):
                task.print_stack(limit=12, file=sys.stderr)

    timer = threading.Timer(max(limit - 3.0, limit * 0.9), dump)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
