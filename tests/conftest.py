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
