"""How the gateway is served: uvicorn's options, and its HTTP protocol with read deadlines and a request cap.

Both APIs (chat under `/v1`, admin under `/llm-ops/v1`) share one uvicorn server, so
one protocol guards both against clients that hold a connection without finishing
a request:

* **Head deadline** (`server.header_timeout_s`): the request line and headers must
  be complete within N s of the connection opening (first request) or of their
  first byte (later requests; between requests uvicorn's keep-alive timeout
  applies). Past it, a connection that sent nothing is closed silently; one that
  sent part of a head gets 408 and is closed.
* **Body deadline** (`server.body_timeout_s` + 1 s per `body_min_rate_bytes_s`
  bytes received, as Apache's mod_reqtimeout): a large upload at a decent rate
  is never cut, a trickle is. Past it the request gets 408 (unless its response
  has started) and the connection is closed; the application sees a disconnect.
* **Request cap** (`server.max_concurrent_requests`): beyond it a request is
  answered 503 without reaching the application; `server.max_connections`
  closes new connections beyond that many open ones.

408 and 503 bodies use the schema of the API the path belongs to: the
`{status, message, data}` envelope under `/llm-ops/v1`, OpenAI's error elsewhere.

Cost on the success path: no timer per request. Each connection has one timer,
armed when it opens; when it fires it either acts or re-arms itself for the
nearest deadline, at most `min(header, body timeout)` ahead, so a busy
keep-alive connection re-arms it once per period, whatever its request rate.
Per request the protocol only notes two timestamps and the body size.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import math
from typing import Any, ClassVar

import msgspec
from uvicorn.config import Config
from uvicorn.server import ServerState

from adapters.adminapi import ADMIN_PREFIX
from adapters.errors import error_body
from gateway.config import ServerCfg
from gateway.http_protocol import HalfCloseHttpToolsProtocol

__all__ = ["GatewayHttpProtocol", "protocol_class", "uvicorn_options"]

log = logging.getLogger("llmops.server")

_ADMIN = ADMIN_PREFIX.encode()
_json = msgspec.json.Encoder()


def uvicorn_options(server: ServerCfg) -> dict[str, Any]:
    """Keyword arguments for `uvicorn.run`/`uvicorn.Config` that serve the gateway with `server`'s limits."""
    return {
        "host": server.host, "port": server.port,
        "loop": "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio",
        "http": protocol_class(server),
        "timeout_keep_alive": server.keep_alive_s,
        "access_log": False, "log_level": "warning", "timeout_graceful_shutdown": 30, "lifespan": "on",
        "proxy_headers": False,  # nothing reads the client address; skip the middleware on every request
        "server_header": False,  # do not advertise the server software (and one header less to validate)
    }


def protocol_class(server: ServerCfg) -> type[GatewayHttpProtocol]:
    """The protocol class uvicorn instantiates per connection, bound to these limits."""
    return type("GatewayHttpProtocol", (GatewayHttpProtocol,), {"limits": server})


def _error(status: int, path: bytes, message: str, code: str) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Headers and body of an error in the schema of the path's API; the connection closes after it."""
    if path.startswith(_ADMIN):
        body = _json.encode({"status": "fail" if status < 500 else "error", "message": message, "data": None})
    else:
        body = error_body(message, "invalid_request_error" if status < 500 else "server_error", None, code)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
               (b"connection", b"close")]
    if status == 503:
        headers.append((b"retry-after", b"1"))
    return headers, body


def _raw_408(path: bytes, message: str) -> bytes:
    """408 written straight to the transport: no application is running to send it."""
    headers, body = _error(408, path, message, "request_timeout")
    return b"HTTP/1.1 408 Request Timeout\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in headers) + b"\r\n" + body


