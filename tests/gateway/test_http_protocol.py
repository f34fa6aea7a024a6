"""A client that half-closes its side after a complete request still gets the answer."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import msgspec
import uvicorn

from gateway.app import create_app
from gateway.config import decode_config
from gateway.http_protocol import HalfCloseHttpToolsProtocol
from tests.conftest import simple_config

BODY = msgspec.json.encode({"model": "r", "messages": [{"role": "user", "content": "hi"}]})


@contextlib.asynccontextmanager
async def _serve(app: object, http: object) -> AsyncIterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",  # type: ignore[arg-type]
                                           http=http))  # type: ignore[arg-type]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(30):
            while not server.started:
                await asyncio.sleep(0.01)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
        sock.close()


async def _half_closed_request(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        writer.write_eof()  # shutdown(SHUT_WR): "I have sent everything", not "I am gone"
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()


def _post(body: bytes, *, declared: int | None = None) -> bytes:
    length = len(body) if declared is None else declared
    return (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % length) + body


async def test_half_closed_client_gets_its_answer(mock) -> None:
    app = create_app(decode_config(simple_config(mock.url)))
    async with _serve(app, HalfCloseHttpToolsProtocol) as port:
        answer = await _half_closed_request(port, _post(BODY))
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), answer[:200]
        assert b"connection: close" in head.lower()
        assert msgspec.json.decode(body)["object"] == "chat.completion"
        # An incomplete request followed by EOF is a disconnect, as before: nothing reaches the upstream.
        sent = len(mock.requests)
        assert await _half_closed_request(port, _post(BODY[:10], declared=len(BODY))) == b""
        await asyncio.sleep(0.2)
        assert len(mock.requests) == sent
