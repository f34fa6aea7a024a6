"""Call this gateway's own ASGI app in-process: how the console reaches the admin API and the data plane.

The console is a client of the same HTTP contracts as everyone else (and `gateway/` may not import
`control/`), but a loopback socket would cost a connection per call and would not know which worker it
lands on. Calling the ASGI app directly goes through exactly the same routing, guards, envelope and
audit, with the signed-in person's own key in ``Authorization``. Responses stream (the playground's
chat), and request bodies may stream too (uploads pass through without being buffered).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

__all__ = ["InProcess", "Reply", "StreamedReply"]

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
Body = bytes | AsyncIterator[bytes]


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class StreamedReply:
    status: int
    headers: dict[str, str]
    chunks: AsyncIterator[bytes] = field(repr=False)


_END = object()


class InProcess:
    """``request`` buffers the answer; ``stream`` hands it over chunk by chunk as the app sends it."""

    def __init__(self, app: ASGIApp | None = None) -> None:
        self.app = app  # set once the app it belongs to is built

    async def request(self, method: str, path: str, *, query: Mapping[str, Any] | Sequence[tuple[str, Any]] = (),
                      headers: Mapping[str, str] | None = None, body: Body = b"",
                      client: tuple[str, int] | None = None) -> Reply:
        async with self.stream(method, path, query=query, headers=headers, body=body, client=client) as reply:
            parts = [chunk async for chunk in reply.chunks]
        return Reply(reply.status, reply.headers, b"".join(parts))

    @contextlib.asynccontextmanager
    async def stream(self, method: str, path: str, *, query: Mapping[str, Any] | Sequence[tuple[str, Any]] = (),
                     headers: Mapping[str, str] | None = None, body: Body = b"",
                     client: tuple[str, int] | None = None) -> AsyncIterator[StreamedReply]:
        """The app's answer: status and headers at once, the body as it comes. Leaving the block early
        tells the app the client went away (``http.disconnect``), as a real disconnect would."""
        if self.app is None:
            raise RuntimeError("InProcess used before its app was set")
        items = list(query.items()) if isinstance(query, Mapping) else list(query)
        query_string = urlencode([(k, v) for k, v in items if v is not None and v != ""]).encode()
        raw_headers = [(k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in (headers or {}).items()]
        if isinstance(body, bytes):
            raw_headers.append((b"content-length", str(len(body)).encode()))
        scope: dict[str, Any] = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "method": method.upper(), "scheme": "http", "path": path, "raw_path": path.encode(),
            "root_path": "", "query_string": query_string, "headers": raw_headers,
            "client": client or ("127.0.0.1", 0), "server": ("127.0.0.1", 0), "state": {}, "extensions": {},
        }
        out: asyncio.Queue[Any] = asyncio.Queue()
        gone = asyncio.Event()
        body_iter = _chunks(body)
        body_done = False

        async def receive() -> dict[str, Any]:
            nonlocal body_done
            if not body_done and not gone.is_set():
                chunk = await anext(body_iter, None)
                if chunk is not None:
                    return {"type": "http.request", "body": chunk, "more_body": True}
                body_done = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await gone.wait()  # the body is over: what is left to tell is a disconnect
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            await out.put(message)

        async def run() -> None:
            try:
                await self.app(scope, receive, send)  # type: ignore[misc]  # checked above
            finally:
                await out.put(_END)

        task = asyncio.create_task(run())
        try:
            start = await out.get()
            if start is _END:
                task.result()  # the app failed before answering: let its error out
                raise RuntimeError("the app ended without answering")
            status = int(start["status"])
            reply_headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in start.get("headers", [])}

            async def chunks() -> AsyncIterator[bytes]:
                while True:
                    message = await out.get()
                    if message is _END:
                        return
                    if message.get("type") == "http.response.body":
                        data = message.get("body", b"")
                        if data:
                            yield data
                        if not message.get("more_body", False):
                            return

            yield StreamedReply(status, reply_headers, chunks())
        finally:
            gone.set()
            if not task.done():
                try:
                    await asyncio.wait_for(asyncio.shield(task), timeout=5)
                except TimeoutError:
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task


async def _chunks(body: Body) -> AsyncIterator[bytes]:
    if isinstance(body, bytes):
        if body:
            yield body
        return
    async for chunk in body:
        if chunk:
            yield chunk
