"""A minimal pipelined RESP2 connection: what the rate limiter sends on the request path, and no more.

Why not redis-py's client: its asyncio ``evalsha`` cost ~90 µs of CPU per call on the 2-core
benchmark machine (retry wrapper, connection pool, response callbacks, a pure-Python parser) and
its connection-level send/read ~50 µs, against ~400 µs for a whole gateway request: one call per
request would take a fifth of the gateway's throughput. This one is an ``asyncio.Protocol`` on one
TCP (or TLS) connection: ``call`` writes the command and returns a future, replies are matched to
futures in order (Redis answers a connection's commands in order), so any number of calls are in
flight at once with no lock and no task per call. It speaks only what the limiter needs: commands
of bulk strings, and replies that are simple strings, errors, integers or bulk strings (the scripts
answer one JSON text). It does not import redis-py, whose import alone takes ~0.8 s and loads
OpenTelemetry (the limits plug-in is built in: it must cost nothing where Redis is not configured).

A closed connection fails every waiting call with ``ConnectionError``; the owner opens a new one.
``send`` hands the reply to a callback from inside the protocol (no future, no extra pass of the
event loop: the request path's form); ``call`` wraps it in a future. A caller that stops waiting
(a timeout) leaves its place in the queue: its reply, when it comes, is dropped, so the replies
after it still reach their own callers. ``oldest_s`` lets the owner find a stuck connection.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import msgspec

__all__ = ["RedisAddress", "RespConnection", "RespError", "encode_command", "parse_redis_url"]


class RedisAddress(msgspec.Struct, frozen=True):
    host: str
    port: int = 6379
    username: str | None = None
    password: str | None = None
    db: int = 0
    tls: bool = False


def parse_redis_url(url: str) -> RedisAddress:
    """``redis://[[user]:password@]host[:port][/db]`` or ``rediss://`` (TLS); ``ValueError`` naming what is
    wrong, never echoing the URL (it may hold a password)."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"a Redis URL starts with redis:// or rediss://, not {parts.scheme or 'nothing'}://")
    try:
        port = parts.port or 6379
    except ValueError:
        raise ValueError("the Redis URL's port is not a number") from None
    db_text = parts.path.strip("/") or "0"
    if not db_text.isdigit():
        raise ValueError("the Redis URL's path must be a database number, e.g. /0")
    return RedisAddress(host=parts.hostname or "localhost", port=port,
                        username=unquote(parts.username) if parts.username else None,
                        password=unquote(parts.password) if parts.password else None,
                        db=int(db_text), tls=parts.scheme == "rediss")


class RespError(Exception):
    """An error reply (``-ERR ...``, ``-NOSCRIPT ...``): the server's message, never the command."""

    @property
    def noscript(self) -> bool:
        return str(self).startswith("NOSCRIPT")


def _arg(value: bytes | str | int) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode()


def encode_command(*args: bytes | str | int) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        data = _arg(a)
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


Reply = Callable[[Any, BaseException | None], None]
"""Called with ``(value, None)`` or ``(None, error)`` from inside the protocol: keep it short, never raise."""


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiters: deque[tuple[Reply, float]] = deque()  # (callback, when sent: loop time)
        self.buf = bytearray()
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionError("connection closed")
        error = ConnectionError(f"Redis connection lost ({type(self.lost).__name__})")
        while self.waiters:
            self.waiters.popleft()[0](None, error)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while buf:
            end = buf.find(b"\r\n")
            if end < 0:
                return
            kind = buf[0]
            value: Any
            if kind == 36:  # $: bulk string
                size = int(buf[1:end])
                if size < 0:
                    value, used = None, end + 2
                else:
                    if len(buf) < end + 4 + size:
                        return
                    value, used = bytes(buf[end + 2:end + 2 + size]), end + 4 + size
            elif kind == 43:  # +: simple string
                value, used = bytes(buf[1:end]), end + 2
            elif kind == 45:  # -: error
                value, used = RespError(buf[1:end].decode("utf-8", "replace")), end + 2
            elif kind == 58:  # :: integer
                value, used = int(buf[1:end]), end + 2
            else:  # arrays and the rest: never asked for; the stream can no longer be trusted
                assert self.transport is not None
                self.transport.abort()
                return
            del buf[:used]
            if not self.waiters:  # a reply nobody asked for: out of step, give up the connection
                assert self.transport is not None
                self.transport.abort()
                return
            callback = self.waiters.popleft()[0]
            if isinstance(value, RespError):
                callback(None, value)
            else:
                callback(value, None)


class RespConnection:
    """One connection; ``open`` connects (and authenticates, selects the db) within ``timeout_s``."""

    def __init__(self, protocol: _Protocol) -> None:
        self._p = protocol
        self._loop = asyncio.get_running_loop()

    @classmethod
    async def open(cls, url: str, timeout_s: float) -> RespConnection:
        address = parse_redis_url(url)
        tls = ssl.create_default_context() if address.tls else None
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout_s):
            _, protocol = await loop.create_connection(_Protocol, address.host, address.port, ssl=tls)
            conn = cls(protocol)
            try:
                if address.password:
                    if address.username:
                        await conn.call(b"AUTH", address.username, address.password)
                    else:
                        await conn.call(b"AUTH", address.password)
                if address.db:
                    await conn.call(b"SELECT", address.db)
            except BaseException:
                conn.close()
                raise
        return conn

    @property
    def closed(self) -> bool:
        return self._p.lost is not None

    def oldest_s(self) -> float:
        """How long the oldest call still waiting for its reply has waited (0: none waits)."""
        waiters = self._p.waiters
        return self._loop.time() - waiters[0][1] if waiters else 0.0

    def send(self, callback: Reply, *args: bytes | str | int) -> None:
        """Send one command; ``callback`` gets its reply (an error reply as ``RespError``), from the
        protocol itself: no future, no extra pass of the event loop."""
        self.send_raw(callback, encode_command(*args))

    def send_raw(self, callback: Reply, command: bytes) -> None:
        """``send`` of a command already encoded (the hot path builds most of it once)."""
        p = self._p
        if p.lost is not None or p.transport is None:
            callback(None, ConnectionError("Redis connection closed"))
            return
        p.transport.write(command)
        p.waiters.append((callback, self._loop.time()))

    def call(self, *args: bytes | str | int) -> asyncio.Future[Any]:
        """``send`` as a future (a caller that stops waiting leaves its reply to be dropped)."""
        fut: asyncio.Future[Any] = self._loop.create_future()

        def reply(value: Any, error: BaseException | None) -> None:
            if fut.done():
                return
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(value)

        self.send(reply, *args)
        return fut

    def close(self) -> None:
        if self._p.transport is not None:
            self._p.transport.abort()
