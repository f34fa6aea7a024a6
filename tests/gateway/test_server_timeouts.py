"""Read deadlines and caps of the served app, with raw sockets on loopback (gateway/server.py).

The app is the real one (chat and admin API) under uvicorn with the options `llmops serve` uses.
Deadlines are short here so that a test waits about a second; the bounds asserted are generous
("within 5 s", not "never"): what matters is that the connection is not held indefinitely.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import uvicorn

from gateway.app import create_app
from gateway.config import ConfigError, decode_config
from gateway.server import GatewayHttpProtocol, uvicorn_options
from tests.conftest import simple_config

KEY = "timeouts-bootstrap-key"
CHAT = b'{"model": "r", "messages": [{"role": "user", "content": "hi"}]}'
BOUND_S = 5.0  # every deadline here is <= 1 s; a connection still open after this is held "forever"


@contextlib.asynccontextmanager
async def served(upstream: str, tmp_path: Path, **server: Any) -> AsyncIterator[int]:
    cfg = simple_config(upstream)
    cfg["server"].update(server)
    cfg["control"] = {"data_dir": str(tmp_path / "data"), "change_feed": "local"}
    gw_cfg = decode_config(cfg)
    app = create_app(gw_cfg)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server_ = uvicorn.Server(uvicorn.Config(app, **uvicorn_options(gw_cfg.server)))
    task = asyncio.create_task(server_.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(30):
            while not server_.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield sock.getsockname()[1]
    finally:
        server_.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 15)
        sock.close()


@pytest.fixture(autouse=True)
def _bootstrap_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMOPS_ADMIN_KEY", KEY)


async def _connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def _until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes; fails if it keeps the connection past BOUND_S."""
    async with asyncio.timeout(BOUND_S):
        return await reader.read()


def _parse(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)


