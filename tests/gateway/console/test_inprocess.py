"""The console's in-process ASGI client: streamed answers, streamed request bodies, and a client that leaves early."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from gateway.console.inprocess import InProcess


async def _echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with the request's body in three parts, then records how the exchange ended."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    _echo.seen.append((scope["method"], scope["path"], scope["query_string"], dict(scope["headers"])))  # type: ignore[attr-defined]
    await send({"type": "http.response.start", "status": 201, "headers": [(b"x-got", str(len(body)).encode())]})
    for part in (body[:3], body[3:6], body[6:]):
        await send({"type": "http.response.body", "body": part, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def test_a_buffered_request_with_query_headers_and_body() -> None:
    _echo.seen = []  # type: ignore[attr-defined]
    reply = await InProcess(_echo).request("post", "/x", query={"a": "1", "skip": "", "b": None},
                                           headers={"X-Key": "v"}, body=b"hello world")
    assert (reply.status, reply.body, reply.headers["x-got"]) == (201, b"hello world", "11")
    method, path, query, headers = _echo.seen[0]  # type: ignore[attr-defined]
    assert (method, path, query) == ("POST", "/x", b"a=1")  # empty filters are not sent
    assert headers[b"x-key"] == b"v" and headers[b"content-length"] == b"11"


async def test_a_streamed_request_body_arrives_whole() -> None:
    async def parts() -> AsyncIterator[bytes]:
        for chunk in (b"ab", b"", b"cd", b"ef"):
            yield chunk

    _echo.seen = []  # type: ignore[attr-defined]
    reply = await InProcess(_echo).request("PUT", "/upload", body=parts())
    assert reply.body == b"abcdef"
    assert b"content-length" not in _echo.seen[0][3]  # type: ignore[attr-defined]


async def test_leaving_a_stream_early_tells_the_app_the_client_went_away() -> None:
    told: list[str] = []
    release = asyncio.Event()

    async def endless(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        told.append((await receive())["type"])  # what a server says once the client has gone
        release.set()

    async with InProcess(endless).stream("GET", "/sse") as reply:
        assert reply.status == 200
        assert await anext(reply.chunks) == b"first"
    await asyncio.wait_for(release.wait(), 5)
    assert told == ["http.disconnect"]


async def test_an_app_that_fails_before_answering_raises() -> None:
    async def broken(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise ValueError("boom")

    try:
        await InProcess(broken).request("GET", "/")
    except ValueError as err:
        assert str(err) == "boom"
    else:
        raise AssertionError("the app's error was swallowed")
