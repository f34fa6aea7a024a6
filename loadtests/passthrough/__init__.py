"""Bare pass-through floors: each forwards `POST /v1/chat/completions` to one upstream over a keep-alive pool.

They carry no features, so they measure only what a server + HTTP client pair
costs per request. `VARIANTS` names each and says how to start it; the fastest
one is the benchmark's floor (series b), see `FLOOR` and loadtests/CLIENT_CHOICE.md.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FLOOR", "VARIANTS", "Variant"]

_BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Variant:
    """How to run one pass-through: `argv(port)` starts it; the upstream comes from `UPSTREAM_URL`."""

    key: str
    server: str
    client: str
    argv: Callable[[int], list[str]]

    @property
    def label(self) -> str:
        return f"{self.server} + {self.client}"


def _uvicorn(target: str) -> Callable[[int], list[str]]:
    return lambda port: [
        sys.executable,
        "-m",
        "uvicorn",
        target,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]


def _granian(target: str) -> Callable[[int], list[str]]:
    return lambda port: [
        str(_BIN / "granian"),
        "--interface",
        "asgi",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--runtime-threads",
        "1",
        "--runtime-mode",
        "st",
        "--loop",
        "uvloop",
        "--no-ws",
        "--log-level",
        "warning",
        target,
    ]


_P = "loadtests.passthrough."
VARIANTS: dict[str, Variant] = {
    v.key: v
    for v in (
        Variant("litestar-httpx", "litestar/uvicorn", "httpx", _uvicorn(_P + "litestar_httpx:app")),
        Variant("litestar-aiohttp", "litestar/uvicorn", "aiohttp", _uvicorn(_P + "litestar_aiohttp:app")),
        Variant("asgi-aiohttp", "raw ASGI/uvicorn", "aiohttp", _uvicorn(_P + "asgi_aiohttp:app")),
        Variant(
            "litestar-httpx-aiohttp",
            "litestar/uvicorn",
            "httpx + httpx-aiohttp transport",
            _uvicorn(_P + "litestar_httpx_aiohttp:app"),
        ),
        Variant("granian-asgi-aiohttp", "raw ASGI/granian", "aiohttp", _granian(_P + "asgi_aiohttp:app")),
        Variant("granian-litestar-aiohttp", "litestar/granian", "aiohttp", _granian(_P + "litestar_aiohttp:app")),
        Variant(
            "aiohttp-web",
            "aiohttp.web",
            "aiohttp",
            lambda port: [sys.executable, "-m", _P + "aiohttp_web", "--port", str(port)],
        ),
    )
}

# The fastest variant on the reference machine (see loadtests/CLIENT_CHOICE.md).
FLOOR = "asgi-aiohttp"