def _head(path: str, length: int, *extra: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "host: t", "content-type: application/json", f"content-length: {length}",
             f"authorization: Bearer {KEY}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_a_connection_that_sends_nothing_is_closed_silently(mock: Any, tmp_path: Path) -> None:
    async with served(mock.url, tmp_path, header_timeout_s=0.5) as port:
        reader, writer = await _connect(port)
        assert await _until_closed(reader) == b""
        writer.close()


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/llm-ops/v1/admin/keys"])
async def test_a_partial_head_gets_408_in_its_api_schema(mock: Any, tmp_path: Path, path: str) -> None:
    async with served(mock.url, tmp_path, header_timeout_s=0.5) as port:
        reader, writer = await _connect(port)
        writer.write(f"POST {path} HTTP/1.1\r\nhost: t\r\ncontent-le".encode())
        status, headers, body = _parse(await _until_closed(reader))
        writer.close()
    assert status == 408 and headers["connection"] == "close"
    if path.startswith("/llm-ops"):
        assert body["status"] == "fail" and "head" in body["message"] and body["data"] is None
    else:
        assert body["error"]["code"] == "request_timeout" and body["error"]["type"] == "invalid_request_error"


async def test_the_head_deadline_also_applies_to_later_requests_on_a_connection(mock: Any, tmp_path: Path) -> None:
    async with served(mock.url, tmp_path, header_timeout_s=0.5) as port:
        reader, writer = await _connect(port)
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
        assert (await reader.readuntil(b'{"status":"ok"}')).startswith(b"HTTP/1.1 200")
        writer.write(b"GET /healthz HTTP/1.1\r\nhost:")  # the second request stalls mid-head
        status, _, body = _parse(await _until_closed(reader))
        writer.close()
    assert status == 408 and body["error"]["code"] == "request_timeout"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/llm-ops/v1/admin/keys"])
async def test_a_partial_body_gets_408_in_its_api_schema(
    mock: Any, tmp_path: Path, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with served(mock.url, tmp_path, body_timeout_s=0.5) as port:
        reader, writer = await _connect(port)
        writer.write(_head(path, 100) + b'{"model": ')
        status, headers, body = _parse(await _until_closed(reader))
        writer.close()
        await asyncio.sleep(0.2)  # let the application notice the disconnect
    assert status == 408 and headers["connection"] == "close"
    if path.startswith("/llm-ops"):
        assert body["status"] == "fail" and "body" in body["message"]
    else:
        assert body["error"]["code"] == "request_timeout"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_a_trickled_body_is_cut_but_a_steady_upload_is_not(mock: Any, tmp_path: Path) -> None:
    async with served(mock.url, tmp_path, body_timeout_s=0.5, body_min_rate_bytes_s=1000) as port:
        # 5 bytes/s, far below the minimum rate: cut shortly after 0.5 s although bytes keep coming.
        reader, writer = await _connect(port)
        writer.write(_head("/v1/chat/completions", 1000))

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                for _ in range(1000):
                    writer.write(b" ")
                    await writer.drain()
                    await asyncio.sleep(0.2)

        dripping = asyncio.create_task(trickle())
        status, _, _ = _parse(await _until_closed(reader))
        dripping.cancel()
        writer.close()
        assert status == 408

        # ~40 KB/s (40x the minimum) for longer than body_timeout_s: the deadline keeps moving out.
        body = CHAT[:-1] + b" " * 80_000 + b"}"
        reader, writer = await _connect(port)
        writer.write(_head("/v1/chat/completions", len(body), "connection: close"))
        for i in range(0, len(body), 2000):
            writer.write(body[i:i + 2000])
            await writer.drain()
            await asyncio.sleep(0.05)
        status, _, answer = _parse(await _until_closed(reader))
        writer.close()
        assert status == 200, answer


async def test_long_answers_and_idle_keep_alive_are_not_deadlines(mock: Any, tmp_path: Path) -> None:
    mock.config = msgspec.structs.replace(mock.config, tokens_per_s=10, completion_tokens=10)  # ~1 s stream
    async with served(mock.url, tmp_path, header_timeout_s=0.3, body_timeout_s=0.3, keep_alive_s=5) as port:
        reader, writer = await _connect(port)
        for _ in range(2):
            body = CHAT[:-1] + b', "stream": true}'
            writer.write(_head("/v1/chat/completions", len(body)) + body)
            async with asyncio.timeout(BOUND_S):
                text = await reader.readuntil(b"data: [DONE]\n\n\r\n0\r\n\r\n")  # the last chunk
            assert text.startswith(b"HTTP/1.1 200") and b'"error"' not in text
            await asyncio.sleep(0.6)  # idle longer than both deadlines, shorter than keep-alive
        writer.close()


async def test_no_timer_per_request_on_a_busy_connection(
    mock: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fired: list[float] = []
    original = GatewayHttpProtocol._check_deadlines

    def counting(self: GatewayHttpProtocol) -> None:
        fired.append(0)
        original(self)

    monkeypatch.setattr(GatewayHttpProtocol, "_check_deadlines", counting)
    async with served(mock.url, tmp_path, header_timeout_s=30, body_timeout_s=30) as port:
        reader, writer = await _connect(port)
        for _ in range(50):
            writer.write(_head("/v1/chat/completions", len(CHAT)) + CHAT)
            async with asyncio.timeout(BOUND_S):
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(v for k, _, v in (line.partition(b": ") for line in head.split(b"\r\n"))
                                  if k.lower() == b"content-length"))
                await reader.readexactly(length)
            assert head.startswith(b"HTTP/1.1 200")
        writer.close()
    assert fired == []  # the one timer armed at connect has not even fired yet


async def test_requests_beyond_the_cap_get_503_in_their_api_schema(mock: Any, tmp_path: Path) -> None:
    mock.config = msgspec.structs.replace(mock.config, tokens_per_s=10, completion_tokens=20)  # ~2 s streams
    async with served(mock.url, tmp_path, max_concurrent_requests=2) as port:
        streams = []
        for _ in range(2):
            reader, writer = await _connect(port)
            body = CHAT[:-1] + b', "stream": true}'
            writer.write(_head("/v1/chat/completions", len(body)) + body)
            await reader.readuntil(b"\r\n\r\n")  # in flight: the stream has started
            streams.append((reader, writer))
        for path in ("/v1/chat/completions", "/llm-ops/v1/admin/keys"):
            reader, writer = await _connect(port)
            writer.write(_head(path, len(CHAT)) + CHAT)
            status, headers, body = _parse(await _until_closed(reader))
            writer.close()
            assert status == 503 and headers["retry-after"] == "1"
            if path.startswith("/llm-ops"):
                assert body["status"] == "error" and "limit" in body["message"]
            else:
                assert body["error"]["code"] == "overloaded" and body["error"]["type"] == "server_error"
        for reader, writer in streams:
            async with asyncio.timeout(BOUND_S * 2):
                await reader.readuntil(b"data: [DONE]\n\n")
            writer.close()
        reader, writer = await _connect(port)  # capacity is back
        writer.write(_head("/v1/chat/completions", len(CHAT), "connection: close") + CHAT)
        status, _, _ = _parse(await _until_closed(reader))
        writer.close()
        assert status == 200


async def test_connections_beyond_the_cap_are_closed(mock: Any, tmp_path: Path) -> None:
    async with served(mock.url, tmp_path, max_connections=2) as port:
        held = [await _connect(port) for _ in range(2)]
        reader, writer = await _connect(port)
        with contextlib.suppress(ConnectionResetError):
            assert await _until_closed(reader) == b""
        writer.close()
        for _, w in held:
            w.close()


def test_server_limits_have_defaults_and_must_be_positive() -> None:
    server = decode_config({}).server
    assert (server.header_timeout_s, server.body_timeout_s, server.body_min_rate_bytes_s, server.keep_alive_s,
            server.max_concurrent_requests, server.max_connections) == (10.0, 30.0, 16384, 5.0, 4096, 10000)
    for field in ("header_timeout_s", "body_timeout_s", "max_concurrent_requests", "max_connections"):
        with pytest.raises(ConfigError, match=f"server.{field}"):
            decode_config({"server": {field: 0}})