class GatewayHttpProtocol(HalfCloseHttpToolsProtocol):
    limits: ClassVar[ServerCfg] = ServerCfg()
    _rejected: ClassVar[int] = 0  # requests turned away by the cap since the last warning
    _rejected_logged_at: ClassVar[float] = -math.inf

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._head_since: float | None = None  # when the pending head became due; None: no head pending
        self._head_bytes = False  # has any byte of the pending head arrived?
        self._body_since = 0.0
        self._body_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        limits = self.limits
        self._period_s = min(limits.header_timeout_s, limits.body_timeout_s)

    # -- connection ---------------------------------------------------------------------------

    # Same signature as uvicorn's own override, which narrows asyncio's BaseTransport to Transport.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            log.warning("connection refused: %d connections open (server.max_connections)", len(self.connections) - 1)
            transport.abort()
            return
        self._head_since = self.loop.time()  # the first head is due header_timeout_s after connecting
        self._timer = self.loop.call_later(self._period_s, self._check_deadlines)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    # -- parser callbacks: note where the request stands (no timers here) ----------------------

    def on_message_begin(self) -> None:
        if self._head_since is None:
            self._head_since = self.loop.time()
        self._head_bytes = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._head_since = None
        self._head_bytes = False
        self._body_since = self.loop.time()
        self._body_bytes = 0
        if len(self.tasks) < self.limits.max_concurrent_requests:
            super().on_headers_complete()
            return
        app, self.app = self.app, _overloaded
        try:
            super().on_headers_complete()
        finally:
            self.app = app
        self._note_rejection()

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    # -- the one timer --------------------------------------------------------------------------

    def _check_deadlines(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        limits = self.limits
        due = math.inf
        if self._head_since is not None:
            due = self._head_since + limits.header_timeout_s
            if now >= due:
                self._expire_head()
                return
        elif self.cycle is not None and self.cycle.more_body:
            due = self._body_since + limits.body_timeout_s + self._body_bytes / limits.body_min_rate_bytes_s
            if now >= due:
                self._expire_body()
                return
        # A phase that starts later has a deadline at least _period_s after its start: never missed.
        self._timer = self.loop.call_at(min(due, now + self._period_s), self._check_deadlines)

    def _expire_head(self) -> None:
        cycle = self.cycle
        if self._head_bytes and (cycle is None or cycle.response_complete):
            message = f"Request timeout: the request head was not received within {self.limits.header_timeout_s:g}s"
            self.transport.write(_raw_408(self.url or b"", message))
        log.info("closing a connection whose request head did not arrive in time (%s bytes of it seen)",
                 "some" if self._head_bytes else "no")
        self.transport.close()

    def _expire_body(self) -> None:
        cycle = self.cycle
        answer = not cycle.response_started
        # The application, possibly waiting in receive(), sees a disconnect; its answer goes nowhere.
        cycle.disconnected = True
        cycle.message_event.set()
        if answer:
            message = (f"Request timeout: the request body was not received in time "
                       f"({self._body_bytes} bytes after {self.loop.time() - self._body_since:.0f}s)")
            self.transport.write(_raw_408(cycle.scope["raw_path"], message))
        log.info("closing a connection whose request body did not arrive in time (%s %s)",
                 cycle.scope["method"], cycle.scope["path"])
        self.transport.close()

    @classmethod
    def _note_rejection(cls) -> None:
        """One warning per 10 s at most: an overload must not also flood the log."""
        cls._rejected += 1
        now = asyncio.get_running_loop().time()
        if now - cls._rejected_logged_at >= 10:
            log.warning("%d request(s) answered 503: server.max_concurrent_requests (%d) reached",
                        cls._rejected, cls.limits.max_concurrent_requests)
            cls._rejected_logged_at, cls._rejected = now, 0


async def _overloaded(scope: Any, receive: Any, send: Any) -> None:
    """What a request beyond the cap gets instead of the application (the body is not read)."""
    headers, body = _error(503, scope.get("raw_path", b""),
                           "The server is at its concurrent request limit; retry later", "overloaded")
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})
